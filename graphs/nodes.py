"""Nodes and routers of the search graph.

Nodes read their collaborators (models, evaluator, search space) from the run's
:class:`SearchContext` (``runtime.context``), report what they did as events through the stream
writer, and return partial state updates. Routers are pure functions of the state.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langgraph.config import get_stream_writer
from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Command, Send, interrupt

from agents.designer import DesignRequest, Designer
from agents.reflector import Reflector, ReflectRequest
from graphs.calibration import calibration
from graphs.config import SearchConfig
from graphs.pareto import update_front
from graphs.state import BranchState, Member, SearchState
from tools.evaluate import EvalResult, Evaluator
from tools.proxies import ProxySpec
from tools.spaces import ArchitectureError, SearchSpace

#: How many random draws initialisation may spend per population slot before giving up.
INIT_DRAWS_PER_SLOT = 20


@dataclass
class SearchContext:
    """Live collaborators of one run; not checkpointed (rebuilt from the config on resume)."""

    config: SearchConfig
    space: SearchSpace
    proxy: ProxySpec
    evaluator: Evaluator
    designer: Designer
    reflector: Reflector | None
    truth: Any = None  # tools.truth.GroundTruth, when --truth is given
    deadline: float | None = None  # time.monotonic() after which the search stops
    started: float = field(default_factory=time.monotonic)
    iterations_at_start: int = 0
    # Canonical forms evaluated so far, as of the last ``select_parents`` (the runner seeds it from
    # the checkpoint on resume). Branches read it here rather than from their state: a copy per
    # branch would put every evaluated architecture into each branch checkpoint.
    seen: frozenset[str] = frozenset()
    # Ground truth per canonical form, for the live calibration (queried once per candidate).
    truth_of: dict[str, float | None] = field(default_factory=dict)


def _emit(event: str, **fields: Any) -> None:
    get_stream_writer()({"event": event, "time": time.time(), **fields})


def _rng(config: SearchConfig, *parts: object) -> random.Random:
    """Return an RNG derived from the seed and ``parts``, so a resumed run draws the same numbers."""
    return random.Random(":".join(str(p) for p in (config.seed, *parts)))


def _better(spec: ProxySpec, a: float, b: float) -> bool:
    return a > b if spec.higher_is_better else a < b


def _rank(spec: ProxySpec, members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda m: m["score"], reverse=spec.higher_is_better)


def _member(result: EvalResult, proxy: str, born: int) -> Member:
    return Member(
        arch=result.arch,
        canonical=result.canonical or result.arch,
        score=float(result.scores[proxy]),
        scores=dict(result.scores),
        params=result.params,
        flops=result.flops,
        born=born,
    )


def _evaluation_event(result: EvalResult, proxy: str, phase: str, iteration: int, **extra: Any) -> None:
    data = result.to_dict()
    _emit(
        "evaluation",
        phase=phase,
        iteration=iteration,
        arch=result.arch,
        canonical=result.canonical,
        ok=result.ok,
        score=result.score(proxy),
        scores=data.get("scores", {}),
        params=result.params,
        flops=result.flops,
        seconds=result.seconds,
        cached=result.cached,
        error=data.get("error"),
        **extra,
    )


def _outcome(result: EvalResult, proxy: str) -> dict:
    """What ``evaluated`` remembers of a candidate."""
    return {
        "arch": result.arch,
        "ok": result.ok,
        "score": result.score(proxy),
        "error": result.error.kind if result.error else None,
    }


def _ground_truth(ctx: SearchContext, arch: str) -> float | None:
    if ctx.truth is None:
        return None
    try:
        return ctx.truth.query(arch, ctx.config.metric)
    except (ArchitectureError, KeyError, ValueError):
        return None


def _progress(ctx: SearchContext, population: list[Member], iteration: int) -> dict:
    ranked = _rank(ctx.proxy, population)
    best = ranked[0]
    return {
        "iteration": iteration,
        "best_score": best["score"],
        "mean_score": statistics.fmean(m["score"] for m in population),
        "best_arch": best["arch"],
        "best_ground_truth": _ground_truth(ctx, best["arch"]),
    }


def count_improvements(proxy: ProxySpec, progress: list[dict]) -> int:
    """Steps after which the best score was better than before (the initial population excluded)."""
    best = [row["best_score"] for row in progress]
    sign = 1 if proxy.higher_is_better else -1
    return sum(1 for a, b in zip(best, best[1:]) if sign * (b - a) > 0)


def over_budget(config: SearchConfig, totals: dict) -> str | None:
    """Return ``budget_usd`` or ``budget_tokens`` when the run's LLM use reached that budget."""
    if config.budget_usd is not None and (totals.get("cost_usd") or 0.0) >= config.budget_usd:
        return "budget_usd"
    if config.budget_tokens is not None and (totals.get("tokens") or 0) >= config.budget_tokens:
        return "budget_tokens"
    return None


def _point(record: dict, iteration: int) -> dict:
    """A candidate as a point of the Pareto front (graphs.pareto)."""
    return {"arch": record["arch"], "canonical": record["canonical"], "score": record["score"],
            "params": record.get("params"), "flops": record.get("flops"), "iteration": iteration}


def _front_update(ctx: SearchContext, points: list[dict]) -> dict:
    """A write to the ``pareto`` delta field (graphs.state.merge_front)."""
    return {"higher_is_better": ctx.proxy.higher_is_better, "points": points}


def _calibration(ctx: SearchContext, evaluated: dict[str, dict]) -> dict | None:
    """Spearman of the proxy against --truth over every candidate scored so far (None: no truth)."""
    if ctx.truth is None:
        return None
    pairs = []
    for canonical, outcome in evaluated.items():
        if not outcome.get("ok") or outcome.get("score") is None:
            continue
        if canonical not in ctx.truth_of:
            ctx.truth_of[canonical] = _ground_truth(ctx, outcome["arch"])
        truth = ctx.truth_of[canonical]
        if truth is not None:
            pairs.append((outcome["score"], truth))
    return calibration(pairs, ctx.proxy.higher_is_better, ctx.config.metric)


def init_population(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Sample and score the initial population (skipped when resuming a run that has one)."""
    if state.get("population"):
        return {}
    ctx = runtime.context
    cfg = ctx.config
    rng = _rng(cfg, "init")
    members: list[Member] = []
    evaluated: dict[str, dict] = {}
    counters = {"evaluations": 0, "cache_hits": 0}
    draws_left = cfg.population * INIT_DRAWS_PER_SLOT
    while len(members) < cfg.population and draws_left > 0:
        batch: dict[str, str] = {}
        while len(members) + len(batch) < cfg.population and draws_left > 0:
            draws_left -= 1
            arch = ctx.space.sample(rng)
            canonical = ctx.space.canonical(arch)
            if canonical not in evaluated and canonical not in batch:
                batch[canonical] = arch
        for result in ctx.evaluator.evaluate(list(batch.values())):
            _evaluation_event(result, cfg.proxy, "init", 0)
            counters["cache_hits" if result.cached else "evaluations"] += 1
            evaluated[result.canonical or result.arch] = _outcome(result, cfg.proxy)
            if result.ok:
                members.append(_member(result, cfg.proxy, 0))
    if not members:
        from graphs.runner import UsageError  # runner imports this module

        # Usually the settings (a budget below every network, a timeout too short), so the CLI
        # answers with one line and exit 2 as the baselines do, not a traceback.
        raise UsageError(
            f"no candidate of the initial population could be scored with {cfg.proxy!r}; "
            "see the evaluation errors in events.jsonl (check --budget-params, --budget-flops, "
            "--eval-timeout and --batch-size)"
        )
    population = _rank(ctx.proxy, members)
    progress = _progress(ctx, population, 0)
    offered = [_point(m, 0) for m in members]
    pareto = update_front([], offered, ctx.proxy.higher_is_better)
    calib = _calibration(ctx, evaluated)
    if calib is not None:
        progress["spearman"] = calib["spearman"]
    _emit(
        "population_updated",
        iteration=0,
        size=len(population),
        best={"arch": population[0]["arch"], "score": population[0]["score"]},
        mean_score=progress["mean_score"],
        top=[{"arch": m["arch"], "score": m["score"]} for m in population[:5]],
        added=[m["arch"] for m in population],
        removed=[],
        best_ground_truth=progress["best_ground_truth"],
        calibration=calib,
        pareto_size=len(pareto),
        evaluations=counters["evaluations"],
        invalid_proposals=0,
        fallbacks=0,
        tokens=0,
        cost_usd=0.0,
        elapsed_s=time.monotonic() - ctx.started,
        eta_s=None,
    )
    return {"population": population, "evaluated": evaluated, "progress": [progress],
            "pareto": _front_update(ctx, offered), "calibration": calib, **counters}


def select_parents(state: SearchState, runtime: Runtime[SearchContext]) -> Command:
    """Draw one parent per parallel slot, uniformly from the population (as in the paper)."""
    ctx = runtime.context
    cfg = ctx.config
    iteration = state.get("iteration", 0) + 1
    population = state["population"]
    best = _rank(ctx.proxy, population)[0]
    history = state.get("history", [])
    recent = [
        {"arch": h["child"], "score": h.get("score"), "error": (h.get("error") or {}).get("message")}
        for h in history[-cfg.history_length :]
        if h.get("child")
    ] if cfg.history_length > 0 else []
    reflections = state.get("reflections", []) if cfg.reflection else []
    latest = reflections[-1]["text"] if reflections else None
    lessons = [r["suggestion"] for r in reflections[-(cfg.lessons + 1) : -1]] if cfg.lessons else []
    ctx.seen = frozenset(state.get("evaluated", {}))
    human = state.get("human_proposal")
    hint = state.get("human_hint")
    sends = []
    for slot in range(cfg.concurrency):
        parent = _rng(cfg, "parent", iteration, slot).choice(population)
        if human and slot == 0:  # the human's architecture takes the first slot of this step
            parent = human["parent"]
        _emit("iteration_started", iteration=iteration, slot=slot,
              parent={"arch": parent["arch"], "score": parent["score"]})
        sends.append(Send("mutate", BranchState(
            iteration=iteration, slot=slot, parent=parent,
            best={"arch": best["arch"], "score": best["score"]}, recent=recent,
            latest_reflection=latest, lessons=lessons,
            attempt=0, feedback=[], proposal=None, result=None,
            pareto=state.get("pareto", []) if cfg.pareto_feedback else [],
            human_hint=hint, human_arch=human["arch"] if human and slot == 0 else None,
        )))
    if human or hint:  # used for this step only
        return Command(goto=sends, update={"human_proposal": None, "human_hint": None})
    return Command(goto=sends)


def _llm_event(ctx: SearchContext, role: str, state: BranchState, attempt: int, temperature: float,
               reply: Any, messages: list[dict], error: str | None, prompt_id: str, model: str,
               request: dict | None = None) -> dict:
    """Emit an ``llm_call`` event and return the counter increments it implies.

    ``request`` (the Designer's ``DesignRequest`` as a dict) goes to messages.jsonl with the
    transcript, so ``benchmarks/prompt_replay.py`` can re-render the same step with other prompts.
    """
    _emit(
        "llm_call", iteration=state["iteration"], slot=state["slot"], role=role, model=model,
        prompt_id=prompt_id, attempt=attempt, temperature=temperature,
        input_tokens=getattr(reply, "input_tokens", 0), output_tokens=getattr(reply, "output_tokens", 0),
        # Of input_tokens, those the server took from its own prompt cache (0 when unreported).
        prompt_cached_tokens=getattr(reply, "prompt_cached_tokens", 0),
        cost_usd=getattr(reply, "cost_usd", 0.0), seconds=getattr(reply, "seconds", 0.0),
        cached=getattr(reply, "cached", False), ok=error is None, error=error,
        # Requests re-sent after a transient failure (429, 5xx, timeout, ...); unknown (null)
        # for a call that failed in the end.
        retries=max(0, reply.attempts - 1) if reply is not None else None,
        messages=messages, response=getattr(reply, "text", ""),
        **({"request": request} if request is not None else {}),
    )
    if reply is None:
        return {"llm_calls": 1}
    return {
        "llm_calls": 1,
        "tokens": reply.input_tokens + reply.output_tokens,
        "cost_usd": reply.cost_usd,
    }


def design(state: BranchState, runtime: Runtime[SearchContext]) -> dict:
    """Ask the Designer for one mutation of the parent; after the retries, mutate at random."""
    ctx = runtime.context
    cfg = ctx.config
    if state.get("human_arch") and not state.get("attempt"):
        proposal = _human_proposal(ctx, state)
        if proposal is not None:
            return {"proposal": proposal, "human_arch": None}
    attempt = state.get("attempt", 0) + 1
    parent = state["parent"]
    iteration, slot = state["iteration"], state["slot"]
    rng = _rng(cfg, "design", iteration, slot, attempt)
    temperature = rng.choice(cfg.temperatures)
    request = DesignRequest(
        parent_arch=parent["arch"], parent_score=parent["score"], iteration=iteration,
        latest_reflection=state.get("latest_reflection"), lessons=list(state.get("lessons", [])),
        history=list(state.get("recent", [])), best=state.get("best"),
        feedback=list(state.get("feedback", [])),
        pareto=list(state.get("pareto") or []), human_hint=state.get("human_hint"),
    )
    seen = ctx.seen | {parent["canonical"]}
    result = ctx.designer.propose(request, seen=seen, temperature=temperature,
                                  seed=rng.randrange(2**31))
    error = None if result.ok else result.reason
    update: dict[str, Any] = {"attempt": attempt}
    update.update(_llm_event(ctx, "designer", state, attempt, temperature, result.reply,
                             result.messages, None if result.reply else error,
                             ctx.designer.prompt.id, ctx.designer.model.name,
                             request=asdict(request)))
    if result.ok:
        changes = ctx.space.diff(parent["arch"], result.child)
        _emit("proposal", iteration=iteration, slot=slot, attempt=attempt, ok=True,
              child=result.child, edit=result.edit, rationale=result.rationale, reason=None,
              fallback=False, changes=changes)
        update["proposal"] = {"child": result.child, "canonical": result.canonical,
                              "edit": result.edit, "rationale": result.rationale,
                              "fallback": False, "changes": changes}
        return update
    _emit("proposal", iteration=iteration, slot=slot, attempt=attempt, ok=False, child=result.child,
          edit=result.edit, rationale=result.rationale, reason=result.reason, fallback=False,
          changes=[])
    update["invalid_proposals"] = 1
    update["feedback"] = [*state.get("feedback", []), result.reason or "invalid proposal"]
    if attempt > cfg.max_retries:
        update["proposal"] = _fallback(ctx, state, seen, rng)
        update["fallbacks"] = 1
    return update


def _human_proposal(ctx: SearchContext, state: BranchState) -> dict | None:
    """The architecture a human wrote at the last pause, checked like a Designer's proposal.

    Returns None (and the Designer is asked as usual) when it is invalid, the parent itself, or
    already evaluated; the event says why.
    """
    parent, arch = state["parent"], state["human_arch"]
    iteration, slot = state["iteration"], state["slot"]
    reason = None
    try:
        child = ctx.space.validate(arch)
        canonical = ctx.space.canonical(child)
    except (ArchitectureError, ValueError, TypeError, RecursionError) as exc:
        child, canonical, reason = arch, None, f"invalid: {exc}"
    if reason is None and canonical == parent["canonical"]:
        reason = "identical to the parent"
    elif reason is None and canonical in ctx.seen:
        reason = "already evaluated"
    if reason is not None:
        _emit("proposal", iteration=iteration, slot=slot, attempt=0, ok=False, child=arch,
              edit=None, rationale="written by a human", reason=f"human edit {reason}; asking "
              "the Designer instead", fallback=False, changes=[], human=True)
        return None
    changes = ctx.space.diff(parent["arch"], child)
    rationale = "written by a human at the last pause (--interactive)"
    _emit("proposal", iteration=iteration, slot=slot, attempt=0, ok=True, child=child, edit=None,
          rationale=rationale, reason=None, fallback=False, changes=changes, human=True)
    return {"child": child, "canonical": canonical, "edit": None, "rationale": rationale,
            "fallback": False, "changes": changes, "human": True}


def _fallback(ctx: SearchContext, state: BranchState, seen: frozenset[str],
              rng: random.Random) -> dict:
    """Return a random one-operation mutation, preferring children not evaluated before."""
    parent = state["parent"]["arch"]
    child = ctx.space.mutate(parent, rng)
    for _ in range(50):
        if ctx.space.canonical(child) not in seen:
            break
        child = ctx.space.mutate(parent, rng)
    changes = ctx.space.diff(parent, child)
    rationale = "random one-operation mutation: the Designer's retries were used up"
    _emit("proposal", iteration=state["iteration"], slot=state["slot"], attempt=state.get("attempt", 0) + 1,
          ok=True, child=child, edit=None, rationale=rationale, reason=None, fallback=True,
          changes=changes)
    return {"child": child, "canonical": ctx.space.canonical(child), "edit": None,
            "rationale": rationale, "fallback": True, "changes": changes}


def route_after_design(state: BranchState) -> Literal["design", "evaluate"]:
    """Retry the Designer until it produced a proposal (the fallback guarantees one)."""
    return "evaluate" if state.get("proposal") else "design"


def evaluate(state: BranchState, runtime: Runtime[SearchContext]) -> dict:
    """Build and score the child in the sandbox (the tool node)."""
    ctx = runtime.context
    proposal = state["proposal"]
    result = ctx.evaluator.evaluate([proposal["child"]])[0]
    _evaluation_event(result, ctx.config.proxy, "search", state["iteration"], slot=state["slot"])
    key = result.canonical or proposal["canonical"] or result.arch
    return {
        "result": result.to_dict(),
        "evaluated": {key: _outcome(result, ctx.config.proxy)},
        ("cache_hits" if result.cached else "evaluations"): 1,
    }


def reflect(state: BranchState, runtime: Runtime[SearchContext]) -> dict:
    """Have the Reflector critique parent -> child, then hand the child record to the search."""
    ctx = runtime.context
    cfg = ctx.config
    parent, proposal, result = state["parent"], state["proposal"], state["result"]
    score = (result.get("scores") or {}).get(cfg.proxy) if result["ok"] else None
    error = result.get("error")
    update: dict[str, Any] = {}
    reflection = None
    if ctx.reflector is not None:
        rng = _rng(cfg, "reflect", state["iteration"], state["slot"])
        temperature = rng.choice(cfg.temperatures)
        outcome = ctx.reflector.reflect(
            ReflectRequest(
                parent_arch=parent["arch"], parent_score=parent["score"],
                child_arch=proposal["child"], child_score=score,
                child_error=f"{error['kind']}: {error['message']}" if error else None,
                rationale=proposal["rationale"], changes=proposal["changes"],
                history=list(state.get("recent", [])), iteration=state["iteration"],
            ),
            temperature=temperature, seed=rng.randrange(2**31),
        )
        update.update(_llm_event(ctx, "reflector", state, 1, temperature, outcome.reply,
                                 outcome.messages, None if outcome.reply else outcome.error,
                                 ctx.reflector.prompt.id, ctx.reflector.model.name))
        if outcome.ok and outcome.reflection is not None:
            reflection = outcome.reflection.model_dump()
        _emit("reflection", iteration=state["iteration"], slot=state["slot"], ok=outcome.ok,
              error=outcome.error, **(reflection or {"what_changed": None, "why": None,
                                                    "suggestion": None}))
    record = {
        "iteration": state["iteration"], "slot": state["slot"],
        "parent": {"arch": parent["arch"], "score": parent["score"]},
        "child": proposal["child"], "canonical": result.get("canonical") or proposal["canonical"],
        "ok": result["ok"], "score": score, "scores": result.get("scores") or {},
        "params": result.get("params"), "flops": result.get("flops"), "error": error,
        "rationale": proposal["rationale"], "changes": proposal["changes"],
        "fallback": proposal["fallback"], "human": bool(proposal.get("human")),
        "attempts": state.get("attempt", 1),
        "reflection": reflection,
    }
    update["children"] = [record]
    return update


def update(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """Add the valid children, drop the weakest members, and decide whether the search is done."""
    ctx = runtime.context
    cfg = ctx.config
    children = sorted(state.get("children", []), key=lambda c: c["slot"])
    iteration = state.get("iteration", 0) + 1
    population = list(state["population"])
    present = {m["canonical"] for m in population}
    added = []
    for child in children:
        if child["ok"] and child["score"] is not None and child["canonical"] not in present:
            member = Member(arch=child["child"], canonical=child["canonical"], score=child["score"],
                            scores=child["scores"], params=child["params"], flops=child["flops"],
                            born=iteration)
            population.append(member)
            present.add(member["canonical"])
            added.append(member["arch"])
    ranked = _rank(ctx.proxy, population)
    kept, removed = ranked[: cfg.population], [m["arch"] for m in ranked[cfg.population :]]
    reflections = [
        {"iteration": iteration, "slot": c["slot"], "suggestion": c["reflection"]["suggestion"],
         "text": (f"Last change: {c['reflection']['what_changed']} Why: {c['reflection']['why']} "
                  f"Suggestion: {c['reflection']['suggestion']}")}
        for c in children if c.get("reflection")
    ]
    progress = _progress(ctx, kept, iteration)
    offered = [_point({**c, "arch": c["child"]}, iteration)
               for c in children if c["ok"] and c["score"] is not None]
    pareto = update_front(state.get("pareto", []), offered, ctx.proxy.higher_is_better)
    calib = _calibration(ctx, state.get("evaluated", {}))
    if calib is not None:
        progress["spearman"] = calib["spearman"]
    stop_reason = None
    if iteration >= cfg.iterations:
        stop_reason = "iterations"
    elif ctx.deadline is not None and time.monotonic() >= ctx.deadline:
        stop_reason = "wall_clock"
    else:
        stop_reason = over_budget(cfg, state)
    elapsed = time.monotonic() - ctx.started
    done_here = max(1, iteration - ctx.iterations_at_start)
    _emit(
        "population_updated", iteration=iteration, size=len(kept),
        best={"arch": kept[0]["arch"], "score": kept[0]["score"]},
        mean_score=progress["mean_score"],
        top=[{"arch": m["arch"], "score": m["score"]} for m in kept[:5]],
        added=added, removed=removed, best_ground_truth=progress["best_ground_truth"],
        calibration=calib, pareto_size=len(pareto),
        improvements=count_improvements(ctx.proxy, [*state.get("progress", []), progress]),
        evaluations=len(state.get("evaluated", {})), invalid_proposals=state.get("invalid_proposals", 0),
        fallbacks=state.get("fallbacks", 0), tokens=state.get("tokens", 0),
        cost_usd=state.get("cost_usd", 0.0), elapsed_s=elapsed,
        eta_s=elapsed / done_here * max(0, cfg.iterations - iteration),
    )
    # Only the tails the prompts read are kept (select_parents): a checkpoint after every step
    # must not carry the whole run. ``[-0:]`` would keep everything, hence the explicit zero.
    history = [*state.get("history", []), *children][-cfg.history_length:] \
        if cfg.history_length > 0 else []
    reflections = [*state.get("reflections", []), *reflections][-(max(cfg.lessons, 0) + 1):]
    result = {
        "population": kept, "iteration": iteration, "children": None, "history": history,
        "reflections": reflections, "progress": [progress], "stop_reason": stop_reason,
        "pareto": _front_update(ctx, offered), "calibration": calib,
    }
    if cfg.interactive:  # what the human is shown at the pause (graphs.nodes.steer)
        result["last_children"] = [_steer_view(c) for c in children]
    return result


def _steer_view(child: dict) -> dict:
    """What the human sees of one child at a pause: enough to judge it and to edit it."""
    reflection = child.get("reflection") or {}
    return {"slot": child["slot"], "parent": child["parent"], "child": child["child"],
            "ok": child["ok"], "score": child["score"],
            "error": (child.get("error") or {}).get("message"), "rationale": child["rationale"],
            "suggestion": reflection.get("suggestion"),
            "member": {"arch": child["child"], "canonical": child["canonical"],
                       "score": child["score"], "scores": child["scores"],
                       "params": child["params"], "flops": child["flops"],
                       "born": child["iteration"]} if child["ok"] and child["score"] is not None
            else None}


def route_after_update(state: SearchState) -> Literal["steer", "__end__"]:
    """Continue until ``update`` recorded a stop reason."""
    return END if state.get("stop_reason") else "steer"


#: Answers a human may give at a pause (``--interactive``).
STEER_ACTIONS = ("accept", "hint", "edit", "stop")


def steer(state: SearchState, runtime: Runtime[SearchContext]) -> dict:
    """With ``--interactive``, pause (a LangGraph interrupt) until a human answers.

    The runner shows ``last_children`` and resumes with ``{"action": ..., "text": ...}``: accept
    (go on), hint (a line for the next Designer call), edit (an architecture to evaluate next,
    instead of asking the Designer; its parent is the child it was edited from when that scored,
    else that child's parent) or stop. A pause is checkpointed: a killed run asks again on resume.
    Without ``--interactive`` this node does nothing.
    """
    ctx = runtime.context
    if not ctx.config.interactive:
        return {}
    children = state.get("last_children") or []
    answer = interrupt({"iteration": state.get("iteration", 0), "children": children,
                        "best": _rank(ctx.proxy, state["population"])[0]["arch"]})
    action = answer.get("action") if isinstance(answer, dict) else None
    text = str(answer.get("text") or "").strip() if isinstance(answer, dict) else ""
    if action not in STEER_ACTIONS:
        action, text = "accept", ""
    _emit("human_steer", iteration=state.get("iteration", 0), action=action, text=text or None)
    if action == "stop":
        return {"stop_reason": "user", "last_children": []}
    if action == "hint" and text:
        return {"human_hint": text, "last_children": []}
    if action == "edit" and text:
        source = next((c for c in children if c.get("child")), None)
        if source is not None:
            parent = source["member"] or _member_of(state["population"], source["parent"]["arch"])
            return {"human_proposal": {"arch": text, "parent": parent}, "last_children": []}
    return {"last_children": []}


def _member_of(population: list[Member], arch: str) -> Member:
    """The population member ``arch`` (the best member when it has left the population)."""
    return next((m for m in population if m["arch"] == arch), population[0])


def route_after_steer(state: SearchState) -> Literal["select_parents", "__end__"]:
    """Stop when the human asked to; otherwise start the next step."""
    return END if state.get("stop_reason") else "select_parents"
