"""Run reports, built only from the event stream and the final summary dict.

``write_reports`` writes ``summary.json``, ``population.json``, ``progress.png``, ``report.md``
(and ``pareto.png`` when the summary holds a Pareto front) into the run directory;
``render_summary`` is the short text the CLI prints at the end. Both redact credentials and
format numbers as the terminal trace does (:mod:`graphs.events`).
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from graphs.calibration import describe
from graphs.events import (
    fmt_cost,
    fmt_count,
    fmt_duration,
    fmt_score,
    fmt_size,
    is_fake_model,
    redact,
)
from graphs.pareto import spread
from tools.files import write_atomic

#: Keys of summary.json in this order first; any other key follows in the order given.
SUMMARY_ORDER = (
    "best", "iterations", "evaluations", "cache_hits", "invalid_proposals", "fallbacks",
    "llm_calls", "tokens", "cost_usd", "wall_seconds", "stop_reason", "models", "prompts", "seed",
    "space", "dataset", "proxy", "population_size",
)
#: Rows of the population table in report.md.
TOP_ROWS = 10
#: Rows of the Pareto-front table in report.md (spread along the front when it is longer).
PARETO_ROWS = 20


def write_reports(run_dir: Path, summary: dict, events: Iterable[dict],
                  population: list[dict]) -> dict[str, Path]:
    """Write summary.json, population.json, progress.png and report.md into ``run_dir``.

    With ``summary["pareto"]`` (a list of :mod:`graphs.pareto` points) ``pareto.png`` is written
    too and report.md gets a Pareto section; with ``summary["calibration"]`` (a
    :func:`graphs.calibration.calibration` dict) report.md gets a proxy-calibration line.

    Args:
        run_dir: the run directory (created if missing).
        summary: the final summary; written as given (redacted, known keys first).
        events: the run's events, e.g. ``iter_events(run_dir / "events.jsonl")``; read once, and
            only what the reports use is kept, so a long run's stream need not fit in memory.
        population: the final population, best first.

    Returns:
        The written paths by name: ``summary``, ``population``, ``progress``, ``report``, and
        ``pareto`` when there is a front.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary, population = redact(summary), redact(list(population))
    ordered = {k: summary[k] for k in SUMMARY_ORDER if k in summary}
    ordered.update((k, v) for k, v in summary.items() if k not in ordered)
    names = {"summary": "summary.json", "population": "population.json",
             "progress": "progress.png", "report": "report.md"}
    paths = {key: run_dir / name for key, name in names.items()}
    events = report_events(events)
    rows = progress_rows(summary, events)
    write_atomic(paths["summary"], _json_bytes(ordered))
    write_atomic(paths["population"], _json_bytes(population))
    write_atomic(paths["progress"], plot_progress(rows, events, summary))
    if summary.get("pareto"):
        paths["pareto"] = run_dir / "pareto.png"
        write_atomic(paths["pareto"], plot_pareto(summary["pareto"], events, summary))
    write_atomic(paths["report"], render_markdown(summary, events, population, rows).encode())
    return paths


def report_events(events: Iterable[dict]) -> list[dict]:
    """Return what the reports read of ``events``, in one pass, with the fields they use.

    Kept: ``population_updated`` and ``evaluation`` events (cut down to their figures), the last
    ``run_started`` and the last successful ``reflection``. The rest (LLM calls, proposals,
    iteration starts) and long fields (transcripts, top-5 lists, configs of earlier starts) go.
    """
    kept: list[dict] = []
    started: dict | None = None
    reflection: dict | None = None
    for e in events:
        kind = e.get("event")
        if kind == "population_updated":
            kept.append({k: e.get(k) for k in
                         ("event", "iteration", "best", "mean_score", "best_ground_truth")})
        elif kind == "evaluation":
            slim = {k: e.get(k) for k in
                    ("event", "phase", "iteration", "ok", "score", "params", "flops")}
            if e.get("ground_truth") is not None:
                slim.update(arch=e.get("arch"), ground_truth=e["ground_truth"])
            if not e.get("ok"):
                slim["error"] = {"kind": (e.get("error") or {}).get("kind", "error")}
            kept.append(slim)
        elif kind == "run_started":
            started = e
        elif kind == "reflection" and e.get("ok"):
            reflection = e
    return kept + [e for e in (started, reflection) if e is not None]


def progress_rows(summary: dict, events: Iterable[dict]) -> list[dict]:
    """Return per-iteration rows: ``iteration``, ``best_score``, ``mean_score``, ``best_arch``, ...

    ``population_updated`` events are the source (the last one wins when a resumed run repeated
    an iteration); ``summary["progress"]`` fills what the events lack, and the ``ground_truth``
    of evaluation events, when they carry one, gives ``best_ground_truth`` where nothing else did.
    """
    events = list(events)
    rows: dict[int, dict] = {}
    for e in events:
        if e.get("event") == "population_updated" and isinstance(e.get("best"), dict):
            it = int(e.get("iteration") or 0)
            rows[it] = {"iteration": it, "best_score": e["best"].get("score"),
                        "mean_score": e.get("mean_score"), "best_arch": e["best"].get("arch"),
                        "best_ground_truth": e.get("best_ground_truth")}
    for p in summary.get("progress") or []:
        it = int(p.get("iteration") or 0)
        row = rows.setdefault(it, {"iteration": it})
        for key in ("best_score", "mean_score", "best_arch", "best_ground_truth"):
            if row.get(key) is None and p.get(key) is not None:
                row[key] = p[key]
    truth = {e.get("arch"): e["ground_truth"] for e in events
             if e.get("event") == "evaluation" and e.get("ground_truth") is not None}
    for row in rows.values():
        if row.get("best_ground_truth") is None:
            row["best_ground_truth"] = truth.get(row.get("best_arch"))
    return [rows[k] for k in sorted(rows)]


def plot_progress(rows: list[dict], events: list[dict], summary: dict) -> bytes:
    """Return a PNG: best and mean score per iteration, each child, and the best's ground truth."""
    from matplotlib.figure import Figure  # the OO API draws with Agg and never opens a display
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.add_subplot()
    kids = [(e.get("iteration"), e["score"]) for e in events
            if e.get("event") == "evaluation" and e.get("phase") == "search" and e.get("ok")
            and isinstance(e.get("score"), (int, float)) and math.isfinite(e["score"])]
    if kids:
        ax.scatter(*zip(*kids), s=12, color="0.65", label="children", zorder=1)
    scored = [r for r in rows if r.get("best_score") is not None]
    if scored:
        ax.plot([r["iteration"] for r in scored], [r["best_score"] for r in scored], "-o", ms=3,
                drawstyle="steps-post", color="tab:blue", label="best", zorder=3)
        means = [(r["iteration"], r["mean_score"]) for r in scored
                 if r.get("mean_score") is not None]
        if means:
            ax.plot(*zip(*means), "--", color="tab:orange", label="population mean", zorder=2)
    else:
        ax.text(0.5, 0.5, "no scored iterations yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration (0 = initial population)")
    ax.set_ylabel(f"{summary.get('proxy') or 'proxy'} score")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    truth = [(r["iteration"], r["best_ground_truth"]) for r in rows
             if r.get("best_ground_truth") is not None]
    if truth:
        metric = (summary.get("best") or {}).get("ground_truth_metric") or "ground truth"
        ax2 = ax.twinx()
        ax2.step(*zip(*truth), where="post", color="tab:green", label=f"best's {metric}")
        ax2.set_ylabel(metric, color="tab:green")
        more = ax2.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:  # below the axes, so it never hides a curve
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4,
                  fontsize=8, frameon=False)
    title = " / ".join(str(summary[k]) for k in ("method", "space", "dataset", "proxy")
                       if summary.get(k))  # "method": baselines (graphs.baselines)
    ax.set_title(f"RZ-NAS progress{': ' + title if title else ''}", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def plot_pareto(front: list[dict], events: list[dict], summary: dict) -> bytes:
    """Return a PNG: proxy score versus params, every evaluated candidate in grey, the front
    highlighted, connected and coloured by FLOPs; log params, and log score for log-scale proxies.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    def point(p: dict) -> tuple[float, float, float] | None:
        values = (p.get("params"), p.get("score"), p.get("flops"))
        usable = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                     for v in values)
        return tuple(float(v) for v in values) if usable else None  # type: ignore[return-value]

    shown = sorted(filter(None, map(point, front)))
    others = [xy for xy in (point(e) for e in events
                            if e.get("event") == "evaluation" and e.get("ok")) if xy]
    proxy = summary.get("proxy") or "proxy"
    fig = Figure(figsize=(7.5, 4.6), dpi=110)
    ax = fig.add_subplot()
    if others:
        ax.scatter([p[0] for p in others], [p[1] for p in others], s=10, color="0.8",
                   label="evaluated", zorder=1)
    if shown:
        params, scores, flops = zip(*shown)
        ax.plot(params, scores, "-", color="tab:red", lw=1, alpha=0.6, zorder=2)
        norm = LogNorm() if min(flops) > 0 and max(flops) > min(flops) else None
        dots = ax.scatter(params, scores, c=flops, norm=norm, cmap="viridis", s=36,
                          edgecolors="tab:red", zorder=3, label="Pareto front")
        fig.colorbar(dots, ax=ax, label="FLOPs")
    else:
        ax.text(0.5, 0.5, "no usable front points", ha="center", va="center",
                transform=ax.transAxes)
    everything = [*shown, *others]
    if everything and min(p[0] for p in everything) > 0:  # a log axis cannot show 0
        ax.set_xscale("log")
    log_y = bool(everything) and _log_scale(proxy) and min(p[1] for p in everything) > 0
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("params")
    ax.set_ylabel(f"{proxy} score{' (log scale)' if log_y else ''}")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    title = " / ".join(str(summary[k]) for k in ("space", "dataset") if summary.get(k))
    ax.set_title(f"Pareto front: {proxy} vs params and FLOPs{' (' + title + ')' if title else ''}",
                 fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _log_scale(proxy: str) -> bool:
    """Whether ``proxy`` is a log-scale proxy; False for names not registered here."""
    from tools.proxies import get_proxy  # imports torch: only reports with a front pay for it

    try:
        return get_proxy(proxy).log_scale
    except ValueError:
        return False


def render_markdown(summary: dict, events: list[dict], population: list[dict],
                    rows: list[dict]) -> str:
    """Return report.md: setting, best, progress, population, counts, models, config, resume."""
    started = _last(events, "run_started")
    config = started.get("config") or {}
    run_dir = summary.get("run_dir") or started.get("run_dir") or "RUN_DIR"
    out = [f"# RZ-NAS run `{started.get('run_id') or Path(str(run_dir)).name}`", ""]
    fakes = sorted({m for m in (summary.get("models") or started.get("models") or {}).values()
                    if is_fake_model(m)})
    if fakes:
        out += [(f"> **FAKE MODEL**: {', '.join(fakes)} gave scripted replies; these results "
                 "say nothing about a real LLM."), ""]
    out += _md_best(summary, config)
    if summary.get("calibration"):
        out += [f"Proxy calibration: {describe(summary['calibration'])}.", ""]
    out += _md_progress(rows)
    out += _md_population(summary, config, population)
    if summary.get("pareto"):
        out += _md_pareto(summary, config, summary["pareto"])
    out += _md_counts(summary, events)
    prompt_rows = _prompt_rows(summary, started)
    if prompt_rows:  # baselines use no model
        out += ["## Models and prompts", "", "| role | model | prompt | sha256 |",
                "|---|---|---|---|"]
        out += [f"| {r} | {_code(m)} | {_cell(p)} | {_code(s) if s else 'n/a'} |"
                for r, m, p, s in prompt_rows]
    reflection = _last([e for e in events if e.get("ok")], "reflection")
    if reflection:
        out += ["", f"## Latest reflection (iteration {reflection.get('iteration')})", "",
                f"- **what changed**: {reflection.get('what_changed')}",
                f"- **why**: {reflection.get('why')}",
                f"- **suggestion**: {reflection.get('suggestion')}"]
    if config:
        out += ["", "## Configuration", "", "```json", json.dumps(config, indent=2, default=str),
                "```"]
    resume = summary.get("resume_command") or f"python -m graphs.search --resume {run_dir}"
    extend = (summary.get("extend_command")
              or f"{resume} --iterations {int(summary.get('iterations') or 0) * 2 or 10}")
    note = summary.get("resume_note") or (
        "A stopped or killed run continues where it left off; raise `--iterations` (the "
        "total) or `--wall-clock` to search longer:")
    out += ["", "## Resume or extend", "", note,
            "", "```", resume, extend, "```", "",
            ("Files: `events.jsonl` (every event), `messages.jsonl` (LLM transcripts), "
             "`summary.json`, `population.json`, `progress.png`"
             f"{', `pareto.png`' if summary.get('pareto') else ''}."), ""]
    return redact("\n".join(out))


def render_summary(summary: dict) -> str:
    """Return the short end-of-run text the CLI prints."""
    s = redact(summary)
    best = s.get("best") or {}
    lines = []
    fakes = sorted({m for m in (s.get("models") or {}).values() if is_fake_model(m)})
    if fakes:
        lines.append(f"FAKE MODEL ({', '.join(fakes)}): scripted replies, not a real search.")
    gt = ""
    if best.get("ground_truth") is not None:
        metric = best.get("ground_truth_metric") or "ground truth"
        gt = f", {metric} {fmt_score(best['ground_truth'])}"
    lines.append(f"best: {best.get('arch', 'n/a')}  {s.get('proxy') or 'score'} "
                 f"{fmt_score(best.get('score'))}{gt}")
    lines.append(f"{s.get('iterations', '?')} iterations ({s.get('stop_reason', '?')}), "
                 f"{fmt_count(s.get('evaluations'))} evaluations, "
                 f"{fmt_count(s.get('cache_hits', 0))} cache hits, "
                 f"{fmt_count(s.get('invalid_proposals', 0))} invalid proposals, "
                 f"{fmt_count(s.get('fallbacks', 0))} fallbacks")
    calls = f"{fmt_count(s['llm_calls'])} calls, " if s.get("llm_calls") is not None else ""
    lines.append(f"LLM: {calls}{fmt_count(s.get('tokens', 0))} tokens, "
                 f"{fmt_cost(s.get('cost_usd'))}; wall time {fmt_duration(s.get('wall_seconds'))}")
    trained = s.get("trained")
    if trained:
        lines.append(f"trained {trained.get('epochs')} epochs on {trained.get('dataset')}: test "
                     f"accuracy {_percent(trained.get('test_accuracy'))}")
    if s.get("run_dir"):
        lines.append(f"run dir: {s['run_dir']} (report.md, summary.json, events.jsonl)")
    if s.get("stop_reason") == "interrupted":
        resume = s.get("resume_command") or "python -m graphs.search --resume RUN_DIR"
        lines.append(f"resume: {resume}")
    return "\n".join(lines)


# -- report.md sections ---------------------------------------------------------------------------


def _md_best(summary: dict, config: dict) -> list[str]:
    best = summary.get("best") or {}
    proxy = summary.get("proxy") or config.get("proxy") or "score"
    stop = f"{summary.get('iterations', '?')} (stop: {summary.get('stop_reason', '?')})"
    setting = [("search space", summary.get("space") or config.get("space")),
               ("dataset", summary.get("dataset") or config.get("dataset")),
               ("proxy", ", ".join([proxy, *config.get("extra_proxies", [])])),
               ("iterations", stop),
               ("population", summary.get("population_size") or config.get("population")),
               ("seed", summary.get("seed")),
               ("wall time", fmt_duration(summary.get("wall_seconds")))]
    out = ["| setting | value |", "|---|---|"]
    out += [f"| {k} | {_cell(v)} |" for k, v in setting if v is not None]
    out += ["", "## Best architecture", "", "```", str(best.get("arch", "n/a")), "```", "",
            f"- {proxy}: **{fmt_score(best.get('score'))}**"]
    others = {k: v for k, v in (best.get("scores") or {}).items() if k != proxy}
    if others:
        listed = ", ".join(f"{k} {fmt_score(v)}" for k, v in others.items())
        out.append(f"- other proxies: {listed}")
    if best.get("ground_truth") is not None:
        out.append(f"- ground truth ({best.get('ground_truth_metric') or 'metric'}): "
                   f"**{fmt_score(best['ground_truth'])}**")
    if best.get("params") is not None or best.get("flops") is not None:
        out.append(f"- params {fmt_size(best.get('params'))}, FLOPs {fmt_size(best.get('flops'))}")
    trained = summary.get("trained")
    if trained:
        out.append(f"- trained ({trained.get('epochs')} epochs, {trained.get('dataset')}): test "
                   f"accuracy **{_percent(trained.get('test_accuracy'))}**, params "
                   f"{fmt_size(trained.get('params'))} (`{trained.get('output')}/metrics.json`)")
    return [*out, ""]


def _percent(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def _md_progress(rows: list[dict]) -> list[str]:
    out = ["## Progress", "", "![progress](progress.png)", ""]
    if rows:
        step = max(1, math.ceil(len(rows) / 20))  # about 20 rows, however long the run
        shown = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
        out += ["| iteration | best | mean | ground truth of best |", "|---:|---:|---:|---:|"]
        out += [f"| {r['iteration']} | {fmt_score(r.get('best_score'))} | "
                f"{fmt_score(r.get('mean_score'))} | {fmt_score(r.get('best_ground_truth'))} |"
                for r in shown]
        out.append("")
    return out


def _md_population(summary: dict, config: dict, population: list[dict]) -> list[str]:
    proxy = summary.get("proxy") or config.get("proxy") or "score"
    out = [f"## Population (top {min(TOP_ROWS, len(population))} of {len(population)})", "",
           f"| # | architecture | {proxy} | params | FLOPs | born |",
           "|---:|---|---:|---:|---:|---:|"]
    out += [f"| {i} | {_code(m.get('arch'))} | {fmt_score(m.get('score'))} | "
            f"{fmt_size(m.get('params'))} | {fmt_size(m.get('flops'))} | {m.get('born', '')} |"
            for i, m in enumerate(population[:TOP_ROWS], 1)]
    return [*out, ""]


def _md_pareto(summary: dict, config: dict, front: list[dict]) -> list[str]:
    proxy = summary.get("proxy") or config.get("proxy") or "score"
    rows = spread(front, PARETO_ROWS)
    note = (f"{len(front)} architectures on the front of {proxy} versus params and FLOPs (none "
            "beats another on all three)")
    if len(rows) < len(front):
        note += f"; {len(rows)} shown, spread from the smallest to the largest"
    out = ["## Pareto front", "", "![pareto front](pareto.png)", "", note + ".", "",
           f"| # | architecture | {proxy} | params | FLOPs | iteration |",
           "|---:|---|---:|---:|---:|---:|"]
    out += [f"| {i} | {_code(p.get('arch'))} | {fmt_score(p.get('score'))} | "
            f"{fmt_size(p.get('params'))} | {fmt_size(p.get('flops'))} | "
            f"{_cell(p.get('iteration', ''))} |" for i, p in enumerate(rows, 1)]
    return [*out, ""]


def _md_counts(summary: dict, events: list[dict]) -> list[str]:
    failures = Counter((e.get("error") or {}).get("kind", "error") for e in events
                       if e.get("event") == "evaluation" and not e.get("ok"))
    counts = [("evaluations (unique)", fmt_count(summary.get("evaluations"))),
              ("cache hits", fmt_count(summary.get("cache_hits"))),
              ("failed evaluations", ", ".join(f"{k}: {n}" for k, n in failures.items()) or "0"),
              ("invalid proposals", fmt_count(summary.get("invalid_proposals"))),
              ("random fallbacks", fmt_count(summary.get("fallbacks"))),
              ("LLM calls", fmt_count(summary.get("llm_calls"))),
              ("tokens", fmt_count(summary.get("tokens"))),
              ("cost", fmt_cost(summary.get("cost_usd")))]
    return ["## Counts", "", "| | |", "|---|---:|", *(f"| {k} | {_cell(v)} |" for k, v in counts),
            ""]


def _prompt_rows(summary: dict, started: dict) -> list[tuple[str, Any, Any, Any]]:
    """Return (role, model, prompt id, sha256) per role, from either shape of ``prompts``."""
    models = summary.get("models") or started.get("models") or {}
    prompts = summary.get("prompts") or started.get("prompts") or {}
    shas = started.get("prompt_sha256") or {}
    rows = []
    for role in dict.fromkeys([*models, *prompts]):
        p = prompts.get(role)
        pid, sha = (p.get("id"), p.get("sha256")) if isinstance(p, dict) else (p, shas.get(role))
        rows.append((role, models.get(role), pid, sha))
    return rows


def _last(events: list[dict], kind: str) -> dict:
    return next((e for e in reversed(events) if e.get("event") == kind), {})


def _cell(text: Any) -> str:
    """Return a Markdown table cell: pipes escaped (inside code spans too, as GFM requires)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: Any) -> str:
    return _cell(f"`{text}`")


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n").encode()
