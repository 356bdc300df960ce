"""The NAS-Bench-201 cell search space (15,625 cells, 6 edges x 5 operations).

Architectures are NB201 strings, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: three ``+``-separated
groups for nodes 1, 2, 3, each listing ``op~i`` for every input node i. Edge ``j<-i`` is input i of
node j. Networks are built by :mod:`tools.spaces.nb201_ops`, exactly as the benchmark trained them.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import random
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from tools.spaces import ArchitectureError, SearchSpace, nb201_ops, search_space
from tools.spaces.nb201_ops import EDGES, OP_NAMES, NB201Network

#: Edge names in string order; ``j<-i`` is input i of node j.
EDGE_NAMES: tuple[str, ...] = tuple(f"{j}<-{i}" for j, i in EDGES)
#: Longest input accepted; the longest valid string is 97 characters, padding aside.
MAX_ARCH_CHARS = 400
NUM_ARCHS = len(OP_NAMES) ** len(EDGES)
_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"

EdgeName = Literal["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
OpName = Literal["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


class NB201Edit(BaseModel):
    """Set the operation on one edge of the NB201 cell."""

    model_config = ConfigDict(extra="ignore")

    edge: EdgeName
    op: OpName


def to_string(ops: tuple[str, ...]) -> str:
    """Spell six edge operations (in ``EDGE_NAMES`` order) as a standard NB201 string."""
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def _unknown_op(op: str, where: str) -> ArchitectureError:
    close = difflib.get_close_matches(op, OP_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ArchitectureError(
        f"{where}: unknown operation {op!r}{hint}; allowed: {', '.join(OP_NAMES)}"
    )


def parse(arch: str) -> tuple[str, ...]:
    """Parse an NB201 string into its six edge operations, or raise ArchitectureError.

    Accepts surrounding whitespace, spaces around tokens and missing outer pipes; everything else
    must follow ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
    """
    if not isinstance(arch, str):
        raise ArchitectureError(
            f"an NB201 architecture is a string like {_FORMAT}, got {type(arch).__name__}"
        )
    # Standard spellings (the common case: tables, population members) skip the parser.
    ops = _standard_strings().get(arch)
    return ops if ops is not None else _parse(arch)


@lru_cache(maxsize=1)
def _standard_strings() -> dict[str, tuple[str, ...]]:
    return {to_string(ops): ops for ops in itertools.product(OP_NAMES, repeat=len(EDGES))}


@lru_cache(maxsize=4096)
def _parse(arch: str) -> tuple[str, ...]:
    if len(arch) > MAX_ARCH_CHARS:
        raise ArchitectureError(
            f"architecture string is {len(arch)} characters; an NB201 cell string has at most "
            f"{MAX_ARCH_CHARS} (format {_FORMAT})"
        )
    text = arch.strip()
    if not text:
        raise ArchitectureError(f"empty architecture string; expected {_FORMAT}")
    groups = text.split("+")
    if len(groups) != 3:
        raise ArchitectureError(
            f"expected 3 node groups separated by '+' (nodes 1, 2, 3), got {len(groups)}; "
            f"format {_FORMAT}"
        )
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        body = group.strip()
        if body.startswith("|"):
            body = body[1:]
        if body.endswith("|"):
            body = body[:-1]
        tokens = [t.strip() for t in body.split("|")]
        if len(tokens) != node or any(not t for t in tokens):
            raise ArchitectureError(
                f"node {node} must list exactly {node} input(s) "
                f"({'|'.join(f'op~{i}' for i in range(node))}), got {group.strip()!r}; "
                f"format {_FORMAT}"
            )
        for i, token in enumerate(tokens):
            where = f"node {node}, input {i} (position {len(ops) + 1} of 6)"
            op, sep, index = token.rpartition("~")
            if not sep:
                raise ArchitectureError(
                    f"{where}: token {token!r} lacks '~{i}'; write it as 'op~{i}'"
                )
            op = op.strip()
            if index.strip() != str(i):
                raise ArchitectureError(
                    f"{where}: token {token!r} has input index '~{index.strip()}', expected '~{i}' "
                    f"(node {node} takes inputs ~0..~{node - 1} in order)"
                )
            if op not in OP_NAMES:
                raise _unknown_op(op, where)
            ops.append(op)
    return tuple(ops)


def isomorphism_key(ops: tuple[str, ...]) -> str:
    """Return NATS-Bench's unique string for a cell (``to_unique_str(consider_zero=True)``).

    Each node is the sorted ``+``-join of its input terms: ``none`` gives ``#`` (zero), as does
    any edge whose source node is exactly ``#``; ``skip_connect`` passes its source through; any
    other op wraps it as ``(source)@op``. Zero terms stay in the sums, so a node that sums only
    zeros (``#+#``) is not itself treated as zero. This grouping yields the 6,466 unique cells
    the benchmark reports.
    """
    nodes = ["0"]
    for j in (1, 2, 3):
        terms = []
        for op, (to, i) in zip(ops, EDGES, strict=True):
            if to != j:
                continue
            if op == "none" or nodes[i] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[i])
            else:
                terms.append(f"({nodes[i]})@{op}")
        nodes.append("+".join(sorted(terms)))
    return nodes[3]


@lru_cache(maxsize=1)
def _canonical_table() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Map every cell to its class representative (built once, ~50 ms)."""
    classes: dict[str, list[tuple[str, ...]]] = {}
    for ops in itertools.product(OP_NAMES, repeat=len(EDGES)):
        classes.setdefault(isomorphism_key(ops), []).append(ops)
    rank = {op: k for k, op in enumerate(OP_NAMES)}
    table: dict[tuple[str, ...], tuple[str, ...]] = {}
    for members in classes.values():
        # Most `none` edges first, so dead edges read as `none`; then a fixed op order.
        rep = min(members, key=lambda m: (-m.count("none"), [rank[o] for o in m]))
        for member in members:
            table[member] = rep
    return table


@search_space("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201: one 4-node cell repeated 15 times in a fixed ResNet-like skeleton."""

    edit_schema = NB201Edit
    arch_format = (
        "an NB201 cell string |op~0|+|op~0|op~1|+|op~0|op~1|op~2| (nodes 1, 2, 3 and their "
        f"inputs), ops: {', '.join(OP_NAMES)}"
    )

    def __init__(self, channels: int = 16, cells_per_stage: int = 5) -> None:
        """Create the space; defaults are the benchmark's (C=16, N=5), smaller ones suit tests."""
        self.channels = channels
        self.cells_per_stage = cells_per_stage

    def validate(self, arch: str) -> str:
        """Parse ``arch`` and return its standard spelling, or raise ArchitectureError."""
        return to_string(parse(arch))

    def canonical(self, arch: str) -> str:
        """Return the representative of ``arch``'s isomorphism class (a valid NB201 string).

        Cells whose NATS-Bench isomorphism keys match (see :func:`isomorphism_key`) share one
        representative: the member with the most ``none`` edges (dead edges become ``none``), ties
        broken by op order. There are 6,466 classes.
        """
        return to_string(_canonical_table()[parse(arch)])

    def sample(self, rng: random.Random) -> str:
        """Draw one of the 15,625 cells uniformly."""
        return to_string(tuple(rng.choice(OP_NAMES) for _ in EDGES))

    def neighbours(self, arch: str) -> list[str]:
        """Return the 24 cells one edge-operation change away (6 edges x 4 other ops)."""
        ops = parse(arch)
        return [
            to_string(ops[:k] + (op,) + ops[k + 1 :])
            for k in range(len(EDGES))
            for op in OP_NAMES
            if op != ops[k]
        ]

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Return a uniformly random single-edge neighbour of ``arch``."""
        return rng.choice(self.neighbours(arch))

    def apply_edit(self, arch: str, edit: BaseModel | dict[str, Any]) -> str:
        """Set ``edit.op`` on ``edit.edge`` of ``arch``; an edit changing nothing is an error."""
        data = edit.model_dump() if isinstance(edit, BaseModel) else edit
        try:
            parsed = NB201Edit.model_validate(data)
        except ValidationError as exc:
            raise ArchitectureError(
                f"invalid NB201 edit {data!r}: edge must be one of {', '.join(EDGE_NAMES)} and op "
                f"one of {', '.join(OP_NAMES)} ({exc.error_count()} error(s))"
            ) from None
        ops = parse(arch)
        k = EDGE_NAMES.index(parsed.edge)
        if ops[k] == parsed.op:
            raise ArchitectureError(
                f"edge {parsed.edge} already uses {parsed.op}; an edit must change the operation"
            )
        return to_string(ops[:k] + (parsed.op,) + ops[k + 1 :])

    def build(self, arch: str, num_classes: int) -> nn.Module:
        """Build the NB201 network for ``arch`` (works at 32x32 and 16x16 inputs)."""
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        return NB201Network(parse(arch), num_classes, self.channels, self.cells_per_stage)

    def diff(self, parent: str, child: str) -> list[str]:
        """List changed edges, e.g. ``edge 2<-1: skip_connect -> nor_conv_3x3``."""
        a, b = parse(parent), parse(child)
        return [
            f"edge {name}: {x} -> {y}"
            for name, x, y in zip(EDGE_NAMES, a, b, strict=True)
            if x != y
        ]

    def describe_text(self) -> str:
        """Describe the cell, edges, operations, notation and the one-edit rule."""
        return _DESCRIPTION.format(
            channels=self.channels,
            channels2=self.channels * 2,
            channels4=self.channels * 4,
            n=self.cells_per_stage,
        )

    def describe_code(self) -> str:
        """Return the source of the operations, the cell and the network (read live via inspect)."""
        objects = (
            nb201_ops.ReLUConvBN,
            nb201_ops.Zero,
            nb201_ops.AvgPool3x3,
            nb201_ops.make_op,
            nb201_ops.NB201Cell,
            nb201_ops.ResNetBasicBlock,
            nb201_ops.NB201Network,
        )
        header = f"OP_NAMES = {OP_NAMES!r}\nEDGES = {EDGES!r}  # (to node j, from node i)\n"
        return header + "\n\n".join(inspect.getsource(obj) for obj in objects)

    def info(self) -> dict[str, Any]:
        """Return name, format and the size of the space."""
        return {
            **super().info(),
            "num_archs": NUM_ARCHS,
            "num_unique": len(set(_canonical_table().values())),
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
        }


_DESCRIPTION = """\
Search space: NAS-Bench-201 cell.
The network is fixed except for one cell that is repeated in every position: a stem (3x3 conv,
{channels} channels), then three stages of {n} cells at {channels}, {channels2} and {channels4}
channels, separated by stride-2 residual blocks that halve the resolution, then BN-ReLU, global
average pooling and a linear classifier. You design only the cell.

The cell is a DAG with 4 nodes: node 0 is the cell input, node 3 the cell output. Every node j
receives one edge from each earlier node i and sums them, so there are 6 edges, named j<-i:
  1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
Each edge carries exactly one of 5 operations:
  none          outputs zeros: removes the edge. No parameters, no compute.
  skip_connect  identity: passes the input through. No parameters, no compute.
  nor_conv_1x1  ReLU -> 1x1 convolution -> BatchNorm. C*C weights per edge; mixes channels only.
  nor_conv_3x3  ReLU -> 3x3 convolution -> BatchNorm. 9*C*C weights per edge (9x the 1x1 cost);
                mixes channels and a 3x3 neighbourhood.
  avg_pool_3x3  3x3 average pooling, stride 1. No parameters, cheap; smooths spatially.
An edge whose source node can only be zero, or whose result never reaches node 3, computes
nothing useful; its operation still costs parameters if it is a convolution.

Notation: |op~0|+|op~0|op~1|+|op~0|op~1|op~2| lists nodes 1, 2 and 3 separated by '+'; inside a
node, 'op~i' is the operation on the edge from node i, in order i = 0, 1, ... . Example:
  |nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|
means 1<-0 nor_conv_1x1, 2<-0 skip_connect, 2<-1 avg_pool_3x3, 3<-0 none, 3<-1 nor_conv_1x1,
3<-2 skip_connect. There are 5^6 = 15,625 cells.

Mutation rule: a child differs from its parent in exactly one edge: pick one of the 6 edges and
replace its operation with one of the 4 others (24 possible children per parent).
"""
