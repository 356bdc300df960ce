"""Rank correlation of every zero-cost proxy with NB201 ground truth.

Samples N distinct NB201 cells uniformly, builds each once (CIFAR-10: 10 classes, 32x32 inputs),
scores it with every proxy on one shared batch (data-free by default) and prints, per proxy, the
Spearman and Kendall rank correlations with a ground-truth accuracy column and the time per cell.
Correlations are *oriented*: a proxy registered with ``higher_is_better=False`` (te_nas) is
negated first, so a positive value always means the proxy ranks good cells high. Cells where a
proxy fails (typically dead cells whose output ignores the input) rank last for that proxy.

    python benchmarks/proxy_correlation.py --truth ../shared/data/nb201.csv --sample 50 --seed 0
    python benchmarks/proxy_correlation.py --truth PATH --sample 500 --proxies synflow,params --json
    python benchmarks/proxy_correlation.py --truth PATH --sample 150 --proxies jacov --inputs pink

``--inputs`` asks what data-free scoring costs the data-dependent proxies: ``gaussian`` (the
default, i.i.d. pixels), ``pink`` (Gaussian noise with a 1/f amplitude spectrum, the second-order
statistics of natural images) or an image file, from which random crops are taken (real pixels;
CIFAR itself cannot be downloaded here).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2

import torch  # noqa: E402
from scipy import stats  # noqa: E402

from tools.datasets import get_dataset  # noqa: E402
from tools.proxies import (  # noqa: E402
    Batch,
    ProxyFailure,
    get_proxy,
    proxy_names,
    resolve_device,
    score_network,
)
from tools.spaces import get_space  # noqa: E402


def input_batch(kind: str, *, batch_size: int, dataset, seed: int, device: torch.device) -> Batch:
    """Return the shared scoring batch: Gaussian, 1/f ("pink") noise, or crops of an image file.

    Non-Gaussian inputs are standardised per channel like normalised CIFAR images; labels are
    uniform random in every case.
    """
    batch = Batch.synthetic(batch_size=batch_size, resolution=dataset.resolution,
                            num_classes=dataset.num_classes, seed=seed,
                            channels=dataset.channels, device="cpu")
    if kind == "gaussian":
        return batch.to(device)
    generator = torch.Generator().manual_seed(seed)
    size = dataset.resolution
    if kind == "pink":
        noise = torch.randn(batch_size, dataset.channels, size, size, generator=generator)
        freq = torch.fft.fftfreq(size)
        radius = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2).clamp(min=1.0 / size)
        inputs = torch.fft.ifft2(torch.fft.fft2(noise) / radius).real
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(kind).convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"--inputs: {kind!r} is not gaussian, pink or a readable image "
                             f"file ({exc})") from exc
        import numpy as np

        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
        if image.height < size or image.width < size:
            raise ValueError(f"--inputs: {kind} is smaller than {size}x{size}")
        ys = torch.randint(0, image.height - size + 1, (batch_size,), generator=generator)
        xs = torch.randint(0, image.width - size + 1, (batch_size,), generator=generator)
        inputs = torch.stack([pixels[:, y : y + size, x : x + size] for y, x in zip(ys, xs)])
        inputs = inputs[:, : dataset.channels]
    mean = inputs.mean(dim=(0, 2, 3), keepdim=True)
    std = inputs.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    return Batch(((inputs - mean) / std).to(device), batch.targets.to(device), batch.num_classes)


def sample_cells(space, count: int, seed: int) -> list[str]:
    """Draw ``count`` distinct cells uniformly (without replacement) from ``space``."""
    rng = random.Random(seed)
    cells: dict[str, None] = {}
    for _ in range(count * 100):
        if len(cells) == count:
            break
        cells.setdefault(space.validate(space.sample(rng)), None)
    return list(cells)


def score_cells(
    space,
    cells: list[str],
    names: list[str],
    *,
    num_classes: int,
    batch: Batch,
    seed: int,
    device: torch.device,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, list[float | ProxyFailure]], dict[str, float], float]:
    """Score every cell with every proxy, building each network once.

    Returns the per-proxy score lists (aligned with ``cells``), the mean seconds per cell for
    each proxy (its deep copy included) and the mean seconds to build a cell.
    """
    scores: dict[str, list[float | ProxyFailure]] = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    build_seconds = 0.0
    started = time.perf_counter()
    for index, cell in enumerate(cells):
        tic = time.perf_counter()
        torch.manual_seed(seed)  # the same initial weights for a cell in every run
        net = space.build(cell, num_classes).to(device)
        build_seconds += time.perf_counter() - tic
        for name in names:
            tic = time.perf_counter()
            value = score_network(net, [name], batch, seed=seed)[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - tic
            scores[name].append(value)
        if progress and (index + 1) % max(1, len(cells) // 20) == 0:
            elapsed = time.perf_counter() - started
            progress(f"{index + 1}/{len(cells)} cells, {elapsed:.0f} s")
    count = max(1, len(cells))
    return scores, {k: v / count for k, v in seconds.items()}, build_seconds / count


def rank_correlations(
    values: list[float | ProxyFailure], truth: list[float], higher_is_better: bool = True
) -> dict[str, float | int | None]:
    """Return oriented Spearman/Kendall of proxy scores against ``truth``.

    Cells where the proxy failed (dead cells whose output ignores the input, typically) are ranked
    below every scored cell, as a search that discards failed candidates treats them and as
    NASLib's ``-1e8`` does; ``spearman_scored_only`` leaves them out instead.
    """
    sign = 1.0 if higher_is_better else -1.0
    scored = [sign * v for v in values if isinstance(v, float)]
    failures = len(values) - len(scored)
    if len(scored) < 3:
        return {"spearman": None, "kendall": None, "spearman_scored_only": None,
                "failures": failures}
    floor = min(scored) - 1.0
    xs = [sign * v if isinstance(v, float) else floor for v in values]
    kept = [(x, t) for x, t, v in zip(xs, truth, values) if isinstance(v, float)]
    return {
        "spearman": float(stats.spearmanr(xs, truth).statistic),
        "kendall": float(stats.kendalltau(xs, truth).statistic),
        "spearman_scored_only": float(stats.spearmanr(*zip(*kept)).statistic),
        "failures": failures,
    }


def parse_proxies(text: str | None) -> list[str]:
    """Split ``a,b,c`` into proxy names, checking each (all proxies when ``text`` is empty)."""
    if not text:
        return proxy_names()
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        get_proxy(name)  # raises ValueError naming the choices
    return names


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--truth",
        help="NB201 ground truth: CSV as in shared/data or NASLib JSON (default: $RZNAS_TRUTH)",
    )
    parser.add_argument("--sample", type=int, default=100, help="number of distinct cells")
    parser.add_argument("--seed", type=int, default=0, help="cell sample, weights and batch seed")
    parser.add_argument("--proxies", help="comma-separated proxy names (default: all)")
    parser.add_argument("--metric", default="cifar10_valid_acc", help="ground-truth column")
    parser.add_argument("--dataset", default="cifar10", help="fixes classes and input size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0: torch's default; 1 is fastest on a busy CPU)")
    parser.add_argument("--inputs", default="gaussian",
                        help="scoring inputs: gaussian (default), pink (1/f noise) or an image file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    try:
        from tools.truth import load_truth

        names = parse_proxies(args.proxies)
        device = resolve_device(args.device)
        dataset = get_dataset(args.dataset)
        if args.sample < 3 or args.batch_size < 2:
            raise ValueError("--sample must be >= 3 and --batch-size >= 2")
        table = load_truth(args.truth)
        space = get_space("nb201")
        cells = sample_cells(space, args.sample, args.seed)
        truth = [table.query(cell, args.metric) for cell in cells]
        if any(value is None for value in truth):
            raise ValueError(f"{args.truth}: some sampled cells have no {args.metric!r} value; "
                             "use a table that covers all 15,625 cells (nb201.csv)")
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        batch = input_batch(args.inputs, batch_size=args.batch_size, dataset=dataset,
                            seed=args.seed, device=device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"scoring {len(cells)} cells with {', '.join(names)} on {device} "
        f"(batch {args.batch_size} of {args.inputs} inputs, {torch.get_num_threads()} threads)",
        file=sys.stderr,
    )
    scores, seconds, build = score_cells(
        space, cells, names, num_classes=dataset.num_classes, batch=batch, seed=args.seed,
        device=device, progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    report = {
        "n": len(cells),
        "seed": args.seed,
        "metric": args.metric,
        "batch_size": args.batch_size,
        "inputs": args.inputs,
        "device": str(device),
        "build_seconds_per_arch": build,
        "proxies": {},
    }
    for name in names:
        spec = get_proxy(name)
        entry = rank_correlations(scores[name], truth, spec.higher_is_better)
        entry["seconds_per_arch"] = seconds[name]
        entry["higher_is_better"] = spec.higher_is_better
        report["proxies"][name] = entry

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(cells)} NB201 cells, seed {args.seed}, truth {args.metric}, batch "
          f"{args.batch_size}, {args.inputs} inputs, {device}; oriented correlations (lower-is-better proxies negated)")
    print(f"{'proxy':<10} {'spearman':>9} {'kendall':>8} {'rho_ok':>8} {'s/arch':>8} "
          f"{'failures':>8}")
    for name, entry in report["proxies"].items():
        rho, tau, rho_ok = (
            "n/a" if entry[k] is None else f"{entry[k]:.3f}"
            for k in ("spearman", "kendall", "spearman_scored_only")
        )
        print(f"{name:<10} {rho:>9} {tau:>8} {rho_ok:>8} {entry['seconds_per_arch']:>8.3f} "
              f"{entry['failures']:>8}")
    print("rho_ok: Spearman over the cells the proxy scored (failures left out)")
    print(f"building a cell: {build:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
