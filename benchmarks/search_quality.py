"""Search quality against NB201 ground truth: what each method returns, at the same budget.

Runs each method (``rea``, ``random``, ``rz-nas``) for K seeds with the same proxy and budget
(unique architectures evaluated) through ``graphs.ablate``, then reports, per method, the mean and
standard deviation of the ground-truth accuracy of the architecture each run returns (its best
proxy score), the gap from that mean to the space's optimum (the metric's maximum in the truth
file: 94.37 for CIFAR-10 test), and the fraction of runs whose architecture is in the top 1% of
the space by that metric.

    python benchmarks/search_quality.py --truth ../shared/data/nb201.csv --budget 300 \\
        --seeds 5 --json
    python benchmarks/search_quality.py --truth PATH --budget 100 --seeds 3 \\
        --methods rea,random,rz-nas --designer-model local --output runs/quality

With ``--output`` the cells are kept (and a rerun skips the finished ones, see graphs.ablate);
without it they go to a temporary directory. Progress lines go to stderr.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2
from graphs.ablate import AblationGrid, run_grid  # noqa: E402
from graphs.ablate_report import query_truth, write_results  # noqa: E402
from graphs.runner import UsageError  # noqa: E402

#: A run "hits the top 1%" when its accuracy is at least that of the cell ranked ceil(1% x N).
TOP_FRACTION = 0.01


def top_threshold(values: list[float], fraction: float = TOP_FRACTION) -> float:
    """Return the smallest accuracy inside the top ``fraction`` of ``values`` (ties included)."""
    ranked = sorted(values, reverse=True)
    return ranked[max(1, math.ceil(fraction * len(ranked))) - 1]


def method_stats(accuracies: list[float | None], optimum: float, threshold: float) -> dict:
    """Return mean/std accuracy, gap to the optimum and top-1% rate of one method's runs."""
    found = [a for a in accuracies if a is not None]
    if not found:
        return {"mean_acc": None, "std_acc": None, "gap_to_optimum": None, "top1pct_rate": None,
                "runs": len(accuracies)}
    mean = statistics.fmean(found)
    return {
        "mean_acc": round(mean, 4),
        "std_acc": round(statistics.stdev(found), 4) if len(found) > 1 else 0.0,
        "gap_to_optimum": round(optimum - mean, 4),
        "top1pct_rate": round(sum(a >= threshold for a in found) / len(accuracies), 4),
        "runs": len(accuracies),
        "accuracies": [round(a, 4) for a in found],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures (JSON with --json)."""
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", help="NB201 ground truth (CSV or NASLib JSON); required")
    parser.add_argument("--budget", type=int, default=300, help="unique evaluations per run")
    parser.add_argument("--seeds", type=int, default=5, help="runs per method")
    parser.add_argument("--methods", default="rea,random", help="rea, random, rz-nas")
    parser.add_argument("--proxy", default="synflow", help="ranking proxy")
    parser.add_argument("--metric", default="cifar10_test_acc", help="ground-truth column")
    parser.add_argument("--population", type=int, default=20, help="rz-nas/REA population")
    parser.add_argument("--sample-size", type=int, default=5, help="REA tournament size")
    parser.add_argument("--designer-model", default="local", help="rz-nas model (default local)")
    parser.add_argument("--workers", type=int, default=1, help="evaluation workers per run")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--output", type=Path, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    try:
        from tools.truth import TruthError, load_truth

        if not args.truth:
            raise UsageError("--truth PATH is required (the NB201 table, e.g. nb201.csv)")
        truth = load_truth(args.truth)
        if args.metric not in truth.metrics:
            raise UsageError(f"--metric {args.metric!r} is not in {args.truth}; available: "
                             f"{', '.join(truth.metrics)}")
        values = [v for _, v in truth.items(args.metric)]
        grid = AblationGrid(
            methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
            designer_models=(args.designer_model,), proxies=(args.proxy,), seeds=args.seeds,
            budget=args.budget, population=args.population, sample_size=args.sample_size,
            workers=args.workers, device=args.device, truth=args.truth,
            truth_metric=args.metric,
        )
        with tempfile.TemporaryDirectory(prefix="search-quality-") as tmp:
            output = args.output or Path(tmp)
            results, complete = run_grid(grid, output, log=lambda line: print(line, file=sys.stderr,
                                                                               flush=True))
            if results:
                write_results(output, grid, results, truth)
    except (UsageError, TruthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not complete:
        return 130
    optimum, threshold = max(values), top_threshold(values)
    by_method: dict[str, list[float | None]] = {}
    for cell, summary in results:
        arch = (summary.get("best") or {}).get("arch")
        by_method.setdefault(cell.method, []).append(query_truth(truth, args.metric, arch))
    report = {
        "methods": {m: method_stats(a, optimum, threshold) for m, a in by_method.items()},
        "optimum": round(optimum, 4),
        "top1pct_threshold": round(threshold, 4),
        "metric": args.metric, "proxy": args.proxy, "budget": args.budget, "seeds": args.seeds,
        "wall_seconds": {m: round(sum(s.get("wall_seconds") or 0 for c, s in results
                                      if c.method == m), 1) for m in by_method},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.proxy}, budget {args.budget}, {args.seeds} seeds; {args.metric}: optimum "
          f"{optimum:.2f}, top 1% from {threshold:.2f}")
    print(f"{'method':<8} {'mean':>7} {'std':>6} {'gap':>6} {'top1%':>6}")
    for name, s in report["methods"].items():
        if s["mean_acc"] is None:
            print(f"{name:<8} {'n/a':>7}")
            continue
        print(f"{name:<8} {s['mean_acc']:>7.2f} {s['std_acc']:>6.2f} {s['gap_to_optimum']:>6.2f} "
              f"{s['top1pct_rate']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
