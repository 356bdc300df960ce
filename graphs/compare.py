"""Compare run directories side by side: ``python -m graphs.compare RUN_A RUN_B [...]``.

Prints a table with the runs as columns (setting, models, prompts, the config keys that differ,
progress, counts, cost, lineage, status) and writes a PNG of the best score per iteration, one
line per run. A finished run is read from its ``summary.json``; a run that was killed or is still
running has none (or only an older one, from before a resume), so its figures come from the
``population_updated`` events of ``events.jsonl`` instead. Baseline runs (``graphs.baselines``)
and forked runs (``lineage.json``) are read too.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphs.calibration import describe as describe_calibration
from graphs.config import DEFAULT_TRUTH_METRIC
from graphs.events import (
    arch_text,
    clean_text,
    fmt_cost,
    fmt_count,
    fmt_duration,
    fmt_score,
    iter_events,
    redact,
)
from graphs.report import progress_rows
from graphs.usage import UsageParser
from tools.files import write_atomic

DEFAULT_OUTPUT = Path("compare.png")
#: Files of which at least one marks a directory as a run directory.
RUN_FILES = ("config.json", "summary.json", "events.jsonl")
#: Config keys shown in rows of their own, so not repeated among the differing settings.
DEDICATED_KEYS = ("space", "dataset", "proxy")
ARCH_LIMIT = 60
MODEL_LIMIT = 48
MISSING = "—"
#: Console width when stdout is not a terminal: wide enough for several runs' cells unfolded.
PIPE_WIDTH = 1000
#: Progress-row fields kept in the --json output (the best's arch per iteration would bloat it).
PROGRESS_FIELDS = ("iteration", "best_score", "mean_score", "best_ground_truth")


class CompareError(ValueError):
    """A mistake in the user's request; the message names the problem and the fix."""


@dataclass
class RunRecord:
    """What one run directory holds, read once and redacted."""

    path: Path
    label: str  # the column header: the directory name, made unique among the runs
    config: dict[str, Any]
    summary: dict[str, Any] | None  # summary.json, or the run_finished event's copy
    finished: bool  # a summary exists and no session started after it
    started: dict[str, Any]  # the last run_started event
    last_update: dict[str, Any]  # the last population_updated event
    llm_call_events: int
    rows: list[dict[str, Any]]  # progress rows (graphs.report.progress_rows)
    forked_from: dict[str, Any] | None = None
    forks: list[dict[str, Any]] = field(default_factory=list)


# -- reading run directories -----------------------------------------------------------------------


def _number(value: Any) -> float | int | None:
    """Return ``value`` if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _read_json_object(path: Path, fix: str) -> dict[str, Any] | None:
    """Return the JSON object in ``path``, None when the file is absent; else CompareError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CompareError(f"cannot read {path} ({reason}); {fix}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CompareError(f"{path} is not readable JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise CompareError(f"{path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def _check_run_dir(path: Path) -> None:
    fix = "pass a directory written by python -m graphs.search (or graphs.baselines)"
    try:
        if not path.exists():
            raise CompareError(f"{path} does not exist; {fix}")
        if not path.is_dir():
            raise CompareError(f"{path} is a file, not a run directory; {fix}")
        if not any((path / name).exists() for name in RUN_FILES):
            raise CompareError(f"{path} is not a run directory (no {', '.join(RUN_FILES)}); {fix}")
    except OSError as exc:  # a folder we may not look into
        raise CompareError(f"cannot read {path} ({exc.strerror or exc}); "
                           "make it readable") from None


@dataclass
class EventScan:
    """What compare needs of ``events.jsonl``, gathered in one pass (a long run's file is big)."""

    started: dict = field(default_factory=dict)  # the last run_started
    last_update: dict = field(default_factory=dict)  # the last population_updated
    finished_summary: dict | None = None  # the summary of the last run_finished
    started_after_finish: bool = False  # a session began after the last run_finished
    llm_calls: int = 0
    slim: list[dict] = field(default_factory=list)  # what graphs.report.progress_rows reads


def _scan_events(path: Path) -> EventScan:
    scan = EventScan()
    try:
        for e in iter_events(path):
            kind = e.get("event")
            if kind == "run_started":
                scan.started, scan.started_after_finish = e, True
            elif kind == "run_finished":
                scan.started_after_finish = False
                if isinstance(e.get("summary"), dict):
                    scan.finished_summary = e["summary"]
            elif kind == "llm_call":
                scan.llm_calls += 1
            elif kind == "population_updated" and isinstance(e.get("best"), dict):
                if isinstance(e.get("iteration"), int) and not isinstance(e["iteration"], bool):
                    scan.last_update = e
                    scan.slim.append({k: e.get(k) for k in ("event", "iteration", "best",
                                                            "mean_score", "best_ground_truth")})
            elif kind == "evaluation" and e.get("ground_truth") is not None:
                scan.slim.append({"event": kind, "arch": e.get("arch"),
                                  "ground_truth": e.get("ground_truth")})
    except OSError as exc:
        raise CompareError(f"cannot read {path} ({exc.strerror or exc}); "
                           "make it readable") from None
    return scan


def _clean_progress(summary: dict) -> dict:
    """Return ``summary`` with only well-formed progress entries (progress_rows trusts them)."""
    progress = summary.get("progress")
    entries = progress if isinstance(progress, list) else []
    good = [p for p in entries if isinstance(p, dict) and isinstance(p.get("iteration"), int)
            and not isinstance(p.get("iteration"), bool)]
    return {**summary, "progress": good}


def _lineage(path: Path, summary: dict | None) -> tuple[dict | None, list[dict]]:
    """``forked_from`` and ``forks`` from lineage.json, else the summary's ``forked_from``."""
    lineage = _read_json_object(path / "lineage.json", "fix or remove it") or {}
    forked_from = lineage.get("forked_from")
    if not isinstance(forked_from, dict):
        forked_from = _dict((summary or {}).get("forked_from")) or None
    forks = lineage.get("forks")
    return forked_from, [f for f in forks if isinstance(f, dict)] if isinstance(forks, list) else []


def load_run(path: Path, label: str) -> RunRecord:
    """Read one run directory; one that is not a run or holds broken JSON is a CompareError."""
    _check_run_dir(path)
    config = _read_json_object(path / "config.json", "restore it from the run's events.jsonl "
                               "(run_started carries the config) or remove it")
    summary = _read_json_object(path / "summary.json", "remove it to compare the run by its "
                                "events.jsonl, or resume the run to rewrite it")
    scan = _scan_events(path / "events.jsonl")
    if summary is None:  # killed while writing its reports: run_finished carries the summary
        summary = scan.finished_summary
    forked_from, forks = _lineage(path, summary)
    summary = _clean_progress(summary) if summary is not None else None
    return RunRecord(
        path=path, label=label,
        config=redact(config if config is not None else _dict(scan.started.get("config"))),
        summary=redact(summary), finished=summary is not None and not scan.started_after_finish,
        started=redact(scan.started), last_update=redact(scan.last_update),
        llm_call_events=scan.llm_calls, rows=redact(progress_rows(summary or {}, scan.slim)),
        forked_from=redact(forked_from), forks=redact(forks),
    )


def _labels(paths: list[Path]) -> list[str]:
    """Column headers: directory names, with the parent added where two names collide."""
    names = [p.resolve().name or str(p) for p in paths]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n
            for p, n in zip(paths, names)]


def load_runs(paths: list[Path]) -> list[RunRecord]:
    """Read every run; two runs at least, none named twice."""
    if len(paths) < 2:
        raise CompareError(f"give at least two run directories to compare (got {len(paths)}): "
                           "python -m graphs.compare RUN_A RUN_B")
    seen: dict[Path, Path] = {}
    for p in paths:
        resolved = p.resolve()
        if resolved in seen:
            raise CompareError(f"{p} is named twice (as {seen[resolved]} too); pass each run once")
        seen[resolved] = p
    labels = [clean_text(redact(label), one_line=True) for label in _labels(paths)]
    return [load_run(p, label) for p, label in zip(paths, labels)]


# -- figures per run -------------------------------------------------------------------------------


def _prompts(run: RunRecord) -> dict[str, dict | None]:
    """``{role: {"id", "sha256"} or None}`` from the summary's or run_started's shape."""
    prompts = _dict((run.summary or {}).get("prompts")) or _dict(run.started.get("prompts"))
    shas = _dict(run.started.get("prompt_sha256"))
    out: dict[str, dict | None] = {}
    for role, value in prompts.items():
        if isinstance(value, dict):
            out[role] = {"id": value.get("id"), "sha256": value.get("sha256")}
        elif value is None:
            out[role] = None
        else:
            out[role] = {"id": value, "sha256": shas.get(role)}
    return out


def _lineage_label(entry: dict | None) -> str | None:
    """``run@iteration`` for a forked_from or forks entry."""
    if not entry:
        return None
    run_dir = entry.get("run_dir")
    name = Path(str(run_dir)).name if run_dir else "?"
    iteration = entry.get("iteration")
    return f"{name}@{iteration}" if iteration is not None else name


def run_figures(run: RunRecord) -> dict[str, Any]:
    """Return one run's figures (the --json entry and the source of its table column).

    A finished run's come from its summary; an incomplete run's from its last
    ``population_updated`` event, with an older summary (before a resume) filling gaps.
    """
    summary = run.summary or {}
    update = run.last_update
    config = run.config
    setting = {k: summary.get(k) or config.get(k) for k in ("space", "dataset", "proxy")}
    best = _dict(summary.get("best"))
    if run.finished or not update:
        counts = {k: _number(summary.get(k)) for k in
                  ("iterations", "evaluations", "invalid_proposals", "fallbacks", "llm_calls",
                   "tokens", "cost_usd", "wall_seconds")}
        best_arch, best_score = best.get("arch"), _number(best.get("score"))
        ground_truth = _number(best.get("ground_truth"))
    else:
        update_best = _dict(update.get("best"))
        counts = {k: _number(update.get(k)) for k in
                  ("evaluations", "invalid_proposals", "fallbacks", "tokens", "cost_usd")}
        counts["iterations"] = update.get("iteration")
        counts["llm_calls"] = run.llm_call_events
        elapsed = _number(update.get("elapsed_s"))
        # elapsed_s counts this session only; an earlier session's summary holds the rest.
        earlier = _number(summary.get("wall_seconds")) or 0.0
        counts["wall_seconds"] = None if elapsed is None else round(earlier + elapsed, 2)
        best_arch, best_score = update_best.get("arch"), _number(update_best.get("score"))
        ground_truth = _number(update.get("best_ground_truth"))
    metric = None
    if ground_truth is not None:  # the summary names it; an incomplete run's config implies it
        metric = (best.get("ground_truth_metric") or config.get("truth_metric")
                  or DEFAULT_TRUTH_METRIC.get(str(setting["dataset"])))
    models = _dict(summary.get("models")) or _dict(run.started.get("models"))
    method = summary.get("method") or config.get("method") or "rz-nas"
    # The latest measure: an incomplete run's last update carries it too.
    calibration = summary.get("calibration") if run.finished else (
        update.get("calibration") or summary.get("calibration"))
    return {
        "name": run.label,
        "path": str(run.path),
        "status": "finished" if run.finished else "incomplete",
        "method": method,
        **setting,
        "models": {role: models.get(role) for role in models},
        "prompts": _prompts(run),
        "iterations": counts["iterations"],
        "best": {"arch": best_arch, "score": best_score, "ground_truth": ground_truth,
                 "ground_truth_metric": metric},
        **{k: counts[k] for k in ("evaluations", "invalid_proposals", "fallbacks", "llm_calls",
                                  "tokens", "cost_usd", "wall_seconds")},
        "stop_reason": summary.get("stop_reason") if run.finished else None,
        "forked_from": run.forked_from,
        "forks": run.forks,
        "calibration": calibration if isinstance(calibration, dict) else None,
        "cost_per_improvement_usd": _number(summary.get("cost_per_improvement_usd")),
        "progress": [{k: (r.get(k) if k == "iteration" else _number(r.get(k)))
                      for k in PROGRESS_FIELDS} for r in run.rows],
    }


def differing_settings(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Config keys whose values differ between the runs: ``[{"setting", "values": {run: v}}]``.

    Runs without any config (no config.json, no run_started) are left out of the comparison:
    every key would "differ" for them.
    """
    with_config = [r for r in runs if r.config]
    keys = list(dict.fromkeys(k for r in with_config for k in r.config))
    out = []
    for key in keys:
        values = [r.config.get(key, MISSING) for r in with_config]
        if any(v != values[0] for v in values[1:]):
            out.append({"setting": key,
                        "values": {r.label: r.config.get(key, MISSING) for r in runs}})
    return out


# -- the table -------------------------------------------------------------------------------------


def _count(value: Any) -> str:
    return fmt_count(value) if _number(value) is not None else "?"


def _money(value: Any) -> str:
    return fmt_cost(value) if _number(value) is not None else "?"


def _duration(value: Any) -> str:
    return fmt_duration(value) if _number(value) is not None else "?"


def _setting_text(value: Any) -> str:
    if value is MISSING:
        return MISSING
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "[]"
    return "none" if value is None else str(value)


def _models_text(models: dict) -> str:
    if not models:
        return MISSING  # a baseline: no model
    designer, reflector = (clean_text(models.get(role) or MISSING, MODEL_LIMIT, one_line=True)
                           for role in ("designer", "reflector"))
    return f"{designer} (both)" if designer == reflector else f"{designer} / {reflector}"


def _prompts_text(prompts: dict) -> str:
    parts = []
    for role in ("designer", "reflector"):
        p = prompts.get(role)
        if p is None:
            parts.append(MISSING)
            continue
        sha = f" ({str(p['sha256'])[:8]})" if p.get("sha256") else ""
        parts.append(f"{p.get('id')}{sha}")
    return MISSING if not prompts else " / ".join(parts)


def _truth_text(best: dict) -> str:
    if best.get("ground_truth") is None:
        return MISSING
    metric = best.get("ground_truth_metric")
    return f"{fmt_score(best['ground_truth'])}" + (f" ({metric})" if metric else "")


def _calibration_text(calibration: dict | None) -> str:
    # The trace's words (graphs.calibration.describe), so both say the same thing.
    return describe_calibration(calibration) if calibration else MISSING


def table_rows(figures: list[dict], differing: list[dict]) -> list[tuple[str, list[str]]]:
    """Return (row label, one cell per run); optional rows only where some run has a value."""
    def row(label: str, cells: list[str], optional: bool = False) -> list[tuple[str, list[str]]]:
        return [] if optional and all(c == MISSING for c in cells) else [(label, cells)]

    per = lambda fn: [fn(f) for f in figures]  # noqa: E731 - one cell per run
    rows = [
        *row("method", per(lambda f: f["method"]),
             optional=all(f["method"] == "rz-nas" for f in figures)),
        *row("space", per(lambda f: str(f["space"] or "?"))),
        *row("dataset", per(lambda f: str(f["dataset"] or "?"))),
        *row("proxy", per(lambda f: str(f["proxy"] or "?"))),
        *row("designer / reflector model", per(lambda f: _models_text(f["models"]))),
        *row("prompts (designer / reflector)", per(lambda f: _prompts_text(f["prompts"]))),
    ]
    labels = [f["name"] for f in figures]
    for entry in differing:
        if entry["setting"] not in DEDICATED_KEYS:
            rows += row(f"≠ {entry['setting']}",
                        [_setting_text(entry["values"].get(label, MISSING)) for label in labels])
    rows += [
        *row("iterations done", per(lambda f: _count(f["iterations"]))),
        *row("best score", per(lambda f: fmt_score(f["best"]["score"]))),
        *row("best arch", per(lambda f: arch_text(f["best"]["arch"], ARCH_LIMIT)
                              if f["best"]["arch"] is not None else MISSING)),
        *row("best's ground truth", per(lambda f: _truth_text(f["best"])), optional=True),
        *row("evaluations", per(lambda f: _count(f["evaluations"]))),
        *row("invalid proposals", per(lambda f: _count(f["invalid_proposals"]))),
        *row("fallbacks", per(lambda f: _count(f["fallbacks"]))),
        *row("LLM calls", per(lambda f: _count(f["llm_calls"]))),
        *row("tokens", per(lambda f: _count(f["tokens"]))),
        *row("cost", per(lambda f: _money(f["cost_usd"]))),
        *row("cost per improvement", per(lambda f: _money(f["cost_per_improvement_usd"])
                                         if f["cost_per_improvement_usd"] is not None
                                         else MISSING), optional=True),
        *row("proxy calibration", per(lambda f: _calibration_text(f["calibration"])),
             optional=True),
        *row("wall time", per(lambda f: _duration(f["wall_seconds"]))),
        *row("stop reason", per(lambda f: str(f["stop_reason"] or MISSING))),
        *row("forked from", per(lambda f: _lineage_label(f["forked_from"]) or MISSING),
             optional=True),
        *row("forks", per(lambda f: ", ".join(filter(None, map(_lineage_label, f["forks"])))
                          or MISSING), optional=True),
        *row("status", per(lambda f: f["status"])),
    ]
    return rows


def render_table(figures: list[dict], differing: list[dict]):
    """Return a rich Table: runs as columns. Cells are Text, so run data is never rich markup."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    proxies = sorted({str(f["proxy"]) for f in figures})
    title = f"{len(figures)} runs" + (f" (proxies differ: {', '.join(proxies)})"
                                      if len(proxies) > 1 else "")
    table = Table(title=title, box=box.SIMPLE_HEAVY, show_lines=False)
    table.add_column("", style="bold", no_wrap=True)
    for f in figures:
        table.add_column(Text(f["name"]), overflow="fold")
    for label, cells in table_rows(figures, differing):
        table.add_row(Text(label), *(Text(clean_text(c, one_line=True)) for c in cells))
    return table


# -- the plot --------------------------------------------------------------------------------------


def _log_scale(proxies: list[str]) -> bool:
    """Whether every run's proxy is log-scale (synflow, TE-NAS); unknown names are linear."""
    from tools.proxies import get_proxy  # imports torch: only when a plot is drawn

    try:
        return bool(proxies) and all(get_proxy(p).log_scale for p in proxies)
    except ValueError:
        return False


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["iteration"], r[key]) for r in rows if _number(r.get(key)) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def draw_comparison(figures: list[dict]):
    """Return a matplotlib Figure: best proxy score per iteration per run, and the best's ground
    truth when any run has it; a dotted vertical line marks where a forked run left its parent."""
    from matplotlib.figure import Figure  # the OO API draws with Agg and never opens a display
    from matplotlib.ticker import MaxNLocator

    has_truth = any(_series(f["progress"], "best_ground_truth")[0] for f in figures)
    panels = 2 if has_truth else 1
    fig = Figure(figsize=(8, 4.2 * panels), dpi=110)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    styles = ("-", "--", "-.")
    plotted: list[float] = []
    for i, f in enumerate(figures):
        color, style = f"C{i % 10}", styles[(i // 10) % len(styles)]
        # Earlier runs are drawn wider, so a run that follows another exactly (a fork, before it
        # forked) still shows both lines.
        width = 1.5 + 2.5 * (len(figures) - 1 - i) / max(1, len(figures) - 1)
        xs, ys = _series(f["progress"], "best_score")
        if xs:
            axes[0].step(xs, ys, where="post", color=color, linestyle=style, marker="o", ms=2.5,
                         linewidth=width, label=f["name"])
            plotted += ys
        if has_truth:
            tx, ty = _series(f["progress"], "best_ground_truth")
            if tx:
                axes[1].step(tx, ty, where="post", color=color, linestyle=style, marker="o",
                             ms=2.5, linewidth=width, label=f["name"])
        fork = _dict(f["forked_from"]).get("iteration")
        if _number(fork) is not None:
            for n, ax in enumerate(axes):
                label = f"{f['name']} forked from {_lineage_label(f['forked_from'])}"
                ax.axvline(fork, color=color, linestyle=":", linewidth=1.2,
                           label=label if n == 0 else None)
    proxies = list(dict.fromkeys(str(f["proxy"]) for f in figures))
    # Log only when it shows something: a log-scale proxy and nothing a log axis would drop.
    log = bool(plotted) and all(v > 0 for v in plotted) and _log_scale(proxies)
    if log:
        axes[0].set_yscale("log")
    if not plotted:
        axes[0].text(0.5, 0.5, "no scored iterations yet", ha="center", va="center",
                     transform=axes[0].transAxes)
    score_name = proxies[0] if len(proxies) == 1 else "proxy"
    axes[0].set_ylabel(f"best {score_name} score" + (" (log)" if log else ""))
    title = (f"best {proxies[0]} score per iteration" if len(proxies) == 1 else
             f"best score per iteration; proxies differ: {', '.join(proxies)} "
             "(scales not comparable)")
    axes[0].set_title(title, fontsize=10)
    if has_truth:
        metrics = sorted({f["best"]["ground_truth_metric"] for f in figures
                          if f["best"]["ground_truth_metric"]})
        axes[1].set_ylabel(f"best's {metrics[0] if len(metrics) == 1 else 'ground truth'}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("iteration (0 = initial population)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # below the plot, so it never hides a curve
        axes[-1].legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18),
                        ncol=min(3, len(handles)), fontsize=8, frameon=False)
    return fig


def plot_comparison(figures: list[dict]) -> bytes:
    """Return the PNG of :func:`draw_comparison`."""
    fig = draw_comparison(figures)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


# -- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="python -m graphs.compare",
        description="Compare two or more run directories: a table (runs as columns) and a PNG of "
        "the best score per iteration. Incomplete (killed or running) runs are read from their "
        "events.",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR",
                   help="run directories written by python -m graphs.search (two or more)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="FILE.png",
                   help=f"where to write the plot (default {DEFAULT_OUTPUT}; a directory: "
                   f"{DEFAULT_OUTPUT} inside it)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (runs, differing settings, PNG path), no table")
    return p


def resolve_output(output: Path) -> Path:
    """Return the PNG path for ``--output``; a missing folder or a non-PNG name: CompareError."""
    if output.is_dir():
        return output / DEFAULT_OUTPUT.name
    if output.suffix.lower() != ".png":
        raise CompareError(f"--output {output} must name a .png file (the plot is a PNG)")
    if not output.parent.is_dir():
        raise CompareError(f"--output {output}: the folder {output.parent} does not exist; "
                           "create it or choose another --output")
    return output


def _console():
    """A rich console; in a pipe (no terminal) wide enough that rows do not wrap."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # A file or log has no width: the table takes what its cells need (it never expands).
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def compare(paths: list[Path], output: Path) -> tuple[list[dict], list[dict], Path]:
    """Read the runs, write the plot; return per-run figures, differing settings, the PNG path."""
    png = resolve_output(output)
    runs = load_runs(paths)
    figures = [run_figures(r) for r in runs]
    differing = differing_settings(runs)
    try:
        write_atomic(png, plot_comparison(figures))
    except OSError as exc:
        raise CompareError(f"cannot write {png} ({exc.strerror or exc}); "
                           "choose another --output") from None
    return figures, differing, png


def main(argv: list[str] | None = None) -> int:
    """Compare the runs named in ``argv``; 0: done, 2: a usage mistake, 130: interrupted."""
    args = build_parser().parse_args(argv)
    try:
        figures, differing, png = compare(args.runs, args.output)
        if args.json:
            print(json.dumps({"runs": figures, "differing_settings": differing, "png": str(png)},
                             indent=2, ensure_ascii=False, default=str))
        else:
            console = _console()
            # Rendered first, written as plain text: rich would end the process with exit code
            # 1 on a reader that left (`| head`); this way every output path handles it alike.
            with console.capture() as captured:
                console.print(render_table(figures, differing))
                console.print(f"plot: {png}", markup=False)
            sys.stdout.write(captured.get())
        sys.stdout.flush()
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader has what it wanted; the PNG is written
        # Point stdout at /dev/null so the flush at exit does not fail on the closed pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
