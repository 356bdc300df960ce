"""Command line of the evaluator: ``python -m tools.evaluate`` (this module holds its parts).

Exit status: 0 scored, 1 the candidate failed, 2 usage error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from tools.evaluate import EvalResult, EvalSettings, Evaluator
from tools.score_cache import ScoreCacheError


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, no usage dump
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m tools.evaluate",
        description="Score one architecture with zero-cost proxies in the sandbox.",
    )
    p.add_argument(
        "--space", required=True, help="search space (nb201, zen-macro, darts, torch-code)"
    )
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


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


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
                arch = Path(args.arch_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(
                    f"cannot read --arch-file {args.arch_file}: {exc.strerror}"
                ) from None
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"--arch-file {args.arch_file} is not UTF-8 text (bad byte at offset "
                    f"{exc.start}); save it as UTF-8"
                ) from None
        else:
            arch = args.arch
        problems = [
            message
            for ok, message in (
                (args.workers >= 1, "--workers must be at least 1"),
                (args.batch_size >= 1, "--batch-size must be at least 1"),
                (_positive(args.timeout), "--timeout must be a positive number of seconds"),
                (args.memory_mb >= 1, "--memory-mb must be at least 1"),
                (args.resolution is None or args.resolution >= 1, "--resolution must be >= 1"),
                (0 <= args.seed < 2**63, "--seed must be between 0 and 2**63 - 1"),
                (args.max_params is None or _positive(args.max_params),
                 "--max-params must be a positive number"),
                (args.max_flops is None or _positive(args.max_flops),
                 "--max-flops must be a positive number"),
            )
            if not ok
        ]
        if problems:
            raise ValueError(problems[0])
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
