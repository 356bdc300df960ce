"""Baselines on the search graph's terms: random search and regularized evolution (REA).

Both use the graph's search spaces, proxies, sandboxed evaluator (with its SQLite score cache in
the run directory), parameter/FLOP budgets and initial population (the same seeded draws as
``init_population``, so a seed starts every method from the same cells). They write the same run
directory as ``python -m graphs.search``: ``config.json``, ``events.jsonl`` (``run_started``,
``iteration_started``, ``proposal``, ``evaluation``, ``population_updated``, ``run_finished``),
``summary.json`` (same keys; tokens and cost are 0), ``population.json``, ``progress.png`` and
``report.md``.

The budget is the number of unique architectures evaluated (isomorphic cells count once, failed
candidates count): ``summary["evaluations"]``, the figure the graph reports too.

- ``random``: after the initial population, unseen cells drawn uniformly, scored in batches of
  ``population``; the population is the best ``population`` cells seen.
- ``rea`` (Real et al., 2019): aging evolution. Each cycle draws ``sample_size`` members at random,
  mutates the best of them on one edge (an unseen neighbour while one is left) and adds the child;
  the oldest member leaves once the population exceeds ``population``.

The best architecture reported is the best ever scored. Runs are deterministic given the seed, so
running again in the same directory replays from the score cache: that is how an interrupted
baseline resumes and how a larger budget extends a finished one.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from graphs.config import RunSettings, doc_field
from graphs.nodes import INIT_DRAWS_PER_SLOT
from graphs.runner import (CHECKPOINTS, CONFIG_FILE, RunOutcome, UsageError, load_run_truth,
                           open_evaluator, shared_limit_problems)
from graphs.state import Member

METHODS = ("rea", "random")
#: Settings that may differ when a run directory is reused (budget extends; the rest is runtime).
REUSABLE = {"budget", "workers", "device", "eval_timeout_s", "executor", "ray_address", "truth",
            "truth_metric"}
#: Cycles REA may spend per unit of budget before it gives up (every neighbour already seen).
CYCLES_PER_EVALUATION = 20


_doc = doc_field


@dataclass(kw_only=True)
class BaselineConfig(RunSettings):
    """One baseline run; the evaluation fields mean what they mean in ``SearchConfig``."""

    method: str = _doc("rea or random", default="rea")
    space: str = _doc("search space name", default="nb201")
    dataset: str = _doc("dataset the proxies score on", default="cifar10")
    proxy: str = _doc("zero-cost proxy that ranks candidates", default="synflow")
    extra_proxies: tuple[str, ...] = _doc("proxies also scored and reported", default=())
    budget: int = _doc("unique architectures to evaluate", default=200)
    population: int = _doc("population size (random search: batch size)", default=20)
    sample_size: int = _doc("REA tournament size", default=5)
    seed: int = _doc("seed for sampling, tournaments and proxies", default=0)
    batch_size: int = _doc("proxy batch size", default=64)
    device: str = _doc("auto, cpu or cuda", default="auto")
    eval_timeout_s: float = _doc("wall-clock limit per evaluation", default=120.0)
    workers: int = _doc("evaluation worker processes", default=1)
    executor: str = _doc("local or ray", default="local")
    ray_address: str | None = _doc("Ray cluster address", default=None)
    budget_params: float | None = _doc("reject candidates with more parameters", default=None)
    budget_flops: float | None = _doc("reject candidates with more FLOPs", default=None)
    truth: str | None = _doc("NB201 ground-truth file for the report", default=None)
    truth_metric: str | None = _doc("ground-truth column", default=None)



def validate_baseline(config: BaselineConfig) -> None:
    """Raise :class:`UsageError` for anything wrong with ``config`` before work starts."""
    from tools.datasets import get_dataset
    from tools.proxies import get_proxy
    from tools.spaces import get_space

    checks = [
        (config.method in METHODS, f"--method must be one of {', '.join(METHODS)}"),
        (config.budget >= 1, "--budget must be at least 1"),
        (config.population >= 2, "--population must be at least 2"),
        (config.method != "rea" or 1 <= config.sample_size <= config.population,
         "--sample-size must be between 1 and --population"),
        (config.workers >= 1, "--workers must be at least 1"),
        (config.batch_size >= 2, "--batch-size must be at least 2"),
        (config.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        (config.executor in ("local", "ray"), "--executor must be local or ray"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    for message in shared_limit_problems(config):
        raise UsageError(message)
    try:
        get_space(config.space)
        for name in config.proxies:
            get_proxy(name)
        get_dataset(config.dataset)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if config.truth and config.space != "nb201":
        raise UsageError("--truth holds NAS-Bench-201 accuracies; it only applies to --space nb201")


class _Search:
    """The state of one baseline run and the two algorithms over it."""

    def __init__(self, config: BaselineConfig, space, proxy, evaluator, truth, emit) -> None:
        self.config, self.space, self.proxy = config, space, proxy
        self.evaluator, self.truth, self.emit = evaluator, truth, emit
        self.seen: set[str] = set()  # canonical forms evaluated: the budget counts these
        self.population: deque[Member] = deque()
        self.best: Member | None = None
        self.iteration = 0
        self.cache_hits = 0
        self.progress: list[dict] = []
        self.stop_reason = "budget"
        self.started = time.monotonic()

    # -- shared pieces ------------------------------------------------------------------------

    @property
    def evaluations(self) -> int:
        return len(self.seen)

    def ground_truth(self, arch: str | None) -> float | None:
        if self.truth is None or arch is None:
            return None
        try:
            return self.truth.query(arch, self.config.metric)
        except ValueError:  # ArchitectureError and TruthError both are
            return None

    def better(self, a: Member, b: Member) -> bool:
        return a["score"] > b["score"] if self.proxy.higher_is_better else a["score"] < b["score"]

    def ranked(self, members) -> list[Member]:
        return sorted(members, key=lambda m: m["score"], reverse=self.proxy.higher_is_better)

    def score(self, archs: list[str], phase: str, iteration: int) -> list[Member]:
        """Evaluate ``archs`` as one batch, emit their events, return the scored members."""
        members = []
        for result in self.evaluator.evaluate(archs):
            canonical = result.canonical or result.arch
            score = result.score(self.config.proxy)
            self.cache_hits += result.cached
            self.emit({
                "event": "evaluation", "phase": phase, "iteration": iteration,
                **({"slot": 0} if phase == "search" else {}), "arch": result.arch,
                "canonical": result.canonical, "ok": result.ok, "score": score,
                "scores": dict(result.scores), "params": result.params, "flops": result.flops,
                "seconds": result.seconds, "cached": result.cached,
                "error": asdict(result.error) if result.error else None,
                "ground_truth": self.ground_truth(result.arch) if result.ok else None,
            })
            self.seen.add(canonical)
            if result.ok and score is not None:
                member = Member(arch=result.arch, canonical=canonical, score=float(score),
                                scores=dict(result.scores), params=result.params,
                                flops=result.flops, born=iteration)
                members.append(member)
                if self.best is None or self.better(member, self.best):
                    self.best = member
        return members

    def initial_population(self) -> list[Member]:
        """Score the graph's initial population: the same draws as ``nodes.init_population``."""
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:init")  # == graphs.nodes._rng(cfg, "init")
        target = min(cfg.population, cfg.budget)
        members: list[Member] = []
        draws_left = cfg.population * INIT_DRAWS_PER_SLOT
        while len(members) < target and draws_left > 0 and self.evaluations < cfg.budget:
            batch: dict[str, str] = {}
            while (len(members) + len(batch) < target and draws_left > 0
                   and self.evaluations + len(batch) < cfg.budget):
                draws_left -= 1
                arch = self.space.sample(rng)
                canonical = self.space.canonical(arch)
                if canonical not in self.seen and canonical not in batch:
                    batch[canonical] = arch
            members += self.score(list(batch.values()), "init", 0)
        if not members:
            raise UsageError(f"no candidate of the initial population could be scored with "
                             f"{cfg.proxy!r}; see the evaluation errors in events.jsonl")
        return members

    def updated(self, added: list[Member], removed: list[Member]) -> None:
        """Record progress and emit ``population_updated`` (``best`` is the best ever scored)."""
        top = self.ranked(self.population)
        mean = statistics.fmean(m["score"] for m in self.population)
        best = self.best
        truth = self.ground_truth(best["arch"])
        self.progress.append({"iteration": self.iteration, "best_score": best["score"],
                              "mean_score": mean, "best_arch": best["arch"],
                              "best_ground_truth": truth})
        elapsed = time.monotonic() - self.started
        left = max(0, self.config.budget - self.evaluations)
        self.emit({
            "event": "population_updated", "iteration": self.iteration, "size": len(top),
            "best": {"arch": best["arch"], "score": best["score"]}, "mean_score": mean,
            "top": [{"arch": m["arch"], "score": m["score"]} for m in top[:5]],
            "added": [m["arch"] for m in added], "removed": [m["arch"] for m in removed],
            "best_ground_truth": truth, "evaluations": self.evaluations, "invalid_proposals": 0,
            "fallbacks": 0, "tokens": 0, "cost_usd": 0.0, "elapsed_s": elapsed,
            "eta_s": elapsed / max(1, self.evaluations) * left,
        })

    # -- the algorithms -----------------------------------------------------------------------

    def run(self) -> None:
        """Run the configured method until the budget is spent (or nothing new is left)."""
        initial = self.initial_population()
        self.population.extend(initial)
        if self.config.method == "random":
            self.population = deque(self.ranked(self.population)[: self.config.population])
        self.updated(initial, [])
        (self.rea if self.config.method == "rea" else self.random_search)()

    def random_search(self) -> None:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:random")
        while self.evaluations < cfg.budget:
            want = min(cfg.population, cfg.budget - self.evaluations)
            batch: dict[str, str] = {}
            for _ in range(want * INIT_DRAWS_PER_SLOT):
                if len(batch) == want:
                    break
                arch = self.space.sample(rng)
                canonical = self.space.canonical(arch)
                if canonical not in self.seen and canonical not in batch:
                    batch[canonical] = arch
            if not batch:
                self.stop_reason = "exhausted"
                return
            self.iteration += 1
            added = self.score(list(batch.values()), "search", self.iteration)
            before = {m["canonical"] for m in self.population}
            merged = self.ranked([*self.population, *added])
            self.population = deque(merged[: cfg.population])
            kept = {m["canonical"] for m in self.population}
            self.updated([m for m in added if m["canonical"] in kept],
                         [m for m in merged[cfg.population:] if m["canonical"] in before])

    def rea(self) -> None:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:rea")
        cycles_left = CYCLES_PER_EVALUATION * cfg.budget
        while self.evaluations < cfg.budget:
            if cycles_left == 0:
                self.stop_reason = "exhausted"
                return
            cycles_left -= 1
            self.iteration += 1
            size = min(cfg.sample_size, len(self.population))
            contenders = rng.sample(list(self.population), size)
            parent = contenders[0]
            for m in contenders[1:]:
                parent = m if self.better(m, parent) else parent
            self.emit({"event": "iteration_started", "iteration": self.iteration, "slot": 0,
                       "parent": {"arch": parent["arch"], "score": parent["score"]}})
            child = self.mutate(parent["arch"], rng)
            self.emit({
                "event": "proposal", "iteration": self.iteration, "slot": 0, "attempt": 1,
                "ok": True, "child": child, "edit": None, "reason": None, "fallback": False,
                "rationale": f"REA: one-edge mutation of the best of {len(contenders)} members "
                             "drawn at random",
                "changes": self.space.diff(parent["arch"], child),
            })
            added = self.score([child], "search", self.iteration)
            removed = []
            self.population.extend(added)
            while len(self.population) > cfg.population:
                removed.append(self.population.popleft())  # aging: the oldest leaves
            self.updated(added, removed)

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Return a one-edge mutation of ``arch``, an unseen one while any is left."""
        neighbours = getattr(self.space, "neighbours", None)
        if neighbours is not None:
            options = neighbours(arch)
            rng.shuffle(options)
            for child in options:
                if self.space.canonical(child) not in self.seen:
                    return child
            return options[0]
        child = self.space.mutate(arch, rng)
        for _ in range(50):
            if self.space.canonical(child) not in self.seen:
                break
            child = self.space.mutate(arch, rng)
        return child


def _raise_interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C: stop cleanly and report
    raise KeyboardInterrupt


def _check_run_dir(config: BaselineConfig, run_dir: Path) -> None:
    if (run_dir / CHECKPOINTS).exists():
        raise UsageError(f"{run_dir} holds an RZ-NAS graph run; choose another --output")
    try:
        saved = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return
    now = config.to_dict()
    changed = sorted(k for k in set(saved) | set(now) if k not in REUSABLE
                     and saved.get(k) != now.get(k))
    if changed:
        raise UsageError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                         "choose another --output")


def command_line(config: BaselineConfig, run_dir: Path, **override: Any) -> str:
    """Return the ``python -m graphs.baselines`` command that (re)runs ``config`` in ``run_dir``."""
    values = {**config.to_dict(), **override}
    defaults = BaselineConfig().to_dict()
    words = ["python -m graphs.baselines", f"--method {config.method}",
             f"--proxy {','.join(config.proxies)}"]
    for name, value in values.items():
        if name in ("method", "proxy", "extra_proxies"):
            continue
        if value != defaults[name] or name in ("budget", "seed"):
            flag = {"eval_timeout_s": "eval-timeout"}.get(name, name.replace("_", "-"))
            words.append(f"--{flag} {value:g}" if isinstance(value, float) else f"--{flag} {value}")
    return " ".join([*words, f"--output {run_dir}"])


def run_baseline(config: BaselineConfig, run_dir: Path, *, trace_mode: str = "quiet",
                 console=None) -> RunOutcome:
    """Run ``config`` in ``run_dir`` (replaying from its score cache if any); write reports."""
    from graphs.report import render_summary, write_reports
    from graphs.trace import TraceWriter, read_events
    from tools.proxies import get_proxy
    from tools.spaces import get_space

    validate_baseline(config)
    truth = load_run_truth(config)
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _check_run_dir(config, run_dir)
        (run_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        for name in ("events.jsonl", "messages.jsonl", "summary.json"):  # a rerun replays them
            (run_dir / name).unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the run directory {run_dir}: {exc.strerror}") from exc
    space, proxy = get_space(config.space), get_proxy(config.proxy)
    cycles = max(1, config.budget - config.population)
    total = cycles if config.method == "rea" else -(-cycles // config.population)
    with ExitStack() as stack:
        trace = stack.enter_context(TraceWriter(run_dir, mode=trace_mode, console=console,
                                                total_iterations=total))
        evaluator = stack.enter_context(open_evaluator(config, run_dir))
        search = _Search(config, space, proxy, evaluator, truth, trace.emit)
        trace.emit({"event": "run_started", "run_id": run_dir.name, "run_dir": str(run_dir),
                    "resumed": False, "config": config.to_dict(), "iteration": 0,
                    "models": {}, "prompts": {}, "prompt_sha256": {}, "method": config.method})
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            search.run()
            reason = search.stop_reason
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            signal.signal(signal.SIGTERM, previous)
        if search.best is None:
            raise UsageError("the run stopped before anything was scored; "
                             f"run it again in {run_dir}")
        wall = time.monotonic() - search.started
        summary = _summary(config, search, reason, wall, run_dir)
        trace.emit({"event": "run_finished", "reason": reason, "summary": summary,
                    "iteration": search.iteration})
        trace.close()
        write_reports(run_dir, summary, read_events(run_dir / "events.jsonl"),
                      search.ranked(search.population))
        trace.print_line(render_summary(summary))
    return RunOutcome(run_dir, summary, reason)


def _summary(config: BaselineConfig, search: _Search, reason: str, wall: float,
             run_dir: Path) -> dict[str, Any]:
    best = search.best
    return {
        "best": {
            "arch": best["arch"], "canonical": best["canonical"], "score": best["score"],
            "scores": best["scores"], "params": best["params"], "flops": best["flops"],
            "ground_truth": search.ground_truth(best["arch"]),
            "ground_truth_metric": config.metric if search.truth is not None else None,
        },
        "iterations": search.iteration, "evaluations": search.evaluations,
        "invalid_proposals": 0, "fallbacks": 0, "cache_hits": search.cache_hits, "llm_calls": 0,
        "tokens": 0, "cost_usd": 0.0, "wall_seconds": round(wall, 2), "stop_reason": reason,
        "models": {}, "prompts": {}, "llm_usage": {}, "seed": config.seed, "space": config.space,
        "dataset": config.dataset, "proxy": config.proxy,
        "population_size": len(search.population), "method": config.method,
        "budget": config.budget,
        **({"sample_size": config.sample_size} if config.method == "rea" else {}),
        "progress": search.progress, "run_dir": str(run_dir),
        "resume_command": command_line(config, run_dir),
        "extend_command": command_line(config, run_dir, budget=2 * config.budget),
        "resume_note": ("A baseline is deterministic given its seed: the first command replays "
                        "a stopped run from the score cache; the second doubles the budget:"),
    }


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m graphs.baselines`` (flags mirror BaselineConfig)."""
    from graphs.cli import parse_number, UsageParser

    p = UsageParser(prog="python -m graphs.baselines",
                description="Random search or regularized evolution with the graph's proxies, "
                            "evaluator and run-directory format.")
    add = p.add_argument
    add("--method", choices=METHODS, default="rea")
    add("--space", default="nb201")
    add("--dataset", default="cifar10")
    add("--proxy", default="synflow", help="ranking proxy, optionally followed by reported ones")
    add("--budget", type=int, default=200, help="unique architectures to evaluate (default 200)")
    add("--population", type=int, default=20, help="population size; random search batch (20)")
    add("--sample-size", type=int, default=5, help="REA tournament size (default 5)")
    add("--seed", type=int, default=0)
    add("--batch-size", type=int, default=64, help="proxy batch size (default 64)")
    add("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add("--eval-timeout", dest="eval_timeout_s", type=float, default=120.0)
    add("--workers", type=int, default=1)
    add("--executor", choices=["local", "ray"], default="local")
    add("--ray-address")
    add("--budget-params", type=parse_number, help="reject candidates with more parameters, e.g. 1M")
    add("--budget-flops", type=parse_number, help="reject candidates with more FLOPs, e.g. 200M")
    add("--truth", help="NB201 ground truth (CSV or NASLib JSON) for the report")
    add("--truth-metric", help="ground-truth column (default: the dataset's test accuracy)")
    add("--output", type=Path, required=True, help="run directory")
    add("--plain", action="store_true", help="one line per event")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one baseline; return 0 done, 2 usage error, 130 interrupted."""
    args = vars(build_parser().parse_args(argv))
    output, plain = args.pop("output"), args.pop("plain")
    proxies = [p.strip() for p in args.pop("proxy").split(",") if p.strip()]
    try:
        if not proxies:
            raise UsageError("--proxy names at least one proxy")
        config = BaselineConfig(proxy=proxies[0], extra_proxies=tuple(proxies[1:]), **args)
        outcome = run_baseline(config, output, trace_mode="plain" if plain else "quiet")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 130 if outcome.reason == "interrupted" else 0


if __name__ == "__main__":
    raise SystemExit(main())
