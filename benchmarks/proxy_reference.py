"""Our proxies against NASLib's on the same NB201 cells (NAS-Bench-Suite-Zero sample).

Scores the ~724 cells of NASLib's zero-cost file with every proxy the two implementations share
and prints, per proxy, the Spearman correlation between our scores and NASLib's, and how each
ranks the cells against ground truth (NASLib's validation accuracy, or ``--truth``/``--metric``).
Params are compared in millions (max absolute difference), FLOPs by rank correlation (NASLib
counts every layer with tensorwatch, we count multiply-adds of Conv/Linear).

NASLib scored data-dependent proxies on real CIFAR-10 batches of 32 (the magnitude of its
``nwot`` and ``jacov`` values shows the batch size), we use Gaussian inputs by default, so the
"vs truth" columns measure what synthetic inputs cost on identical cells.

    python benchmarks/proxy_reference.py --reference ../shared/data/naslib_zc_nb201_sample.json \\
        --limit 50
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2

import torch  # noqa: E402
from scipy import stats  # noqa: E402

from proxy_correlation import parse_proxies, rank_correlations, score_cells  # noqa: E402
from tools.datasets import get_dataset  # noqa: E402
from tools.proxies import Batch, ProxyFailure, get_proxy, resolve_device  # noqa: E402
from tools.spaces import get_space  # noqa: E402

#: Our proxy name -> NASLib's, for every proxy both implement.
SHARED = {
    "flops": "flops", "params": "params", "synflow": "synflow", "grasp": "grasp",
    "fisher": "fisher", "grad_norm": "grad_norm", "naswot": "nwot", "jacov": "jacov",
    "snip": "snip",
}
#: NASLib proxies we do not implement.
NOT_SHARED = ("l2_norm", "plain", "epe_nas")


def _finite(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def compare(ours: list[float | ProxyFailure], theirs: list[float | None]) -> dict[str, object]:
    """Spearman between our scores and NASLib's over cells where both are finite."""
    pairs = [(a, b) for a, b in zip(ours, theirs) if _finite(a) and _finite(b)]
    if len(pairs) < 3:
        return {"spearman_vs_naslib": None, "pairs": len(pairs)}
    return {
        "spearman_vs_naslib": float(stats.spearmanr(*zip(*pairs)).statistic),
        "pairs": len(pairs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="NASLib zc_nasbench201.json")
    parser.add_argument("--dataset", default="cifar10", help="dataset key in the reference file")
    parser.add_argument("--truth", help="ground truth for the 'vs truth' columns (default: the "
                        "reference file's own validation accuracy)")
    parser.add_argument("--metric", help="ground-truth column (default: the table's default)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N cells")
    parser.add_argument("--proxies", help=f"comma-separated (default: {','.join(SHARED)})")
    parser.add_argument("--batch-size", type=int, default=32, help="32 matches NASLib's runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0: torch's default; 1 is fastest on a busy CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    try:
        from tools.truth import load_truth

        if args.limit < 0:
            raise ValueError("--limit must be 0 (every cell) or more")
        names = parse_proxies(args.proxies or ",".join(SHARED))
        unknown = [n for n in names if n not in SHARED]
        if unknown:
            raise ValueError(f"NASLib has no counterpart for {', '.join(unknown)}; "
                             f"shared proxies: {', '.join(SHARED)}")
        device = resolve_device(args.device)
        dataset = get_dataset(args.dataset)
        reference = load_truth(args.reference)
        table = load_truth(args.truth) if args.truth else reference
        metric = args.metric or table.default_metric
        theirs_by_cell = reference.reference_scores(args.dataset)
        cells = list(theirs_by_cell)[: args.limit or None]
        truth = [table.query(cell, metric) for cell in cells]
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    batch = Batch.synthetic(
        batch_size=args.batch_size, resolution=dataset.resolution,
        num_classes=dataset.num_classes, seed=args.seed, channels=dataset.channels, device=device,
    )
    print(f"scoring {len(cells)} reference cells with {', '.join(names)} on {device} "
          f"(batch {args.batch_size}, {torch.get_num_threads()} threads)", file=sys.stderr)
    ours, seconds, _build = score_cells(
        get_space("nb201"), cells, names, num_classes=dataset.num_classes, batch=batch,
        seed=args.seed, device=device,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    known = [i for i, t in enumerate(truth) if t is not None]
    report: dict[str, object] = {
        "n": len(cells),
        "dataset": args.dataset,
        "truth_metric": metric,
        "batch_size": args.batch_size,
        "device": str(device),
        "not_shared": list(NOT_SHARED),
        "proxies": {},
    }
    for name in names:
        their_name = SHARED[name]
        theirs = [theirs_by_cell[c].get(their_name) for c in cells]
        entry: dict[str, object] = {"naslib_name": their_name, **compare(ours[name], theirs)}
        higher = get_proxy(name).higher_is_better
        entry["ours_vs_truth"] = rank_correlations(
            [ours[name][i] for i in known], [truth[i] for i in known], higher
        )["spearman"]
        their_pairs = [(theirs[i], truth[i]) for i in known if _finite(theirs[i])]
        entry["naslib_vs_truth"] = (
            float(stats.spearmanr(*zip(*their_pairs)).statistic) if len(their_pairs) > 2 else None
        )
        entry["failures"] = sum(isinstance(v, ProxyFailure) for v in ours[name])
        entry["seconds_per_arch"] = seconds[name]
        report["proxies"][name] = entry
    if "params" in names:
        diffs = [
            abs(a / 1e6 - b) for a, b in zip(ours["params"], (theirs_by_cell[c].get("params")
                                                                for c in cells))
            if _finite(a) and _finite(b)
        ]
        report["params"] = {
            "max_abs_diff_millions": max(diffs) if diffs else None,
            "cells_within_1e-4_millions": sum(d <= 1e-4 for d in diffs),
            "cells_compared": len(diffs),
        }
    if "flops" in names:
        pairs = [(a / 1e6, theirs_by_cell[c].get("flops")) for a, c in zip(ours["flops"], cells)
                 if _finite(a) and _finite(theirs_by_cell[c].get("flops"))]
        report["flops"] = {
            "spearman": report["proxies"]["flops"]["spearman_vs_naslib"],
            "median_ratio_ours_to_naslib": statistics.median(a / b for a, b in pairs if b)
            if pairs else None,
        }

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(cells)} NASLib reference cells ({args.dataset}), our batch {args.batch_size} "
          f"synthetic, {device}; truth: {metric}")
    print(f"{'proxy':<10} {'naslib':<9} {'rho(ours,naslib)':>16} {'ours~truth':>10} "
          f"{'naslib~truth':>12} {'failures':>8} {'s/arch':>7}")

    def fmt(x: object) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    for name, e in report["proxies"].items():
        print(f"{name:<10} {e['naslib_name']:<9} {fmt(e['spearman_vs_naslib']):>16} "
              f"{fmt(e['ours_vs_truth']):>10} {fmt(e['naslib_vs_truth']):>12} "
              f"{e['failures']:>8} {e['seconds_per_arch']:>7.3f}")
    if "params" in report:
        p = report["params"]
        print(f"params: max |ours - NASLib| = {fmt(p['max_abs_diff_millions'])} M; "
              f"{p['cells_within_1e-4_millions']}/{p['cells_compared']} cells within 1e-4 M")
    if "flops" in report:
        f = report["flops"]
        print(f"flops: rank correlation {fmt(f['spearman'])}, median ratio ours/NASLib "
              f"{fmt(f['median_ratio_ours_to_naslib'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
