"""Load test: a long run (10,000 cached evaluations, 1,500 iterations): resume, replay, report.

Does such a run stay fast to resume, replay and report, with bounded memory?

Usage:
    python benchmarks/load_resume.py                    # 10,000 evaluations, 1,500 iterations
    python benchmarks/load_resume.py --evaluations 2000 --iterations 300 --json
    python benchmarks/load_resume.py --keep runs/load   # keep the run directory

What is real and what is synthetic:

- The run directory is written by the real ``graphs.runner.run_search``: the real LangGraph search
  graph with its SQLite checkpointer (a checkpoint after every step, subgraph steps included),
  the real ``TraceWriter`` (events.jsonl, messages.jsonl), the real Designer and Reflector
  prompts and validation, the real ``Evaluator`` with its ``ScoreCache`` (scores.sqlite), the LLM
  reply cache, and the real reports (summary.json, population.json, progress.png, report.md).
- Synthetic: the models are scripted fakes (``agents.fake``) that answer at once. The Designer
  replies, in the ``whole`` output form, with pre-drawn ``zen-macro`` architectures (nb201 has only
  6,466 distinct cells, fewer than 10,000), each new. The score cache is filled beforehand,
  through ``ScoreCache.put_candidate``/``put_scores`` under the evaluator's own cache key, with
  made-up ``params`` scores for every architecture the run will meet, so every evaluation is a
  real cache look-up and no sandbox worker ever starts. The prompts leave out the space's and
  the proxy's source (``--no-code-description --no-proxy-code``) only to keep messages.jsonl
  small; none of the measured phases reads it.
- Scale: the cache holds ``--evaluations`` architectures. The run has ``--population``
  (default 100, the paper's) initial members and ``--iterations`` steps of concurrency
  ``(evaluations - population) // iterations`` (6 for the defaults), so it scores
  ``population + iterations x concurrency`` of them (9,100); the rest are in the cache as if from
  an earlier run sharing it.

Measured, each in a fresh Python process, its peak RSS mark reset after the imports (so the peak
is the phase's own; ``rss_base_mb`` is the process after its imports, torch included):

- ``resume``: read config.json, build the models, open the evaluator (score cache), the LLM
  cache, the trace files and the checkpointer, and load the latest checkpoint: everything
  ``run_search(resume=True)`` does before the next iteration starts. Afterwards (not timed) it
  looks up every architecture the run evaluated and counts those that would be scored again.
- ``trace``: read events.jsonl and pass each event through what the trace does to show it
  (redaction, the ``RunView`` fold, the ``--plain`` line), without printing.
- ``report``: read the events and write summary.json, population.json, progress.png and report.md
  with ``graphs.report.write_reports``, as the end of a run does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from graphs.config import SearchConfig
from graphs.nodes import _rng
from graphs.runner import (
    CHECKPOINTS,
    UsageError,
    _build_agents,
    _open_checkpoints,
    _saved_state,
    load_run_config,
    open_evaluator,
    run_search,
    validate_config,
)
from tools.score_cache import CachedScore

PHASES = ("resume", "trace", "report")
RUN_FILES = ("checkpoints.sqlite", "scores.sqlite", "llm_cache.sqlite", "events.jsonl",
             "messages.jsonl", "summary.json", "population.json", "progress.png", "report.md")
REFLECTION = json.dumps({"what_changed": "one block", "why": "load test",
                         "suggestion": "widen the last stage"})


def _rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark, so a phase's peak is not the imports'; return RSS now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset VmHWM (Linux >= 4.0)
    except OSError:
        pass  # then the peak may be that of the imports; rss_base_mb shows it
    return _rss_mb()


def _peak_rss_mb() -> float:
    """Peak resident set size since the last reset, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def load_config(evaluations: int, iterations: int, population: int, seed: int) -> SearchConfig:
    """Return the run's config; raise UsageError when the figures cannot make such a run."""
    if iterations < 1 or population < 2:
        raise UsageError("--iterations must be at least 1 and --population at least 2")
    concurrency = (evaluations - population) // iterations
    if concurrency < 1:
        raise UsageError(f"--evaluations must be at least --population + --iterations "
                         f"({population + iterations}) so that every step scores a child")
    return SearchConfig(
        space="zen-macro", proxy="params", iterations=iterations, population=population,
        concurrency=concurrency, output_form="whole", code_description=False, proxy_code=False,
        designer_model="fake:pending", reflector_model="fake:pending", seed=seed, device="cpu",
        batch_size=8, workers=1,
    )


def draw_architectures(config: SearchConfig, count: int) -> tuple[list[str], list[str]]:
    """Return (initial population, ``count - population`` fresh cells), pairwise distinct.

    The initial population repeats ``init_population``'s draws (same RNG, same de-duplication),
    so the graph meets exactly these architectures and finds each in the cache.
    """
    from tools.spaces import get_space

    space = get_space(config.space)
    init_rng, initial, taken = _rng(config, "init"), [], set()
    while len(initial) < config.population:
        arch = space.sample(init_rng)
        canonical = space.canonical(arch)
        if canonical not in taken:
            taken.add(canonical)
            initial.append(arch)
    rng, fresh = random.Random(f"load-resume:{config.seed}"), []
    while len(initial) + len(fresh) < count:
        arch = space.sample(rng)
        canonical = space.canonical(arch)
        if canonical not in taken:
            taken.add(canonical)
            fresh.append(arch)
    return initial, fresh


def fill_score_cache(config: SearchConfig, run_dir: Path, archs: list[str], seed: int) -> int:
    """Store a made-up ``params`` outcome for each architecture, under the evaluator's cache key."""
    rng = random.Random(f"load-resume-scores:{seed}")
    with open_evaluator(config, run_dir) as evaluator:
        ctx, version = evaluator._ctx, evaluator.proxy_versions[config.proxy]
        for arch in archs:
            canonical = evaluator.space.canonical(arch)
            params = rng.randrange(50_000, 5_000_000)
            evaluator.cache.put_candidate(ctx, canonical, params, params * 40)
            evaluator.cache.put_scores(ctx, canonical, {
                config.proxy: (version, CachedScore(float(params), None, None))})
        return evaluator.cache.counts()["scores"]


def build_run(run_dir: Path, *, evaluations: int, iterations: int, population: int = 100,
              seed: int = 0) -> dict[str, Any]:
    """Write a finished run of ``iterations`` steps into ``run_dir``; return what was built."""
    config = load_config(evaluations, iterations, population, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    initial, fresh = draw_architectures(config, evaluations)
    cached = fill_score_cache(config, run_dir, initial + fresh, seed)
    filled = time.perf_counter()
    children = fresh[: iterations * config.concurrency]
    script = run_dir / "fake_script.json"
    script.write_text(json.dumps({
        "designer": [json.dumps({"arch": arch, "rationale": f"load test proposal {i}"})
                     for i, arch in enumerate(children)],
        "reflector": {"replies": [REFLECTION], "repeat": True},
    }))
    config.designer_model = config.reflector_model = f"fake:{script}"
    outcome = run_search(config, run_dir, resume=False, trace_mode="quiet",
                         console=Console(file=io.StringIO()))
    return {
        "cached_evaluations": cached,
        "iterations": outcome.summary["iterations"],
        "concurrency": config.concurrency,
        "run_evaluations": outcome.summary["evaluations"],
        "cache_hits": outcome.summary["cache_hits"],
        "invalid_proposals": outcome.summary["invalid_proposals"],
        "fill_cache_s": round(filled - started, 2),
        "search_s": round(time.perf_counter() - filled, 2),
    }


# -- the measured phases (each run in its own process by main) -------------------------------------


def measure_resume(run_dir: Path) -> dict[str, Any]:
    """Open the run as ``run_search(resume=True)`` does, up to the next iteration; then verify."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from graphs.search import build_graph
    from graphs.trace import TraceWriter
    from tools.proxies import get_proxy
    from tools.spaces import get_space

    base, started = _reset_peak_rss(), time.perf_counter()
    config = load_run_config(run_dir)
    validate_config(config)
    with ExitStack() as stack:  # the steps and their order of run_search, up to graph.stream
        connection = _open_checkpoints(run_dir, resume=True)
        stack.callback(connection.close)
        graph = build_graph(checkpointer=SqliteSaver(connection))
        snapshot = _saved_state(graph, run_dir)
        stack.enter_context(TraceWriter(run_dir, mode="quiet", total_iterations=config.iterations))
        _build_agents(config, run_dir, stack, get_space(config.space), get_proxy(config.proxy))
        evaluator = stack.enter_context(open_evaluator(config, run_dir))
        state = snapshot.values
        seconds = time.perf_counter() - started
        peak = _peak_rss_mb()
        # Not timed: would anything the run already scored be scored again?
        archs = [outcome["arch"] for outcome in state.get("evaluated", {}).values()]
        results = evaluator.evaluate(archs)
        return {
            "seconds": round(seconds, 3),
            "peak_rss_mb": round(peak, 1),
            "rss_base_mb": round(base, 1),
            "iteration": state.get("iteration", 0),
            "population": len(state.get("population", [])),
            "history": len(state.get("history", [])),
            "reflections": len(state.get("reflections", [])),
            "progress": len(state.get("progress", [])),
            "evaluated": len(state.get("evaluated", {})),
            "next": list(snapshot.next),
            "cache_rows": evaluator.cache.counts(),
            "rescored": sum(not r.cached for r in results),
            "worker_runs": evaluator.stats["evaluated"],
        }


def measure_trace(run_dir: Path) -> dict[str, Any]:
    """Fold events.jsonl into the trace's view and line per event, as ``--plain`` renders a run.

    Each event goes through what ``TraceWriter.emit`` does to show it (redaction, the
    ``RunView`` fold, the plain line), without rewriting the file or printing.
    """
    from graphs.events import RunView, iter_events, plain_line, redact

    base, started = _reset_peak_rss(), time.perf_counter()
    view, events, chars = RunView(None), 0, 0
    for event in iter_events(run_dir / "events.jsonl"):
        event = redact(event)
        view.update(event)
        chars += len(plain_line(event, view)[0])
        events += 1
    return {"seconds": round(time.perf_counter() - started, 3),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_base_mb": round(base, 1),
            "events": events, "line_chars": chars}


def measure_report(run_dir: Path) -> dict[str, Any]:
    """Rewrite the run's reports from its events, as the end of ``run_search`` does."""
    from graphs.events import iter_events
    from graphs.report import render_summary, write_reports

    base, started = _reset_peak_rss(), time.perf_counter()
    summary = json.loads((run_dir / "summary.json").read_text())
    population = json.loads((run_dir / "population.json").read_text())
    write_reports(run_dir, summary, iter_events(run_dir / "events.jsonl"), population)
    render_summary(summary)
    return {"seconds": round(time.perf_counter() - started, 3),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_base_mb": round(base, 1)}


MEASURES = {"resume": measure_resume, "trace": measure_trace, "report": measure_report}


def run_phase(phase: str, run_dir: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its figures."""
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--keep",
               str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {phase} measurement failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def checkpoint_figures(run_dir: Path) -> dict[str, Any]:
    """Count the checkpoints and give the size of the latest top-level one."""
    with sqlite3.connect(run_dir / CHECKPOINTS) as db:
        count, total = db.execute(
            "SELECT COUNT(*), SUM(LENGTH(checkpoint)) FROM checkpoints").fetchone()
        latest = db.execute("SELECT LENGTH(checkpoint) FROM checkpoints WHERE checkpoint_ns = '' "
                            "ORDER BY checkpoint_id DESC LIMIT 1").fetchone()
        writes = db.execute("SELECT COUNT(*), SUM(LENGTH(value)) FROM writes").fetchone()
    return {"checkpoints": count, "checkpoint_bytes": total or 0,
            "latest_checkpoint_bytes": latest[0] if latest else 0,
            "writes": writes[0], "write_bytes": writes[1] or 0}


#: What each kind of saved step is, as rows of checkpoints.sqlite (oldest first).
GROWTH_QUERIES = {
    "step": "SELECT LENGTH(checkpoint) FROM checkpoints WHERE checkpoint_ns = '' ORDER BY rowid",
    "branch": "SELECT LENGTH(checkpoint) FROM checkpoints WHERE checkpoint_ns != '' ORDER BY rowid",
    # The Send packets that start the branches (LangGraph's TASKS channel).
    "send": "SELECT LENGTH(value) FROM writes WHERE channel = '__pregel_tasks' ORDER BY rowid",
}


def checkpoint_growth(run_dir: Path) -> dict[str, dict[str, float]]:
    """Median bytes per saved step in the first and the last fifth of the run, per kind.

    A checkpoint that holds the run's history grows with it (``ratio`` well above 1); one that
    holds only the step's own news stays the same size.
    """
    growth = {}
    with sqlite3.connect(run_dir / CHECKPOINTS) as db:
        for kind, query in GROWTH_QUERIES.items():
            sizes = [row[0] or 0 for row in db.execute(query)]
            fifth = max(1, len(sizes) // 5)
            early = statistics.median(sizes[fifth: 2 * fifth] or sizes[:1] or [0])
            late = statistics.median(sizes[-fifth:] or [0])
            growth[kind] = {"early_bytes": early, "late_bytes": late,
                            "ratio": round(late / early, 2) if early else None}
    return growth


def file_sizes(run_dir: Path) -> dict[str, int]:
    """Bytes per run file (SQLite files with their WAL)."""
    sizes = {}
    for name in RUN_FILES:
        parts = [run_dir / name, run_dir / f"{name}-wal"]
        sizes[name] = sum(p.stat().st_size for p in parts if p.exists())
    return sizes


def benchmark(run_dir: Path, *, evaluations: int, iterations: int, population: int,
              seed: int) -> dict[str, Any]:
    """Build the run, then measure each phase in its own process."""
    built = build_run(run_dir, evaluations=evaluations, iterations=iterations,
                      population=population, seed=seed)
    figures = {phase: run_phase(phase, run_dir) for phase in PHASES}
    return {"run_dir": str(run_dir), "build": built, **figures,
            "checkpoint_db": checkpoint_figures(run_dir), "growth": checkpoint_growth(run_dir),
            "file_bytes": file_sizes(run_dir)}


def render(result: dict[str, Any]) -> str:
    """Return the figures as text."""
    b = result["build"]
    lines = [f"run: {b['cached_evaluations']:,} cached evaluations, {b['iterations']:,} iterations "
             f"x concurrency {b['concurrency']} ({b['run_evaluations']:,} scored by the run, "
             f"{b['invalid_proposals']} invalid proposals); built in "
             f"{b['fill_cache_s'] + b['search_s']:.1f} s (cache {b['fill_cache_s']:.1f} s, "
             f"search {b['search_s']:.1f} s)",
             f"{'phase':<8} {'seconds':>8} {'peak RSS MiB':>13} {'base RSS MiB':>13}"]
    for phase in PHASES:
        r = result[phase]
        lines.append(f"{phase:<8} {r['seconds']:>8.2f} {r['peak_rss_mb']:>13.1f} "
                     f"{r['rss_base_mb']:>13.1f}")
    r = result["resume"]
    lines.append(f"resume found iteration {r['iteration']}, {r['evaluated']:,} evaluated, "
                 f"{r['cache_rows']['scores']:,} cached scores; next {r['next'] or 'none'}; "
                 f"{r['rescored']} would be scored again")
    c = result["checkpoint_db"]
    lines.append(f"checkpoints: {c['checkpoints']:,} ({c['checkpoint_bytes'] / 2**20:.1f} MiB), "
                 f"latest {c['latest_checkpoint_bytes'] / 1024:.1f} KiB; writes {c['writes']:,} "
                 f"({c['write_bytes'] / 2**20:.1f} MiB)")
    lines.append("bytes per saved step, early -> late in the run: " + ", ".join(
        f"{kind} {g['early_bytes'] / 1024:.1f} -> {g['late_bytes'] / 1024:.1f} KiB"
        for kind, g in result["growth"].items()))
    lines.append("files: " + ", ".join(f"{name} {size / 2**20:.1f} MiB"
                                       for name, size in result["file_bytes"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the load test; print figures (JSON with ``--json``); 0, or 2 on a usage error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluations", type=int, default=10_000,
                        help="architectures in the score cache (default 10,000)")
    parser.add_argument("--iterations", type=int, default=1_500, help="steps of the run (1,500)")
    parser.add_argument("--population", type=int, default=100, help="population size (100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", metavar="DIR", help="build the run here and keep it")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(MEASURES[args.phase](Path(args.keep))))
        return 0
    try:
        if args.keep:
            run_dir = Path(args.keep)
            if run_dir.exists() and any(run_dir.iterdir()):
                raise UsageError(f"--keep {run_dir} is not empty; name a new directory")
            result = benchmark(run_dir, evaluations=args.evaluations, iterations=args.iterations,
                               population=args.population, seed=args.seed)
        else:
            with tempfile.TemporaryDirectory(prefix="load-resume-") as tmp:
                result = benchmark(Path(tmp) / "run", evaluations=args.evaluations,
                                   iterations=args.iterations, population=args.population,
                                   seed=args.seed)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
