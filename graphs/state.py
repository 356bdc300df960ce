"""Typed state of the search graph and of one mutation branch.

Everything in state is plain JSON-able data (dicts, lists, numbers, strings) so checkpoints stay
readable across library versions. Counters use ``operator.add`` reducers: each branch reports
increments and the graph sums them.

A checkpoint after every step must not grow with the run (1,500 iterations, ~10,000
evaluations): ``evaluated`` and ``progress``, which the summary needs whole, are LangGraph
``DeltaChannel`` fields (a checkpoint stores only the step's new entries, plus a full snapshot
every ``DELTA_SNAPSHOT_EVERY`` updates); ``history`` and ``reflections``, of which the prompts only
use the tail, are replaced whole by ``update`` with just that tail (see ``graphs.nodes.update``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langgraph.channels import DeltaChannel

#: Updates of a delta field between two full snapshots of it in the checkpoints.
DELTA_SNAPSHOT_EVERY = 100


def collect_children(current: list[dict] | None, update: list[dict] | None) -> list[dict]:
    """Reducer for ``children``: branches append their child; ``None`` (from ``update``) empties it."""
    if update is None:
        return []
    return (current or []) + update


def merge_evaluated(current: dict | None, updates: Sequence[dict | None]) -> dict:
    """Delta reducer for ``evaluated``: canonical architecture -> outcome, later writes win."""
    merged = dict(current or {})
    for update in updates:
        merged.update(update or {})
    return merged


def append_records(current: list[dict] | None, updates: Sequence[list[dict] | None]) -> list[dict]:
    """Delta reducer for ``progress``: each write appends its records."""
    merged = list(current or [])
    for update in updates:
        merged.extend(update or [])
    return merged


def merge_front(current: list[dict] | None, updates: Sequence[dict | None]) -> list[dict]:
    """Delta reducer for ``pareto``: each write ``{"higher_is_better", "points"}`` offers points.

    The front is replaced, not appended to, but as a delta field a checkpoint stores only the
    points a step offered (the front itself can hold hundreds of points after a long run).
    """
    from graphs.pareto import update_front

    front = list(current or [])
    for update in updates:
        if update and update.get("points"):
            front = update_front(front, update["points"], bool(update["higher_is_better"]))
    return front


class Member(TypedDict):
    """A scored architecture in the population."""

    arch: str
    canonical: str
    score: float
    scores: dict[str, float]
    params: int | None
    flops: int | None
    born: int  # iteration that produced it (0: initial population)


class BranchOutput(TypedDict, total=False):
    """What a mutation branch hands back to the search: its child and its counters."""

    children: Annotated[list[dict], collect_children]
    evaluated: Annotated[dict[str, dict],
                         DeltaChannel(merge_evaluated, snapshot_frequency=DELTA_SNAPSHOT_EVERY)]
    invalid_proposals: Annotated[int, operator.add]
    fallbacks: Annotated[int, operator.add]
    evaluations: Annotated[int, operator.add]
    cache_hits: Annotated[int, operator.add]
    tokens: Annotated[int, operator.add]
    cost_usd: Annotated[float, operator.add]
    llm_calls: Annotated[int, operator.add]


class SearchState(BranchOutput, total=False):
    """State of the whole search, checkpointed after every step."""

    population: list[Member]
    iteration: int  # completed iterations
    # The latest --lessons + 1 reflections: {"iteration", "slot", "text", "suggestion"}
    reflections: list[dict]
    history: list[dict]  # the latest --history-length child records, see graphs.nodes.reflect
    progress: Annotated[list[dict],  # per iteration: best, mean, ground truth
                        DeltaChannel(append_records, snapshot_frequency=DELTA_SNAPSHOT_EVERY)]
    stop_reason: str | None
    # Non-dominated (score, params, FLOPs) points of every candidate scored (graphs.pareto).
    pareto: Annotated[list[dict],
                      DeltaChannel(merge_front, snapshot_frequency=DELTA_SNAPSHOT_EVERY)]
    # Running Spearman of the proxy against --truth over the candidates scored (graphs.calibration).
    calibration: dict | None
    # --interactive: the step's child records for the human, and what the human asked for the next
    # step (a hint for the Designer, an architecture to evaluate instead of asking it).
    last_children: list[dict]
    human_hint: str | None
    human_proposal: dict | None  # {"arch", "parent": Member}


class BranchState(BranchOutput, total=False):
    """State of one mutation branch: design (with bounded retries) -> evaluate -> reflect."""

    iteration: int
    slot: int
    parent: Member
    best: dict | None
    recent: list[dict]  # recent candidates for the prompts: {"arch", "score", "error"}
    latest_reflection: str | None
    lessons: list[str]
    attempt: int
    feedback: list[str]  # why earlier attempts in this branch were rejected
    proposal: dict | None  # {"child", "canonical", "edit", "rationale", "fallback", "changes"}
    result: dict | None  # EvalResult.to_dict() of the child
    pareto: list[dict]  # the front, when the Designer is shown it (--pareto-feedback)
    human_hint: str | None
    human_arch: str | None  # an architecture the human wrote, evaluated instead of a proposal


def new_search_state() -> SearchState:
    """Return the input that starts a fresh search."""
    return SearchState(
        population=[],
        iteration=0,
        children=[],
        evaluated={},
        reflections=[],
        history=[],
        progress=[],
        stop_reason=None,
    )


def as_json(value: Any) -> Any:
    """Return ``value`` with tuples turned into lists, so state and events serialise the same way."""
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    return value
