"""Results of an ablation grid: ``results.csv``, ``results.md`` and ``best_vs_evaluations.png``.

Everything is read back from the cells' run directories (``summary.json``, ``events.jsonl``), so
RZ-NAS and baseline runs are measured the same way. Ground truth, when given, is looked up here
for the architecture each run returns, whatever the run itself was told.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from graphs.events import read_events
from tools.files import write_atomic

COLUMNS = ("cell", "configuration", "method", "prompts", "switches", "designer_model", "proxy",
           "seed", "best_arch", "best_score", "ground_truth", "evaluations", "iterations",
           "invalid_proposals", "fallbacks", "cache_hits", "tokens", "cost_usd", "wall_seconds",
           "stop_reason", "run_dir")


def query_truth(truth, metric: str, arch: str | None) -> float | None:
    """Return ``metric`` of ``arch`` from a GroundTruth, or None when it has no answer."""
    if truth is None or not arch:
        return None
    try:
        return truth.query(arch, metric)
    except ValueError:  # not an NB201 cell (ArchitectureError) or no such metric (TruthError)
        return None


def result_row(cell, summary: dict, run_dir: Path, truth=None, metric: str = "") -> dict:
    """Return the results.csv row of one finished cell."""
    best = summary.get("best") or {}
    truth_value = query_truth(truth, metric, best.get("arch"))
    return {
        "cell": cell.name, "configuration": cell.configuration, "method": cell.method,
        "prompts": cell.prompts or "", "switches": cell.switches or "",
        "designer_model": (summary.get("models") or {}).get("designer") or "",
        "proxy": cell.proxy, "seed": cell.seed, "best_arch": best.get("arch"),
        "best_score": best.get("score"), "ground_truth": truth_value,
        **{k: summary.get(k) for k in ("evaluations", "iterations", "invalid_proposals",
                                       "fallbacks", "cache_hits", "tokens", "cost_usd",
                                       "wall_seconds", "stop_reason")},
        "run_dir": str(run_dir),
    }


def best_so_far(events: Iterable[dict], higher_is_better: bool,
                value: Callable[[str, float], float | None]) -> list[float | None]:
    """Return, after each unique evaluation, ``value(arch, score)`` of the proxy-best arch so far.

    Isomorphic repeats and cache replays count once (as ``summary["evaluations"]`` does); failed
    candidates count as evaluations but never become the best.
    """
    seen: set[str] = set()
    best: tuple[str, float] | None = None
    curve: list[float | None] = []
    for e in events:
        if e.get("event") != "evaluation":
            continue
        key = e.get("canonical") or e.get("arch")
        if key in seen:
            continue
        seen.add(key)
        score = e.get("score")
        usable = e.get("ok") and isinstance(score, (int, float)) and math.isfinite(score)
        if usable and (best is None or (score > best[1] if higher_is_better else score < best[1])):
            best = (e["arch"], float(score))
        curve.append(None if best is None else value(*best))
    return curve


def mean_curve(curves: list[list[float | None]]) -> list[float | None]:
    """Average curves point by point; a shorter curve holds its last value."""
    length = max((len(c) for c in curves), default=0)
    out: list[float | None] = []
    for i in range(length):
        points = [c[min(i, len(c) - 1)] for c in curves if c]
        points = [p for p in points if p is not None]
        out.append(statistics.fmean(points) if points else None)
    return out


def _mean_std(values: list[Any]) -> tuple[float, float] | None:
    xs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not xs:
        return None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _pm(values: list[Any], digits: int = 2, prefix: str = "") -> str:
    stats = _mean_std(values)
    if stats is None:
        return "n/a"
    return f"{prefix}{stats[0]:,.{digits}f} ± {prefix}{stats[1]:,.{digits}f}"


def aggregate(rows: list[dict]) -> dict[str, list[dict]]:
    """Group result rows by configuration, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["configuration"], []).append(row)
    return groups


def render_results(rows: list[dict], grid, truth) -> str:
    """Return results.md: one line per configuration, mean ± std over its seeds."""
    from tools.proxies import get_proxy

    metric = grid.metric
    groups = aggregate(rows)
    out = ["# Ablation results", "",
           (f"{len(rows)} runs in {len(groups)} configurations on {grid.space} / {grid.dataset}; "
            f"budget {grid.budget} unique evaluations per run, population {grid.population}, "
            f"seeds {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}."), ""]
    if truth is not None:
        optimum = max((v for _, v in truth.items(metric)), default=math.nan)
        out += [(f"Ground truth: `{metric}` of the architecture each run returns (its best proxy "
                 f"score), from `{grid.truth}`; the space's optimum is {optimum:.2f}."), ""]
    column = metric if truth is not None else "ground truth"
    out += [(f"| configuration | runs | best proxy score | {column} | evaluations "
             "| invalid proposals | tokens | cost | wall time (s) |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, group in groups.items():
        spec = get_proxy(group[0]["proxy"])
        scores = [r["best_score"] for r in group]
        if spec.log_scale:  # synflow and the like span many decades: average their log10
            score = "log10 " + _pm([math.log10(s) for s in scores
                                    if isinstance(s, (int, float)) and s > 0])
        else:
            score = _pm(scores, 4)
        cells = [score, _pm([r["ground_truth"] for r in group]),
                 _pm([r["evaluations"] for r in group], 1),
                 _pm([r["invalid_proposals"] for r in group], 1),
                 _pm([r["tokens"] for r in group], 0),
                 _pm([r["cost_usd"] for r in group], 4, "$"),
                 _pm([r["wall_seconds"] for r in group], 1)]
        out.append(f"| `{name}` | {len(group)} | {' | '.join(cells)} |")
    out += ["", ("Mean ± sample standard deviation over seeds (± 0 with one run). Per-run "
                 "figures: `results.csv`; each run's own report: `<cell>/report.md`."), "",
            "![best so far versus evaluations](best_vs_evaluations.png)", ""]
    return "\n".join(out)


def plot_curves(curves: dict[str, list[float | None]], ylabel: str, title: str) -> bytes:
    """Return a PNG with one line per configuration."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.4), dpi=110)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        points = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
        if points:
            ax.plot(*zip(*points), drawstyle="steps-post", label=name)
    if not any(curves.values()):
        ax.text(0.5, 0.5, "no scored evaluations", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("unique architectures evaluated")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def run_curve(run_dir: Path, proxy: str, truth, metric: str) -> list[float | None]:
    """Return one run's best-so-far curve: ground truth with ``truth``, else the proxy score."""
    from tools.proxies import get_proxy

    spec = get_proxy(proxy)
    if truth is not None:
        def value(arch: str, score: float) -> float | None:
            return query_truth(truth, metric, arch)
    else:
        def value(arch: str, score: float) -> float | None:
            return math.log10(score) if spec.log_scale and score > 0 else score
    return best_so_far(read_events(run_dir / "events.jsonl"), spec.higher_is_better, value)


def write_results(output: Path, grid, results: list[tuple[Any, dict]],
                  truth=None) -> dict[str, Path]:
    """Write results.csv, results.md and best_vs_evaluations.png for ``[(cell, summary)]``."""
    output = Path(output)
    metric = grid.metric
    rows = [result_row(cell, summary, output / cell.name, truth, metric)
            for cell, summary in results]
    paths = {"csv": output / "results.csv", "markdown": output / "results.md",
             "plot": output / "best_vs_evaluations.png"}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(paths["csv"], buf.getvalue().encode())
    write_atomic(paths["markdown"], render_results(rows, grid, truth).encode())
    curves: dict[str, list[list[float | None]]] = {}
    for cell, _ in results:
        curves.setdefault(cell.configuration, []).append(
            run_curve(output / cell.name, cell.proxy, truth, metric))
    proxies = sorted({cell.proxy for cell, _ in results})
    ylabel = (f"{metric} of the proxy-best so far" if truth is not None
              else f"best {'/'.join(proxies)} score so far (log10 where log-scale)")
    title = f"best so far versus evaluations, mean over seeds ({grid.space} / {grid.dataset})"
    png = plot_curves({k: mean_curve(v) for k, v in curves.items()}, ylabel, title)
    write_atomic(paths["plot"], png)
    return paths
