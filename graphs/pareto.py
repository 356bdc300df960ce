"""The Pareto front of proxy score versus params and FLOPs, kept across a search.

A point is ``{"arch", "canonical", "score", "params", "flops", "iteration"}``. One point dominates
another when it is at least as good on all three objectives (the score in the proxy's direction,
fewer params, fewer FLOPs) and strictly better on one. Pure functions, no torch: the graph's state
holds the front as a plain list, and the report and the Designer prompt read it.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

# How the front is written into a prompt lives with the other prompt formatting.
from agents.formatting import front_lines, spread


#: Objective tuple (smaller is better in every entry): (-score or score, params, flops).
Objectives = tuple[float, float, float]


def _finite(value: Any) -> bool:
    # bool is an int subclass, but True params is a bug upstream, not a point to keep
    return (isinstance(value, Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _usable(point: dict) -> bool:
    return all(_finite(point.get(key)) for key in ("score", "params", "flops"))


def _objectives(point: dict, higher_is_better: bool) -> Objectives:
    score = float(point["score"])
    return (-score if higher_is_better else score, float(point["params"]), float(point["flops"]))


def _dominates(a: Objectives, b: Objectives) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a[2] <= b[2] and a != b


def _key(point: dict) -> str:
    """The identity used to keep a network once: its canonical form, else its string."""
    return str(point.get("canonical") or point.get("arch") or "")


def update_front(front: list[dict], candidates: list[dict], higher_is_better: bool) -> list[dict]:
    """Return the non-dominated set of ``front`` plus ``candidates``, sorted by params then FLOPs.

    ``front`` is taken to be an earlier result of this function (no point in it dominates
    another), so each call costs O(len(front) * len(candidates)) rather than a comparison of every
    pair; a ``front`` that breaks this keeps its dominated points. Points whose score, params or
    FLOPs is missing or not finite are ignored. A network (by ``canonical``, else ``arch``) counts
    once: the copy already in the front, else the first candidate, decides. Equal objectives
    under different networks are all kept. The points are the given dicts, not copies.
    """
    kept: list[tuple[Objectives, dict]] = []
    keys: set[str] = set()
    for point in front:  # already mutually non-dominated: only filtered, not compared
        if _usable(point) and _key(point) not in keys:
            kept.append((_objectives(point, higher_is_better), point))
            keys.add(_key(point))
    for point in candidates:
        if not _usable(point) or _key(point) in keys:
            continue
        keys.add(_key(point))  # the first copy of a network decides, kept or not
        objectives = _objectives(point, higher_is_better)
        if any(_dominates(other, objectives) for other, _ in kept):
            continue
        kept = [(other, p) for other, p in kept if not _dominates(objectives, other)]
        kept.append((objectives, point))
    kept.sort(key=lambda item: (item[0][1], item[0][2], item[0][0], _key(item[1])))
    return [point for _, point in kept]


__all__ = ["front_lines", "spread", "update_front"]
