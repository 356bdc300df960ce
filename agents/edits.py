"""Edits of enumerable spaces, and the Designer prompt's worked example.

For a space whose edit schema has only ``Literal`` fields (NB201: 6 edges x 5 operations), every
edit of a parent can be tried in code, so the prompt can list the ones that would be rejected
(no change, a broken rule, an already evaluated child) instead of letting a small model find out
one retry at a time. The worked example is a made-up, deliberately mediocre parent (never one of
the best cells) with an edit the space itself applies, so it cannot drift from the rules.
"""

from __future__ import annotations

import random
from collections.abc import Set as AbstractSet
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from agents.formatting import as_json
from tools.spaces import SearchSpace

#: Edit schemas with more combinations than this are not enumerated (no restriction, no list).
#: DARTS has 768; enumerating them and checking every child takes ~0.2 s per call, and a
#: restricted schema of ~120 alternatives cost llama.cpp no measurable time per token.
MAX_ENUMERATED_EDITS = 1024
#: A blocked-edit list longer than this many lines is left out of the prompt: it would cost
#: more prompt tokens than it saves retries.
MAX_BLOCKED_LINES = 40

#: Hand-written examples: a made-up, deliberately mediocre parent (never one of the best cells),
#: the edit and a rationale. The child is computed by the space, so an example cannot drift.
EXAMPLES: dict[str, dict[str, Any]] = {
    "nb201": {
        "parent": "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|",
        "edit": {"edge": "2<-1", "op": "nor_conv_1x1"},
        "rationale": "Edge 2<-1 is none, so node 1 feeds node 2 nothing; a 1x1 conv adds a path and weights.",
    },
    "zen-macro": {
        "parent": "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)"
        "SuperResK3K3(32,64,2,32,1)SuperConvK1BNRELU(64,128,1,1)",
        "edit": {"block": 2, "replacement": "SuperResK5K5(32,64,2,32,2)"},
        "rationale": "A second sub-layer and 5x5 kernels deepen block 2 and widen its receptive field.",
    },
    "darts": {
        "parent": "Genotype(normal=[('max_pool_3x3', 0), ('skip_connect', 1), "
        "('avg_pool_3x3', 0), ('skip_connect', 1), ('skip_connect', 0), ('max_pool_3x3', 2), "
        "('avg_pool_3x3', 1), ('skip_connect', 3)], normal_concat=[2, 3, 4, 5], "
        "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
        "('avg_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 3), ('skip_connect', 2), "
        "('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
        "edit": {"cell": "normal", "node": 0, "slot": 0, "op": "sep_conv_3x3", "input": 0},
        "rationale": "The normal cell has no conv at all; a sep_conv_3x3 on node 0 adds weights.",
    },
}


def worked_example(space: SearchSpace, form: str) -> tuple[str, dict[str, Any]] | None:
    """Return ``(parent, output JSON)`` for the prompt's example, or None when none can be made.

    Known spaces use :data:`EXAMPLES`. Other spaces get a mutation drawn with a fixed seed; in the
    ``edit`` form that needs an edit schema of ``Literal`` fields, so the edit can be recovered.
    """
    known = EXAMPLES.get(space.name)
    try:
        if known and "edit" in known:
            parent = space.validate(known["parent"])
            edit = dict(known["edit"])
            if form == "edit":
                return parent, {**edit, "rationale": known["rationale"]}
            child = space.apply_edit(parent, space.edit_schema.model_validate(edit))
            return parent, {"arch": child, "rationale": known["rationale"]}
        if known:
            return space.validate(known["parent"]), {
                "arch": known["child"],
                "rationale": known["rationale"],
            }
        rng = random.Random(20250713)
        parent = space.sample(rng)
        child = space.mutate(parent, rng)
    except (ValueError, TypeError, RecursionError, NotImplementedError):  # no example, no crash
        return None
    note = "A one-operation change of the parent that should raise the score."
    if form == "whole":
        return parent, {"arch": child, "rationale": note}
    edit = _recover_edit(space, parent, child)
    return (parent, {**edit, "rationale": note}) if edit else None


def _recover_edit(space: SearchSpace, parent: str, child: str) -> dict[str, Any] | None:
    """Find the edit (over an all-``Literal`` schema) that turns ``parent`` into ``child``."""
    for combo in all_edits(space) or []:
        try:
            if space.apply_edit(parent, space.edit_schema.model_validate(combo)) == child:
                return combo
        except (ValueError, TypeError, RecursionError):
            continue
    return None


def all_edits(space: SearchSpace) -> list[dict[str, Any]] | None:
    """List every edit of a schema whose fields are all ``Literal`` (None when it is not, or huge)."""
    schema = space.edit_schema
    if schema is None:
        return None
    combos: list[dict[str, Any]] = [{}]
    for name, info in schema.model_fields.items():
        if get_origin(info.annotation) is not Literal:
            return None
        combos = [{**c, name: o} for c in combos for o in get_args(info.annotation)]
        if len(combos) > MAX_ENUMERATED_EDITS:
            return None
    return combos


def partition_edits(
    space: SearchSpace, parent: str, seen: AbstractSet[str] = frozenset()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """Split every edit of ``parent`` into ``(allowed, blocked)``; None for non-enumerable spaces.

    An edit is blocked when the space refuses it, when the child computes the same function as
    the parent, or when the child was already evaluated (its canonical form is in ``seen``).
    """
    edits = all_edits(space)
    if not edits:
        return None
    try:
        parent_canonical = space.canonical(parent)
    except (ValueError, TypeError, RecursionError):
        return None
    allowed, blocked = [], []
    for combo in edits:
        try:
            child = space.apply_edit(parent, space.edit_schema.model_validate(combo))
            canonical = space.canonical(child)
        except (ValueError, TypeError, RecursionError):
            blocked.append(combo)
            continue
        is_blocked = canonical == parent_canonical or canonical in seen
        (blocked if is_blocked else allowed).append(combo)
    return allowed, blocked


def blocked_edits(space: SearchSpace, parent: str, seen: AbstractSet[str] = frozenset()) -> str:
    """Describe the edits of ``parent`` that would be rejected, grouped, one line per group.

    Only enumerable (all-``Literal``) edit schemas get this list; other spaces get ``""``.
    """
    split = partition_edits(space, parent, seen)
    listing = _group_edits(space, split[1]) if split else ""
    return listing if listing.count("\n") < MAX_BLOCKED_LINES else ""


def restricted_schema(
    proposal: type[BaseModel], space: SearchSpace, allowed: list[dict[str, Any]]
) -> type[BaseModel]:
    """Return ``proposal`` whose JSON schema admits only the ``allowed`` edits.

    The schema becomes an ``anyOf`` of complete objects, one per value of the leading edit fields
    (``{"edge": {"const": "3<-0"}, "op": {"enum": [...]}, "rationale": ...}``), so a constrained
    decoder cannot emit a blocked edit. Validation is unchanged (it is ``proposal``'s), so the
    reply parses as usual; the root keeps ``"type": "object"`` for providers that require it.
    """
    *keys, last = list(space.edit_schema.model_fields)
    groups: dict[tuple, list[Any]] = {}
    for edit in allowed:
        groups.setdefault(tuple(edit[k] for k in keys), []).append(edit[last])

    def restrict(schema: dict[str, Any]) -> None:
        properties, required = schema["properties"], schema.get("required", [])
        options = []
        for group, values in groups.items():
            fields = dict(properties)
            fields.update({k: {"const": v} for k, v in zip(keys, group)})
            fields[last] = {"enum": values}
            options.append(
                {
                    "type": "object",
                    "properties": fields,
                    "required": required,
                    "additionalProperties": False,
                }
            )
        title = schema.get("title", proposal.__name__)
        schema.clear()
        schema.update({"title": title, "type": "object", "anyOf": options})

    return type(
        proposal.__name__,
        (proposal,),
        {"model_config": ConfigDict(json_schema_extra=restrict), "__module__": __name__},
    )


def _group_edits(space: SearchSpace, edits: list[dict[str, Any]]) -> str:
    """Group edits on all fields but the last: ``- edge "3<-1": op "none" or "skip_connect"``."""
    fields = list(space.edit_schema.model_fields)
    *keys, last = fields
    options = get_args(space.edit_schema.model_fields[last].annotation)
    groups: dict[tuple, list[Any]] = {}
    for edit in edits:
        groups.setdefault(tuple(edit[k] for k in keys), []).append(edit[last])
    lines = []
    for group, values in groups.items():
        head = ", ".join(f"{k} {as_json(v)}" for k, v in zip(keys, group))
        tail = (
            f"any {last}"
            if len(values) == len(options)
            else (f"{last} " + " or ".join(as_json(v) for v in values))
        )
        lines.append(f"- {head}: {tail}" if head else f"- {tail}")
    return "\n".join(lines)


__all__ = [
    "EXAMPLES",
    "MAX_ENUMERATED_EDITS",
    "all_edits",
    "blocked_edits",
    "partition_edits",
    "restricted_schema",
    "worked_example",
]
