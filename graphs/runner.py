"""Run one search: build the collaborators from a config, stream the graph, save the results.

Everything a user can get wrong (unknown space, proxy, prompt or model, a missing file, a run
directory that already holds a run) raises :class:`UsageError` before any work starts; the CLI
turns it into one line and exit code 2.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from graphs.config import SearchConfig
from graphs.nodes import SearchContext
from graphs.search import build_graph
from graphs.state import new_search_state

THREAD = {"configurable": {"thread_id": "search"}}
CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints.sqlite"


class UsageError(ValueError):
    """A mistake in the user's request; the message names it and the fix."""


@dataclass
class RunOutcome:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    summary: dict[str, Any]
    reason: str


def default_run_dir(config: SearchConfig, root: Path = Path("runs")) -> Path:
    """Return ``runs/<time>-<space>-<proxy>``, unique within the second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / f"{stamp}-{config.space}-{config.proxy}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def load_run_config(run_dir: Path) -> SearchConfig:
    """Read the config saved in ``run_dir``, for ``--resume``."""
    path = run_dir / CONFIG_FILE
    if not (run_dir / CHECKPOINTS).exists() or not path.exists():
        raise UsageError(f"{run_dir} is not a run directory (no {CONFIG_FILE} / {CHECKPOINTS}); "
                         "pass the DIR a previous run printed")
    try:
        return SearchConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable run config ({exc}); start a new run instead") from exc


def validate_config(config: SearchConfig) -> None:
    """Check the cheap things up front so a bad flag never costs a model load."""
    from tools.datasets import get_dataset
    from tools.proxies import get_proxy
    from tools.spaces import get_space

    checks = [
        (config.iterations >= 1, "--iterations must be at least 1"),
        (config.population >= 2, "--population must be at least 2"),
        (config.concurrency >= 1, "--concurrency must be at least 1"),
        (config.max_retries >= 0, "--max-retries must be 0 or more"),
        (config.workers >= 1, "--workers must be at least 1"),
        (config.batch_size >= 2, "--batch-size must be at least 2"),
        (config.output_form in ("edit", "whole"), "--output-form must be 'edit' or 'whole'"),
        (config.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        (config.executor in ("local", "ray"), "--executor must be local or ray"),
        (bool(config.temperatures) and all(0 <= t <= 2 for t in config.temperatures),
         "--temperatures must be numbers between 0 and 2"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    try:
        space = get_space(config.space)
        for name in config.proxies:
            get_proxy(name)
        get_dataset(config.dataset)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if config.output_form == "edit" and space.edit_schema is None:
        raise UsageError(f"the {config.space} space takes whole architectures: use --output-form whole")
    if config.truth and config.space != "nb201":
        raise UsageError("--truth holds NAS-Bench-201 accuracies; it only applies to --space nb201")


def load_run_truth(config: SearchConfig):
    """The ground truth named by --truth, or None; a bad file is a UsageError."""
    if not config.truth:
        return None
    from tools.truth import load_truth

    try:
        truth = load_truth(config.truth)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if config.metric not in truth.metrics:
        raise UsageError(f"--truth-metric {config.metric!r} is not in {config.truth}; "
                         f"available: {', '.join(truth.metrics)}")
    return truth


def _build_agents(config: SearchConfig, run_dir: Path, stack: ExitStack, space, proxy):
    from agents.designer import Designer, PromptSwitches
    from agents.llm_cache import LLMCache
    from agents.models import LLMError, ModelSpecError, check_model, load_chat_model
    from agents.reflector import Reflector
    from prompts import PromptError, load_prompt

    try:
        designer_prompt = load_prompt(config.designer_prompt)
        reflector_prompt = load_prompt(config.reflector_prompt)
    except PromptError as exc:
        raise UsageError(str(exc)) from exc
    if designer_prompt.role != "designer" or reflector_prompt.role != "reflector":
        raise UsageError("--prompt takes a designer@vN and a reflector@vN id")
    cache = LLMCache(run_dir / "llm_cache.sqlite") if config.llm_cache else None
    models: dict[str, Any] = {}
    try:
        for spec in dict.fromkeys((config.designer_model, config.reflector_model)):
            models[spec] = load_chat_model(spec, cache=cache, timeout_s=config.llm_timeout_s)
            check_model(models[spec])
    except ModelSpecError as exc:
        raise UsageError(str(exc)) from exc
    except LLMError as exc:
        raise UsageError(f"model {spec!r} is not usable: {exc.message}") from exc
    for model in models.values():
        if hasattr(model, "close"):
            stack.callback(model.close)
    switches = PromptSwitches(
        text_description=config.text_description, code_description=config.code_description,
        proxy_code=config.proxy_code, reflection=config.reflection,
        history_length=config.history_length, output_form=config.output_form, lessons=config.lessons,
    )
    budgets = ", ".join(
        f"{name} <= {value:g}" for name, value in
        (("params", config.budget_params), ("FLOPs", config.budget_flops)) if value is not None
    )
    designer = Designer(models[config.designer_model], space=space, dataset=config.dataset,
                        proxy=proxy, prompt=designer_prompt, switches=switches, budgets=budgets)
    reflector = None
    if config.reflection:
        reflector = Reflector(models[config.reflector_model], space=space, dataset=config.dataset,
                              proxy=proxy, prompt=reflector_prompt)
    return designer, reflector, models


def open_evaluator(config: SearchConfig, run_dir: Path):
    from tools.evaluate import EvalSettings, Evaluator

    settings = EvalSettings(
        space=config.space, proxies=config.proxies, dataset=config.dataset, seed=config.seed,
        batch_size=config.batch_size, device=config.device, timeout_s=config.eval_timeout_s,
        max_params=config.budget_params, max_flops=config.budget_flops,
    )
    return Evaluator(settings, workers=config.workers, executor=config.executor,
                     cache_path=run_dir / "scores.sqlite", ray_address=config.ray_address)


def _raise_interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C: stop cleanly and save
    raise KeyboardInterrupt


def run_search(config: SearchConfig, run_dir: Path, *, resume: bool, trace_mode: str = "live",
               console=None) -> RunOutcome:
    """Run (or resume) a search in ``run_dir`` and write its reports there."""
    from graphs.report import render_summary, write_reports
    from graphs.trace import TraceWriter, read_events
    from tools.proxies import get_proxy
    from tools.spaces import get_space

    validate_config(config)
    if not resume and (run_dir / CHECKPOINTS).exists():
        raise UsageError(f"{run_dir} already holds a run: resume it with --resume {run_dir} "
                         "or choose another --output")
    truth = load_run_truth(config)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            config.save(run_dir / CONFIG_FILE)
    except OSError as exc:
        raise UsageError(f"cannot write the run directory {run_dir}: {exc.strerror}") from exc
    space, proxy = get_space(config.space), get_proxy(config.proxy)
    previous = _previous_summary(run_dir) if resume else {}
    started = time.monotonic()
    with ExitStack() as stack:
        trace = stack.enter_context(TraceWriter(run_dir, mode=trace_mode, console=console,
                                                total_iterations=config.iterations))
        designer, reflector, models = _build_agents(config, run_dir, stack, space, proxy)
        evaluator = stack.enter_context(open_evaluator(config, run_dir))
        connection = sqlite3.connect(run_dir / CHECKPOINTS, check_same_thread=False)
        stack.callback(connection.close)
        # WAL without an fsync per commit (as the score cache): a killed process loses nothing,
        # only a power cut can drop the last steps; fsyncs were most of the per-step overhead.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        graph = build_graph(checkpointer=SqliteSaver(connection))
        snapshot = graph.get_state(THREAD)
        done = (snapshot.values or {}).get("iteration", 0)
        ctx = SearchContext(
            config=config, space=space, proxy=proxy, evaluator=evaluator, designer=designer,
            reflector=reflector, truth=truth, started=started, iterations_at_start=done,
            deadline=started + config.wall_clock_s if config.wall_clock_s else None,
        )
        if not snapshot.values:
            graph_input: Any = new_search_state()
        elif snapshot.next:
            graph_input = None  # continue the interrupted step
        elif done < config.iterations:
            graph_input = Command(goto="select_parents", update={"stop_reason": None})
        else:
            graph_input = ...  # already complete: only rewrite the reports
        trace.emit({
            "event": "run_started", "run_id": run_dir.name, "run_dir": str(run_dir), "resumed": resume,
            "config": config.to_dict(), "iteration": done,
            "models": {"designer": designer.model.name,
                       "reflector": reflector.model.name if reflector else None},
            "prompts": {"designer": designer.prompt.id,
                        "reflector": reflector.prompt.id if reflector else None},
            "prompt_sha256": {"designer": designer.prompt.sha256,
                              "reflector": reflector.prompt.sha256 if reflector else None},
        })
        reason = "iterations"
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            if graph_input is not ...:
                limit = 4 * (config.iterations - done) + 50 * (config.max_retries + 2)
                # One thread per branch plus LangGraph's own (stream waiter, checkpoint writes):
                # the default pool (CPU count + 4) would run only a few branches at once.
                run_config = {**THREAD, "recursion_limit": max(limit, 100),
                              "max_concurrency": config.concurrency + 4}
                for _, mode, data in graph.stream(
                    graph_input, run_config, context=ctx,
                    stream_mode=["custom"], subgraphs=True, durability="sync",
                ):
                    trace.emit(data)
            reason = graph.get_state(THREAD).values.get("stop_reason") or "iterations"
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
        state = graph.get_state(THREAD).values
        if not state.get("population"):
            raise UsageError("the run stopped before its initial population was scored; "
                             f"resume it with --resume {run_dir}")
        wall = previous.get("wall_seconds", 0.0) + (time.monotonic() - started)
        summary = build_summary(config, state, ctx, models, wall, reason, run_dir)
        trace.emit({"event": "run_finished", "reason": reason, "summary": summary,
                    "iteration": state.get("iteration", 0)})
        trace.close()
        write_reports(run_dir, summary, read_events(run_dir / "events.jsonl"), state["population"])
        trace.print_line(render_summary(summary))
    return RunOutcome(run_dir, summary, reason)


def _previous_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def build_summary(config: SearchConfig, state: dict, ctx: SearchContext, models: dict,
                  wall_seconds: float, reason: str, run_dir: Path) -> dict[str, Any]:
    """Assemble ``summary.json`` from the final state."""
    from graphs.nodes import _ground_truth, _rank

    best = _rank(ctx.proxy, state["population"])[0]
    usage: dict[str, Any] = {}
    for model in models.values():
        for role, figures in model.usage().items():
            usage[role] = figures
    return {
        "best": {
            "arch": best["arch"], "canonical": best["canonical"], "score": best["score"],
            "scores": best["scores"], "params": best["params"], "flops": best["flops"],
            "ground_truth": _ground_truth(ctx, best["arch"]),
            "ground_truth_metric": config.metric if ctx.truth is not None else None,
        },
        "iterations": state.get("iteration", 0),
        # Unique candidates scored: a step re-run after a crash hits the score cache, so the
        # evaluated map, not a counter, is the honest count.
        "evaluations": len(state.get("evaluated", {})),
        "invalid_proposals": state.get("invalid_proposals", 0),
        "fallbacks": state.get("fallbacks", 0),
        "cache_hits": state.get("cache_hits", 0),
        "llm_calls": state.get("llm_calls", 0),
        "tokens": state.get("tokens", 0),
        "cost_usd": round(state.get("cost_usd", 0.0), 6),
        "wall_seconds": round(wall_seconds, 2),
        "stop_reason": reason,
        "models": {"designer": ctx.designer.model.name,
                   "reflector": ctx.reflector.model.name if ctx.reflector else None},
        "prompts": {"designer": {"id": ctx.designer.prompt.id, "sha256": ctx.designer.prompt.sha256},
                    "reflector": ({"id": ctx.reflector.prompt.id, "sha256": ctx.reflector.prompt.sha256}
                                  if ctx.reflector else None)},
        "llm_usage": usage,
        "seed": config.seed,
        "space": config.space,
        "dataset": config.dataset,
        "proxy": config.proxy,
        "population_size": len(state["population"]),
        "progress": state.get("progress", []),
        "run_dir": str(run_dir),
        "resume_command": f"python -m graphs.search --resume {run_dir}",
    }
