"""Sanity check of the DARTS space: the published genotypes against random cells, per proxy.

No ground truth exists for DARTS here, so this prints what can be checked: the parameter count of
DARTS-V2 at the evaluation size (C=36, 20 cells; DARTS reports 3.3M) and, at the search size
(C=16, 8 cells), the proxy scores of DARTS-V1/V2 and where they rank among N random genotypes
(sampled as DARTS's random search does). Scores come from ``score_network``, as in the search.

    python benchmarks/darts_reference.py --n 20 --proxies params,synflow,naswot --json
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

from benchmarks.proxy_correlation import parse_proxies  # noqa: E402
from tools.proxies import Batch, ProxyFailure, get_proxy, resolve_device, score_network  # noqa: E402
from tools.spaces import get_space  # noqa: E402
from tools.spaces.darts import DARTS_V1, DARTS_V2  # noqa: E402


def count_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="random genotypes to rank against")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxies", default="params,flops,synflow,naswot,snip,grad_norm,zico",
                        help="comma-separated proxy names")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        names = parse_proxies(args.proxies)
        device = resolve_device(args.device)
        if args.n < 1 or args.batch_size < 2:
            raise ValueError("--n must be >= 1 and --batch-size >= 2")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    full = get_space("darts", channels=36, layers=20)
    published_params = {name: count_params(full.build(arch, 10))
                        for name, arch in (("DARTS-V1", DARTS_V1), ("DARTS-V2", DARTS_V2))}
    space, rng = get_space("darts"), random.Random(args.seed)
    archs = {"DARTS-V1": DARTS_V1, "DARTS-V2": DARTS_V2}
    archs.update((f"random-{k}", space.sample(rng)) for k in range(args.n))
    batch = Batch.synthetic(batch_size=args.batch_size, resolution=32, num_classes=10,
                            seed=args.seed, channels=3, device=device)
    scores: dict[str, dict[str, float | None]] = {label: {} for label in archs}
    tic = time.perf_counter()
    for label, arch in archs.items():
        torch.manual_seed(args.seed)
        net = space.build(arch, 10).to(device)
        for name, value in score_network(net, names, batch, seed=args.seed).items():
            scores[label][name] = None if isinstance(value, ProxyFailure) else value
    seconds = time.perf_counter() - tic

    ranks: dict[str, dict[str, str]] = {}
    for name in names:
        sign = 1 if get_proxy(name).higher_is_better else -1
        randoms = [s[name] for label, s in scores.items() if label.startswith("random")]
        randoms = [v for v in randoms if v is not None]
        for label in ("DARTS-V1", "DARTS-V2"):
            mine = scores[label][name]
            beaten = sum(1 for v in randoms if mine is not None and sign * mine > sign * v)
            ranks.setdefault(label, {})[name] = f"{beaten}/{len(randoms)}"
    report = {"published_params_c36_l20": published_params, "n_random": args.n,
              "batch_size": args.batch_size, "device": str(device), "seconds": round(seconds, 1),
              "scores": {k: scores[k] for k in ("DARTS-V1", "DARTS-V2")},
              "random_median": {name: _median([s[name] for label, s in scores.items()
                                               if label.startswith("random")]) for name in names},
              "beats_random": ranks}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("DARTS at C=36, 20 cells: " + ", ".join(f"{k} {v / 1e6:.3f}M params"
                                                   for k, v in published_params.items()))
    print(f"search size C=16, 8 cells; {args.n} random genotypes; batch {args.batch_size}; "
          f"{device}; {seconds:.0f} s")
    print(f"{'proxy':<10} {'DARTS-V1':>12} {'DARTS-V2':>12} {'random median':>14}  "
          f"{'V1 beats':>9} {'V2 beats':>9}")
    for name in names:
        v1, v2 = scores["DARTS-V1"][name], scores["DARTS-V2"][name]
        print(f"{name:<10} {_fmt(v1):>12} {_fmt(v2):>12} {_fmt(report['random_median'][name]):>14}  "
              f"{ranks['DARTS-V1'][name]:>9} {ranks['DARTS-V2'][name]:>9}")
    return 0


def _median(values: list[float | None]) -> float | None:
    kept = sorted(v for v in values if v is not None)
    return kept[len(kept) // 2] if kept else None


def _fmt(value: float | None) -> str:
    return "failed" if value is None else f"{value:.4g}"


if __name__ == "__main__":
    raise SystemExit(main())
