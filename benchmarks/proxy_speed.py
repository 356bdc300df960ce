"""Throughput of every zero-cost proxy: architectures scored per second.

Samples N architectures from a search space, builds each once, then times each proxy over all of
them through ``score_network`` (its deep copy and reseeding included, building excluded; the
build rate is printed separately).

    python benchmarks/proxy_speed.py --space nb201 --n 20 --json
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2

import torch  # noqa: E402

from proxy_correlation import parse_proxies  # noqa: E402
from tools.datasets import get_dataset  # noqa: E402
from tools.proxies import Batch, ProxyFailure, resolve_device, score_network  # noqa: E402
from tools.spaces import ArchitectureError, get_space  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="nb201", help="registered search space")
    parser.add_argument("--n", type=int, default=20, help="architectures to score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxies", help="comma-separated proxy names (default: all)")
    parser.add_argument("--dataset", default="cifar10", help="fixes classes and input size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0: torch's default; 1 is fastest on a busy CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    try:
        names = parse_proxies(args.proxies)
        device = resolve_device(args.device)
        dataset = get_dataset(args.dataset)
        space = get_space(args.space)
        if args.n < 1 or args.batch_size < 2:
            raise ValueError("--n must be >= 1 and --batch-size >= 2")
        rng = random.Random(args.seed)
        archs = [space.sample(rng) for _ in range(args.n)]
    except (ValueError, ArchitectureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    tic = time.perf_counter()
    nets = []
    for arch in archs:
        torch.manual_seed(args.seed)
        nets.append(space.build(arch, dataset.num_classes).to(device))
    build_seconds = time.perf_counter() - tic
    batch = Batch.synthetic(
        batch_size=args.batch_size, resolution=dataset.resolution,
        num_classes=dataset.num_classes, seed=args.seed, channels=dataset.channels, device=device,
    )
    report = {
        "space": args.space,
        "n": args.n,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "builds_per_second": args.n / build_seconds,
        "proxies": {},
    }
    for name in names:
        failures = 0
        tic = time.perf_counter()
        for net in nets:
            if isinstance(score_network(net, [name], batch, seed=args.seed)[name], ProxyFailure):
                failures += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - tic
        report["proxies"][name] = {"archs_per_second": args.n / elapsed, "failures": failures}
        print(f"{name}: {args.n / elapsed:.2f} archs/s", file=sys.stderr, flush=True)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.n} {args.space} archs, batch {args.batch_size}, {device}, "
          f"{report['threads']} threads; building: {report['builds_per_second']:.1f} archs/s")
    print(f"{'proxy':<10} {'archs/s':>9} {'s/arch':>8} {'failures':>8}")
    for name, entry in report["proxies"].items():
        rate = entry["archs_per_second"]
        print(f"{name:<10} {rate:>9.2f} {1 / rate:>8.3f} {entry['failures']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
