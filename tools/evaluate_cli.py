"""Command line of the evaluator: ``python -m tools.evaluate`` (this module holds its parts).

Exit status: 0 scored, 1 the candidate failed, 2 usage error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from tools.evaluate import EvalResult, EvalSettings, Evaluator
from tools.score_cache import ScoreCacheError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.evaluate",
        description="Score one architecture with zero-cost proxies in the sandbox.",
    )
    p.add_argument("--space", required=True, help="search space (nb201, zen_macro, torch-code)")
    p.add_argument("--proxy", required=True, help="proxy name(s), comma-separated")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--arch", help="the architecture string")
    src.add_argument("--arch-file", help="a file holding the architecture (e.g. torch-code source)")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per candidate")
    p.add_argument("--memory-mb", type=int, default=6144)
    p.add_argument("--max-params", type=float, default=None)
    p.add_argument("--max-flops", type=float, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--executor", default="local", choices=("local", "ray"))
    p.add_argument("--cache", default=None, help="SQLite score cache file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _cli_payload(result: EvalResult) -> dict:
    if result.ok:
        return {
            "ok": True,
            "scores": result.scores,
            "params": result.params,
            "flops": result.flops,
            "seconds": round(result.seconds, 4),
            "cached": result.cached,
        }
    return {
        "ok": False,
        "error": asdict(result.error),
        "params": result.params,
        "flops": result.flops,
        "seconds": round(result.seconds, 4),
        "cached": result.cached,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 scored, 1 failed, 2 usage error)."""
    args = _parser().parse_args(argv)
    try:
        if args.arch_file is not None:
            try:
                arch = Path(args.arch_file).read_text()
            except OSError as exc:
                raise ValueError(
                    f"cannot read --arch-file {args.arch_file}: {exc.strerror}"
                ) from None
        else:
            arch = args.arch
        if args.workers < 1 or args.timeout <= 0 or args.batch_size < 1:
            raise ValueError("--workers and --batch-size must be >= 1 and --timeout > 0")
        settings = EvalSettings(
            space=args.space,
            proxies=tuple(p.strip() for p in args.proxy.split(",") if p.strip()),
            dataset=args.dataset,
            seed=args.seed,
            batch_size=args.batch_size,
            resolution=args.resolution,
            device=args.device,
            timeout_s=args.timeout,
            memory_mb=args.memory_mb,
            max_params=args.max_params,
            max_flops=args.max_flops,
        )
        evaluator = Evaluator(
            settings, workers=args.workers, executor=args.executor, cache_path=args.cache
        )
    except (ValueError, RuntimeError, ScoreCacheError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with evaluator:
        result = evaluator.evaluate([arch])[0]
    payload = _cli_payload(result)
    if args.json:
        print(json.dumps(payload))
    elif result.ok:
        scores = "  ".join(f"{k}={v:.6g}" for k, v in result.scores.items())
        flops = "?" if result.flops is None else f"{result.flops:,}"
        print(
            f"ok  {scores}  params={result.params:,}  flops={flops}  "
            f"({result.seconds:.2f} s{', cached' if result.cached else ''})"
        )
    else:
        print(f"failed ({result.error.kind}): {result.error.message}")
    return 0 if result.ok else 1
