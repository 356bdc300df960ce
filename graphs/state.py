"""Typed state of the search graph and of one mutation branch.

Everything in state is plain JSON-able data (dicts, lists, numbers, strings) so checkpoints stay
readable across library versions. Counters use ``operator.add`` reducers: each branch reports
increments and the graph sums them.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


def collect_children(current: list[dict] | None, update: list[dict] | None) -> list[dict]:
    """Reducer for ``children``: branches append their child; ``None`` (from ``update``) empties it."""
    if update is None:
        return []
    return (current or []) + update


def merge_evaluated(current: dict | None, update: dict | None) -> dict:
    """Reducer for ``evaluated``: canonical architecture -> outcome, later writes win."""
    merged = dict(current or {})
    merged.update(update or {})
    return merged


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
    evaluated: Annotated[dict[str, dict], merge_evaluated]
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
    reflections: Annotated[list[dict], operator.add]  # {"iteration", "slot", "text", "suggestion"}
    history: Annotated[list[dict], operator.add]  # one record per child, see graphs.nodes.child_record
    progress: Annotated[list[dict], operator.add]  # per iteration: best, mean, ground truth
    stop_reason: str | None


class BranchState(BranchOutput, total=False):
    """State of one mutation branch: design (with bounded retries) -> evaluate -> reflect."""

    iteration: int
    slot: int
    parent: Member
    best: dict | None
    recent: list[dict]  # recent candidates for the prompts: {"arch", "score", "error"}
    latest_reflection: str | None
    lessons: list[str]
    seen: list[str]  # canonical forms already evaluated (the Designer must not repeat them)
    attempt: int
    feedback: list[str]  # why earlier attempts in this branch were rejected
    proposal: dict | None  # {"child", "canonical", "edit", "rationale", "fallback", "changes"}
    result: dict | None  # EvalResult.to_dict() of the child


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
