"""Measure evaluator throughput: distinct NB201 cells through the sandbox pool with 1 and 2 workers.

Usage:
    python benchmarks/eval_throughput.py --n 64 --proxy params
    python benchmarks/eval_throughput.py --n 32 --proxy naswot,synflow

Prints one JSON object: wall seconds with 1 and 2 workers (workers started and warm before the
clock starts), the speedup, and the seconds to answer the same batch again from the cache.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2
from tools.evaluate import EvalSettings, Evaluator  # noqa: E402
from tools.spaces import get_space  # noqa: E402


def distinct_cells(n: int, seed: int) -> list[str]:
    """Return ``n`` NB201 cells with pairwise different canonical forms."""
    space, rng = get_space("nb201"), random.Random(seed)
    cells: dict[str, str] = {}
    while len(cells) < n:
        arch = space.sample(rng)
        cells.setdefault(space.canonical(arch), arch)
    return list(cells.values())


def timed_run(settings: EvalSettings, workers: int, warm: list[str], cells: list[str]) -> dict:
    """Warm ``workers`` up on ``warm`` cells, then time ``cells`` and a cached repeat."""
    with Evaluator(settings, workers=workers) as ev:
        ev.evaluate(warm[:workers])  # starts the zygote and every worker
        start = time.perf_counter()
        results = ev.evaluate(cells)
        first = time.perf_counter() - start
        start = time.perf_counter()
        repeat = ev.evaluate(cells)
        cached = time.perf_counter() - start
    failed = [r.error.kind for r in results if not r.ok]
    assert all(r.cached for r in repeat), "the repeat should be answered from the cache"
    # Worker-side seconds over wall x workers: near 1 means the pool kept every worker busy, so a
    # speedup below the worker count comes from CPU contention, not from the pool.
    busy = sum(r.seconds for r in results) / (first * workers)
    return {"seconds": first, "cached_s": cached, "failed": len(failed), "busy": busy}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the JSON figures."""
    parser = UsageParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="number of distinct cells")
    parser.add_argument("--proxy", default="params", help="proxy name(s), comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1 or args.batch_size < 2:
        parser.error("--n must be at least 1 and --batch-size at least 2")
    cells = distinct_cells(args.n + 2, args.seed)
    warm, cells = cells[:2], cells[2:]
    settings = EvalSettings(
        space="nb201",
        proxies=tuple(args.proxy.split(",")),
        device="cpu",
        batch_size=args.batch_size,
        timeout_s=120,
    )
    one = timed_run(settings, 1, warm, cells)
    two = timed_run(settings, 2, warm, cells)
    print(
        json.dumps(
            {
                "n": args.n,
                "proxies": args.proxy,
                "workers_1_s": round(one["seconds"], 3),
                "workers_2_s": round(two["seconds"], 3),
                "speedup": round(one["seconds"] / two["seconds"], 2),
                "cached_repeat_s": round(two["cached_s"], 4),
                "per_candidate_ms_1_worker": round(1000 * one["seconds"] / args.n, 1),
        "pool_busy_1": round(one["busy"], 2),
        "pool_busy_2": round(two["busy"], 2),
        "load_avg_1min": round(os.getloadavg()[0], 2),
                "failed": one["failed"] + two["failed"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
