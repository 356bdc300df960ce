"""Zero-cost proxies, search spaces, the sandboxed evaluator and ground truth."""
