"""Run one search: build the collaborators from a config, stream the graph, save the results.

Everything a user can get wrong (unknown space, proxy, prompt or model, a missing file, a run
directory that already holds a run) raises :class:`UsageError` before any work starts; the CLI
turns it into one line and exit code 2.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import sqlite3
import time
import types
import typing
from contextlib import ExitStack
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from graphs.config import SearchConfig
from graphs.nodes import SearchContext, count_improvements, over_budget
from graphs.steering import HumanAnswers
from graphs.search import build_graph
from graphs.state import new_search_state

if typing.TYPE_CHECKING:
    from agents.designer import Designer
    from graphs.trace import TraceWriter

THREAD = {"configurable": {"thread_id": "search"}}
CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints.sqlite"


class UsageError(ValueError):
    """A mistake in the user's request; the message names it and the fix."""


class RunStorageError(RuntimeError):
    """The run directory could not be written (disk full, read-only); ``--resume`` continues."""


#: errno values that mean "this file system will not take the write", not a bug.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                             errno.EIO, errno.EFBIG})
_SQLITE_STORAGE = ("disk is full", "readonly database", "disk I/O error", "unable to open database")
_CHECKPOINT_COLUMNS = {"thread_id", "checkpoint_ns", "checkpoint_id", "checkpoint", "metadata"}


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
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        config = SearchConfig.from_dict(data)
        wrong = wrong_typed_fields(config)
        if wrong:
            raise ValueError(f"{wrong[0]} has the wrong type")
        return config
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable run config ({exc}); start a new run instead") from exc


def _has_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_has_type(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):  # JSON has no int/float split; a bool is never a number here
        wanted = (int,) if hint is int else (int, float)
        return isinstance(value, wanted) and not isinstance(value, bool)
    return isinstance(value, hint)


def wrong_typed_fields(config: Any) -> list[str]:
    """Names of the dataclass fields of ``config`` whose values do not match their annotations."""
    hints = typing.get_type_hints(type(config))
    return [f.name for f in fields(config) if not _has_type(getattr(config, f.name), hints[f.name])]


#: Upper bounds that catch a typo: a huge population or grid would hang before the first step.
MAX_POPULATION = 10_000
MAX_CONCURRENCY = 1_024
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def shared_limit_problems(config: Any) -> list[str]:
    """What is wrong with the numeric settings search and baseline configs share."""
    checks = [
        (config.population <= MAX_POPULATION, f"--population must be at most {MAX_POPULATION}"),
        (0 <= config.seed <= MAX_SEED, f"--seed must be between 0 and {MAX_SEED}"),
        (_positive(config.eval_timeout_s), "--eval-timeout must be a positive number of seconds"),
        *((value is None or _positive(value),
           f"--{name.replace('_', '-')} must be a positive number such as 1.5M")
          for name, value in (("budget_params", config.budget_params),
                              ("budget_flops", config.budget_flops))),
    ]
    return [message for ok, message in checks if not ok]


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
        (config.concurrency <= MAX_CONCURRENCY, f"--concurrency must be at most {MAX_CONCURRENCY}"),
        (config.history_length >= 0, "--history-length must be 0 or more"),
        (config.lessons >= 0, "--lessons must be 0 or more"),
        (_positive(config.llm_timeout_s), "--llm-timeout must be a positive number of seconds"),
        (config.wall_clock_s is None or _positive(config.wall_clock_s),
         "--wall-clock must be a positive number of seconds"),
        (config.budget_usd is None or _positive(config.budget_usd),
         "--budget-usd must be a positive number of US dollars, such as 2.50"),
        (config.budget_tokens is None or _positive(config.budget_tokens),
         "--budget-tokens must be a positive number of tokens, such as 500K"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    for message in shared_limit_problems(config):
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
    from graphs.train_best import check_train_request

    problem = check_train_request(config)  # before the search: not after an hour of it
    if problem:
        raise UsageError(problem)
    from agents.models import ModelSpecError, parse_spec

    for spec in dict.fromkeys((config.designer_model, config.reflector_model)):
        try:  # before config.json is written: a bad string (a password in a URL) must not be saved
            parse_spec(spec)
        except ModelSpecError as exc:
            raise UsageError(str(exc)) from exc


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


def _build_agents(config: SearchConfig, run_dir: Path, stack: ExitStack, space, proxy,
                  extras: RunExtras | None = None):
    from agents.llm_cache import LLMCache, LLMCacheError
    from agents.models import LLMError, ModelSpecError, check_model, load_chat_model
    from agents.reflector import Reflector
    from prompts import PromptError, load_prompt

    try:
        prompts_dir = extras.prompts_dir if extras else None
        designer_prompt = load_prompt(config.designer_prompt, directory=prompts_dir)
        # Without reflection (--no-reflection) the Reflector's prompt is not used, nor bundled.
        reflector_prompt = (load_prompt(config.reflector_prompt, directory=prompts_dir)
                            if config.reflection else None)
    except PromptError as exc:
        raise UsageError(str(exc)) from exc
    if designer_prompt.role != "designer" or (reflector_prompt and reflector_prompt.role != "reflector"):
        raise UsageError("--prompt takes a designer@vN and a reflector@vN id")
    for wanted, variable, flag in ((config.pareto_feedback, "pareto", "--pareto-feedback"),
                                   (config.interactive, "human_hint", "--interactive")):
        if wanted and variable not in designer_prompt.variables:
            raise UsageError(f"{flag} needs a Designer prompt that shows ${variable} "
                             f"({designer_prompt.id} does not): use --prompt "
                             f"{load_prompt('designer', directory=prompts_dir).id}")
    try:
        cache = LLMCache(run_dir / "llm_cache.sqlite") if config.llm_cache else None
    except LLMCacheError as exc:
        if _storage_failure(exc):
            raise
        raise UsageError(
            f"{run_dir / 'llm_cache.sqlite'} is not a usable LLM reply cache (corrupt, or from a "
            f"newer version); move it aside and resume: only replies not yet in the run's "
            f"checkpoints are asked again"
        ) from None
    models: dict[str, Any] = {}
    try:
        for spec in dict.fromkeys((config.designer_model, config.reflector_model)):
            if extras and extras.models and spec in extras.models:
                models[spec] = extras.models[spec]
                continue
            models[spec] = load_chat_model(spec, cache=cache, timeout_s=config.llm_timeout_s)
            check_model(models[spec])
    except ModelSpecError as exc:
        raise UsageError(str(exc)) from exc
    except LLMError as exc:
        raise UsageError(f"model {spec!r} is not usable: {exc.message}") from exc
    for model in models.values():
        if hasattr(model, "close"):
            stack.callback(model.close)
    designer = build_designer(config, models[config.designer_model], space, proxy, designer_prompt)
    reflector = None
    if config.reflection:
        reflector = Reflector(models[config.reflector_model], space=space, dataset=config.dataset,
                              proxy=proxy, prompt=reflector_prompt)
    return designer, reflector, models


def build_designer(config: SearchConfig, model, space, proxy, prompt) -> Designer:
    """Return the Designer a search with ``config`` uses (its prompt switches and budgets)."""
    from agents.designer import Designer, PromptSwitches

    switches = PromptSwitches(
        text_description=config.text_description, code_description=config.code_description,
        proxy_code=config.proxy_code, reflection=config.reflection,
        history_length=config.history_length, output_form=config.output_form, lessons=config.lessons,
        pareto=config.pareto_feedback,
    )
    budgets = ", ".join(
        f"{name} <= {value:g}" for name, value in
        (("params", config.budget_params), ("FLOPs", config.budget_flops)) if value is not None
    )
    return Designer(model, space=space, dataset=config.dataset, proxy=proxy, prompt=prompt,
                    switches=switches, budgets=budgets)


def open_evaluator(config: SearchConfig, run_dir: Path):
    from tools.evaluate import EvalSettings, Evaluator
    from tools.score_cache import ScoreCacheError

    settings = EvalSettings(
        space=config.space, proxies=config.proxies, dataset=config.dataset, seed=config.seed,
        batch_size=config.batch_size, device=config.device, timeout_s=config.eval_timeout_s,
        max_params=config.budget_params, max_flops=config.budget_flops,
    )
    try:
        return Evaluator(settings, workers=config.workers, executor=config.executor,
                         cache_path=run_dir / "scores.sqlite", ray_address=config.ray_address)
    except ScoreCacheError as exc:
        if _storage_failure(exc):
            raise
        raise UsageError(
            f"{run_dir / 'scores.sqlite'} is not a usable score cache (corrupt, or from another "
            "program or version); move it aside and resume: the candidates it held are scored "
            "again"
        ) from None


class _StopOnSignal:
    """SIGINT (Ctrl-C) and SIGTERM during the search: the first stops it after the current step,
    a second one at once.

    Raising KeyboardInterrupt would leave ``graph.stream`` while a branch still runs in a
    LangGraph thread, and a resumed run then applied that branch twice. So the first signal only
    sets the deadline ``update`` checks (as ``--wall-clock`` does) and the run saves as usual. The
    second ends the process as ``kill -9`` would, which ``--resume`` handles: finished steps are
    in the checkpoints, answered calls and scores in the caches.
    """

    def __init__(self, ctx: SearchContext, trace: TraceWriter, run_dir: Path) -> None:
        self.ctx, self.trace, self.run_dir = ctx, trace, run_dir
        self.requested = False

    def __call__(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            self.ctx.deadline = time.monotonic()
            self._say("stopping after the current step; press Ctrl-C again to stop now")
            return
        self._say(f"stopped now; continue with: python -m graphs.search --resume {self.run_dir}")
        os._exit(130)

    def _say(self, line: str) -> None:
        try:
            self.trace.print_line(line)
        except (OSError, RuntimeError):  # the handler may interrupt a write to the same stream
            os.write(2, f"{line}\n".encode())


def _storage_failure(exc: BaseException | None) -> str | None:
    """Return why ``exc`` (or an error it wraps) is a write the disk refused, else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
        if isinstance(exc, sqlite3.OperationalError) and any(
                t in str(exc) for t in _SQLITE_STORAGE):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def _emit_or_stop(trace, event: dict, ctx: SearchContext) -> OSError | None:
    """Record ``event``; if the disk refuses it, have the search stop after this iteration.

    Leaving ``graph.stream`` while a branch still runs in the background can apply that branch's
    result twice on resume, so a full disk ends the run at the next ``update`` (as a wall-clock
    limit would), with everything paid for in the checkpoints and caches.
    """
    try:
        trace.emit(event)
    except OSError as exc:
        if _storage_failure(exc) is None:
            raise
        ctx.deadline = time.monotonic()
        return exc
    return None


def _checkpoint_fix(run_dir: Path) -> str:
    # The caches are keyed by content, so a new run with the same flags replays them.
    return (f"start a new run with the same flags and a new --output holding copies of "
            f"{run_dir / 'scores.sqlite'} and {run_dir / 'llm_cache.sqlite'}: nothing is scored "
            "or paid for again")


def _open_checkpoints(run_dir: Path, resume: bool) -> sqlite3.Connection:
    """Open ``checkpoints.sqlite``; when resuming, refuse (untouched) a file that is not ours."""
    path = run_dir / CHECKPOINTS
    connection = sqlite3.connect(path, check_same_thread=False)
    try:
        if resume:  # check before LangGraph adds its tables to someone else's database
            tables = {row[0] for row in
                      connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            foreign = sorted(tables - {"checkpoints", "writes"})
            if foreign:
                raise UsageError(f"{path} is not an RZ-NAS checkpoint file (it holds the tables "
                                 f"{', '.join(foreign)}); {_checkpoint_fix(run_dir)}")
            columns = {row[1] for row in connection.execute("PRAGMA table_info(checkpoints)")}
            if "checkpoints" in tables and not _CHECKPOINT_COLUMNS <= columns:
                raise UsageError(f"{path} is in an older checkpoint format this version cannot "
                                 f"read; {_checkpoint_fix(run_dir)}")
        # WAL without an fsync per commit (as the score cache): a killed process loses nothing,
        # only a power cut can drop the last steps; fsyncs were most of the per-step overhead.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    except UsageError:
        connection.close()
        raise
    except sqlite3.DatabaseError as exc:
        connection.close()
        if _storage_failure(exc):
            raise
        raise UsageError(f"{path} is not a readable checkpoint database ({exc}); "
                         f"{_checkpoint_fix(run_dir)}") from None
    return connection


def _saved_state(graph, run_dir: Path):
    """Return the saved snapshot; a checkpoint this version cannot decode is a UsageError."""
    try:
        return graph.get_state(THREAD)
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the file is the problem
        if _storage_failure(exc):
            raise
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise UsageError(f"{run_dir / CHECKPOINTS} holds checkpoints this version cannot read "
                         f"({detail}); {_checkpoint_fix(run_dir)}") from None


@dataclass
class RunExtras:
    """What a fork, a replay or a scripted human adds to a run (all optional).

    Attributes:
        fork: start from this point of another run (``--fork``).
        models: chat models by provider string, used instead of loading them (a replay's
            cache-only models).
        fork_state: start from this saved fork point (``fork_state.json`` of a replayed fork)
            instead of reading another run's checkpoints.
        prompts_dir: load prompt files from here instead of the project's ``prompts/``.
        answers: the human's answers at ``--interactive`` pauses, in order (a replay's); None
            reads them from standard input.
        replayed_from: recorded in the summary (``--replay``).
    """

    fork: Any = None  # graphs.fork.ForkPoint
    fork_state: dict | None = None  # a replayed fork's fork_state.json: start from this state
    models: dict[str, Any] | None = None
    prompts_dir: Path | None = None
    answers: list[dict] | None = None
    replayed_from: str | None = None


def run_search(config: SearchConfig, run_dir: Path, *, resume: bool, trace_mode: str = "live",
               console=None, extras: RunExtras | None = None) -> RunOutcome:
    """Run (or resume) a search in ``run_dir`` and write its reports there.

    Raises:
        UsageError: a bad setting or run directory (nothing was done).
        RunStorageError: the run directory stopped taking writes (disk full, read-only); what
            was saved so far stays, and ``--resume`` continues once the directory is writable.
    """
    try:
        return _run_search(config, run_dir, resume=resume, trace_mode=trace_mode, console=console,
                           extras=extras or RunExtras())
    except UsageError:
        raise
    except Exception as exc:
        reason = _storage_failure(exc)
        if reason is None:
            raise
        raise RunStorageError(
            f"cannot write to the run directory {run_dir}: {reason}; free disk space or make it "
            f"writable, then continue with: python -m graphs.search --resume {run_dir}"
        ) from exc


def _fork_source(extras: RunExtras, config: SearchConfig) -> tuple[dict, str]:
    """Read the fork point's state and checkpoint id from the source run (nothing is written)."""
    from graphs.fork import ForkError, forked_state

    point = extras.fork
    source = _open_checkpoints(point.run_dir, resume=True)
    try:
        values, checkpoint_id = forked_state(build_graph(checkpointer=SqliteSaver(source)),
                                             point, THREAD)
    except ForkError as exc:
        raise UsageError(str(exc)) from None
    finally:
        source.close()
    if values["iteration"] >= config.iterations:
        raise UsageError(f"the fork starts after iteration {values['iteration']} and "
                         f"--iterations is {config.iterations}: pass a larger --iterations")
    return values, checkpoint_id


def _run_search(config: SearchConfig, run_dir: Path, *, resume: bool, trace_mode: str,
                console, extras: RunExtras) -> RunOutcome:
    from graphs.report import render_summary, write_reports
    from graphs.events import iter_events
    from graphs.trace import TraceWriter
    from tools.proxies import get_proxy
    from tools.spaces import get_space

    validate_config(config)
    if not resume and (run_dir / CHECKPOINTS).exists():
        raise UsageError(f"{run_dir} already holds a run: resume it with --resume {run_dir} "
                         "or choose another --output")
    truth = load_run_truth(config)
    fork_values = None
    if extras.fork is not None and not resume:  # checked before anything is written
        fork_values, fork_checkpoint = _fork_source(extras, config)
    elif extras.fork_state is not None and not resume:
        fork_values = extras.fork_state["values"]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # On resume too: the flags a resume may change (a raised --iterations, --train-best)
        # must hold for the next resume as well.
        config.save(run_dir / CONFIG_FILE)
    except OSError as exc:
        raise UsageError(f"cannot write the run directory {run_dir}: {exc.strerror}") from exc
    space, proxy = get_space(config.space), get_proxy(config.proxy)
    previous = _previous_summary(run_dir) if resume else {}
    if extras.fork is not None and fork_values is not None:
        from graphs.fork import ForkError, copy_caches

        try:  # before the caches are opened below
            copy_caches(extras.fork.run_dir, run_dir, llm_cache=config.llm_cache)
        except ForkError as exc:
            raise UsageError(str(exc)) from None
    started = time.monotonic()
    with ExitStack() as stack:
        # The saved state first: a resume that cannot continue should not load a model.
        connection = _open_checkpoints(run_dir, resume)
        stack.callback(connection.close)
        graph = build_graph(checkpointer=SqliteSaver(connection))
        forked_from = previous.get("forked_from")
        if fork_values is not None:
            from graphs.fork import ForkPoint, record_lineage, save_fork_state

            front = {"higher_is_better": proxy.higher_is_better,  # a delta field's write
                     "points": fork_values.get("pareto") or []}
            graph.update_state(THREAD, {**fork_values, "pareto": front}, as_node="update")
            if extras.fork is not None:
                forked_from = record_lineage(ForkPoint(extras.fork.run_dir, fork_values["iteration"]),
                                             fork_checkpoint, run_dir)
            else:
                forked_from = extras.fork_state["forked_from"]
            save_fork_state(run_dir, forked_from, fork_values)
        snapshot = _saved_state(graph, run_dir)
        trace = stack.enter_context(TraceWriter(run_dir, mode=trace_mode, console=console,
                                                total_iterations=config.iterations))
        designer, reflector, models = _build_agents(config, run_dir, stack, space, proxy, extras)
        evaluator = stack.enter_context(open_evaluator(config, run_dir))
        done = (snapshot.values or {}).get("iteration", 0)
        ctx = SearchContext(
            config=config, space=space, proxy=proxy, evaluator=evaluator, designer=designer,
            reflector=reflector, truth=truth, started=started, iterations_at_start=done,
            deadline=started + config.wall_clock_s if config.wall_clock_s else None,
            seen=frozenset((snapshot.values or {}).get("evaluated", {})),  # for a resumed branch
        )
        if not snapshot.values or ("population" not in snapshot.values and not snapshot.next):
            # Nothing saved, or a state from before the first population with nothing pending
            # (seen once after a SIGKILL during start-up): start over; the caches make it free.
            graph_input: Any = new_search_state()
        elif snapshot.next:
            graph_input = None  # continue the interrupted step
        elif done < config.iterations and not over_budget(config, snapshot.values):
            graph_input = Command(goto="select_parents", update={"stop_reason": None})
        else:
            graph_input = ...  # already complete (or still at its budget): only rewrite reports
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
        trace_failure: OSError | None = None
        stop = _StopOnSignal(ctx, trace, run_dir)
        previous_handlers = {sig: signal.signal(sig, stop)
                             for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if graph_input is not ...:
                limit = 4 * (config.iterations - done) + 50 * (config.max_retries + 2)
                # One thread per branch plus LangGraph's own (stream waiter, checkpoint writes):
                # the default pool (CPU count + 4) would run only a few branches at once.
                run_config = {**THREAD, "recursion_limit": max(limit, 100),
                              "max_concurrency": config.concurrency + 4}
                human = HumanAnswers(trace, space, extras.answers)
                while True:
                    for _, mode, data in graph.stream(
                        graph_input, run_config, context=ctx,
                        stream_mode=["custom"], subgraphs=True, durability="sync",
                    ):
                        if trace_failure is None:
                            trace_failure = _emit_or_stop(trace, data, ctx)
                    pause = graph.get_state(THREAD).interrupts
                    if not pause or trace_failure is not None or stop.requested:
                        break
                    # --interactive: the graph waits in ``steer`` for a human answer
                    graph_input = Command(resume=human.ask(pause[0].value))
            reason = graph.get_state(THREAD).values.get("stop_reason") or "iterations"
            if graph_input is ... and done < config.iterations and over_budget(config, snapshot.values):
                reason = over_budget(config, snapshot.values)
                trace.print_line(_budget_line(config, snapshot.values, run_dir))
            if stop.requested and reason != "iterations":
                reason = "interrupted"
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        if trace_failure is not None:
            raise trace_failure
        state = graph.get_state(THREAD).values
        if not state.get("population"):
            raise UsageError("the run stopped before its initial population was scored; "
                             f"resume it with --resume {run_dir}")
        wall = previous.get("wall_seconds", 0.0) + (time.monotonic() - started)
        summary = build_summary(config, state, ctx, models, wall, reason, run_dir,
                                earlier_usage=previous.get("llm_usage") or {})
        summary["forked_from"] = forked_from
        if extras.replayed_from:
            summary["replayed_from"] = extras.replayed_from
        trace.emit({"event": "run_finished", "reason": reason, "summary": summary,
                    "iteration": state.get("iteration", 0)})
        trace.close()
        write_reports(run_dir, summary, iter_events(run_dir / "events.jsonl"), state["population"])
        trace.print_line(render_summary(summary))
        if reason in ("budget_usd", "budget_tokens") and graph_input is not ...:
            trace.print_line(_budget_line(config, state, run_dir))
    if config.train_best and reason != "interrupted":
        reason = _train_best_into(config, run_dir, summary, state["population"], trace_mode)
    return RunOutcome(run_dir, summary, reason)


def _budget_line(config: SearchConfig, state: dict, run_dir: Path) -> str:
    """Say which budget stopped the run and how to continue it."""
    if over_budget(config, state) == "budget_usd":
        spent, flag = f"${state.get('cost_usd', 0.0):.4f} of ${config.budget_usd:g}", "--budget-usd"
    else:
        spent, flag = f"{state.get('tokens', 0):,} of {config.budget_tokens:,} tokens", "--budget-tokens"
    return (f"stopped at the LLM budget ({spent}); continue with: python -m graphs.search "
            f"--resume {run_dir} {flag} <higher>")


def _train_best_into(config: SearchConfig, run_dir: Path, summary: dict, population: list[dict],
                     trace_mode: str) -> str:
    """Train the best architecture, add the result to the reports; return the stop reason."""
    from graphs.events import iter_events
    from graphs.report import write_reports
    from graphs.train_best import train_best

    if trace_mode != "quiet":
        print(f"training the best architecture for {config.train_best} epochs on "
              f"{config.dataset} (python -m tools.train)", flush=True)
    try:
        summary["trained"] = train_best(config, run_dir, summary["best"]["arch"],
                                        plain=trace_mode == "plain", quiet=trace_mode == "quiet")
    except KeyboardInterrupt:
        print(f"training interrupted; continue it with: python -m graphs.search --resume {run_dir}",
              flush=True)
        return "interrupted"
    write_reports(run_dir, summary, iter_events(run_dir / "events.jsonl"), population)
    if trace_mode != "quiet":
        trained = summary["trained"]
        print(f"trained: test accuracy {trained['test_accuracy']:.2f}% after {trained['epochs']} "
              f"epochs ({trained['output']}/metrics.json)", flush=True)
    return summary["stop_reason"]


def _previous_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _improvement_costs(proxy, state: dict) -> dict[str, Any]:
    """How often the best score improved during the search, and the LLM cost per improvement."""
    improvements = count_improvements(proxy, state.get("progress", []))
    cost, tokens = state.get("cost_usd", 0.0), state.get("tokens", 0)
    return {
        "improvements": improvements,
        "cost_per_improvement_usd": round(cost / improvements, 6) if improvements else None,
        "tokens_per_improvement": round(tokens / improvements) if improvements else None,
    }


def build_summary(config: SearchConfig, state: dict, ctx: SearchContext, models: dict,
                  wall_seconds: float, reason: str, run_dir: Path,
                  earlier_usage: dict | None = None) -> dict[str, Any]:
    """Assemble ``summary.json`` from the final state.

    ``earlier_usage`` is the ``llm_usage`` of the summary an earlier session of this run wrote;
    its counters are added to this session's, so a resumed run reports all of its sessions
    (except one killed before it could write a summary: the state's tokens and cost still count it).
    """
    from graphs.nodes import _ground_truth, _rank

    best = _rank(ctx.proxy, state["population"])[0]
    current = {role: figures for model in models.values() for role, figures in model.usage().items()}
    earlier = {role: f for role, f in (earlier_usage or {}).items() if isinstance(f, dict)}
    usage: dict[str, Any] = {}
    for role in dict.fromkeys([*earlier, *current]):
        now, before = current.get(role, {}), earlier.get(role, {})
        usage[role] = {**before, **now}
        for key in usage[role]:
            if all(isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool)
                   for d in (now, before)):
                usage[role][key] = now[key] + before[key]
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
        "budget": {"usd": config.budget_usd, "tokens": config.budget_tokens},
        **_improvement_costs(ctx.proxy, state),
        "calibration": state.get("calibration"),
        "pareto": state.get("pareto", []),
        "seed": config.seed,
        "space": config.space,
        "dataset": config.dataset,
        "proxy": config.proxy,
        "population_size": len(state["population"]),
        "progress": state.get("progress", []),
        "run_dir": str(run_dir),
        "resume_command": f"python -m graphs.search --resume {run_dir}",
    }
