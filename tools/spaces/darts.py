"""The DARTS micro (cell) search space (Liu et al., ICLR 2019) on CIFAR.

An architecture is a DARTS genotype, written as DARTS prints it::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...8 pairs],
             normal_concat=[2, 3, 4, 5], reduce=[...8 pairs], reduce_concat=[2, 3, 4, 5])

Each cell has states 0 and 1 (the outputs of the previous two cells) and four intermediate nodes;
node k (k = 0..3) is state k + 2 and sums two ``(op, input)`` pairs whose inputs are two distinct
earlier states (0..k+1). The cell's output concatenates the ``concat`` states. Networks are built by
:mod:`tools.spaces.darts_ops`.

The text is untrusted (it comes from an LLM): it is parsed with :func:`ast.parse` and only list,
tuple, string, integer, unary minus, ``range(...)`` and the ``Genotype(...)`` call nodes are
interpreted; nothing is ever evaluated.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import random
import re
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from tools.spaces import ArchitectureError, SearchSpace, darts_ops, search_space
from tools.spaces.darts_ops import NODES, OP_NAMES, DartsNetwork, network_params

Pair = tuple[str, int]
Cell = Literal["normal", "reduce"]
#: The edit schema's op field, from the one list the network is built from.
OpName = Literal[OP_NAMES]  # type: ignore[valid-type]

FIELDS: tuple[str, ...] = ("normal", "normal_concat", "reduce", "reduce_concat")
#: Longest input accepted; a standard genotype is about 420 characters, pretty-printed about 700.
MAX_ARCH_CHARS = 2000
#: Intermediate states a concat may list.
CONCAT_STATES: tuple[int, ...] = tuple(range(2, 2 + NODES))
#: Ops ``sample`` and ``mutate`` draw from: DARTS never derives ``none`` into a genotype.
SAMPLE_OPS: tuple[str, ...] = tuple(op for op in OP_NAMES if op != "none")
#: The form every dead node (not in concat, not read by a live node) takes in the canonical form.
DEAD_NODE: tuple[Pair, Pair] = (("none", 0), ("none", 1))
SAMPLE_TRIES = 200
_FORMAT = (
    "Genotype(normal=[('op', input), ... 8 pairs], normal_concat=[2, 3, 4, 5], "
    "reduce=[... 8 pairs], reduce_concat=[2, 3, 4, 5])"
)
_CALL_START = re.compile(r"[A-Za-z_][\w.]*\s*\(")

#: The published genotypes (DARTS paper, first- and second-order search on CIFAR-10).
DARTS_V1 = (
    "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])"
)
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


class Genotype(NamedTuple):
    """A parsed genotype: eight (op, input) pairs and the concat states of each cell."""

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]


class DartsEdit(BaseModel):
    """Set the operation and input state of one slot of one node in one of the two cells."""

    model_config = ConfigDict(extra="ignore")

    cell: Cell
    node: Literal[0, 1, 2, 3]
    slot: Literal[0, 1]
    op: OpName
    input: Literal[0, 1, 2, 3, 4, 5]


def to_string(genotype: Genotype) -> str:
    """Spell ``genotype`` exactly as ``str()`` prints a DARTS ``Genotype`` with list fields."""
    return "Genotype(" + ", ".join(
        f"{name}={list(value)!r}" for name, value in zip(FIELDS, genotype, strict=True)
    ) + ")"


def _where(cell: str, position: int) -> str:
    node, slot = divmod(position, 2)
    return (
        f"{cell} cell node {node} (state {node + 2}), slot {slot} "
        f"(pair {position + 1} of {2 * NODES})"
    )


def _snippet(text: str, node: ast.AST) -> str:
    segment = ast.get_source_segment(text, node) or type(node).__name__
    return segment if len(segment) <= 60 else segment[:57] + "..."


def _int(node: ast.AST) -> int | None:
    """Return the integer a literal (optionally negated) spells, else None; bools are not ints."""
    negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    if negative:
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return -node.value if negative else node.value
    return None


def _unknown_op(op: str, where: str) -> ArchitectureError:
    close = difflib.get_close_matches(op, OP_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ArchitectureError(
        f"{where}: unknown operation {op!r}{hint}; allowed: {', '.join(OP_NAMES)}"
    )


def _pairs(text: str, node: ast.AST, cell: str) -> tuple[Pair, ...]:
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise ArchitectureError(
            f"{cell} must be a list of {2 * NODES} ('op', input) pairs, "
            f"got {_snippet(text, node)!r}"
        )
    if len(node.elts) != 2 * NODES:
        raise ArchitectureError(
            f"{cell} cell has {len(node.elts)} (op, input) pairs; it needs exactly {2 * NODES} "
            f"(2 per node, nodes 0..{NODES - 1} in order)"
        )
    pairs: list[Pair] = []
    for position, item in enumerate(node.elts):
        where = _where(cell, position)
        if not isinstance(item, (ast.Tuple, ast.List)) or len(item.elts) != 2:
            raise ArchitectureError(
                f"{where}: expected a pair ('op', input), got {_snippet(text, item)!r}"
            )
        op_node, input_node = item.elts
        if not (isinstance(op_node, ast.Constant) and isinstance(op_node.value, str)):
            raise ArchitectureError(
                f"{where}: the operation must be a quoted name, got {_snippet(text, op_node)!r}; "
                f"allowed: {', '.join(OP_NAMES)}"
            )
        op = op_node.value.strip()
        if op not in OP_NAMES:
            raise _unknown_op(op, where)
        index = _int(input_node)
        node_index = position // 2
        allowed = (
            f"node {node_index} may read states 0..{node_index + 1} "
            "(0, 1 = the two previous cells, 2+j = node j)"
        )
        if index is None:
            raise ArchitectureError(
                f"{where}: the input must be an integer state index, got "
                f"{_snippet(text, input_node)!r}; {allowed}"
            )
        if not 0 <= index <= node_index + 1:
            raise ArchitectureError(f"{where}: input {index} is out of range; {allowed}")
        if position % 2 and pairs[-1][1] == index:
            raise ArchitectureError(
                f"{cell} cell node {node_index} (state {node_index + 2}): both slots read state "
                f"{index}; the two inputs of a node must be distinct states (as DARTS derives them)"
            )
        pairs.append((op, index))
    return tuple(pairs)


def _concat(text: str, node: ast.AST, cell: str) -> tuple[int, ...]:
    name = f"{cell}_concat"
    allowed = (
        f"{name} must list distinct intermediate states from {list(CONCAT_STATES)}, "
        "e.g. [2, 3, 4, 5]"
    )
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        bounds = [_int(arg) for arg in node.args]
        zero_step = len(bounds) == 3 and bounds[2] == 0
        if node.keywords or not 1 <= len(bounds) <= 3 or None in bounds or zero_step:
            raise ArchitectureError(
                f"{name}: range(...) needs 1 to 3 integer arguments (non-zero step), got "
                f"{_snippet(text, node)!r}; {allowed}"
            )
        span = range(*bounds)
        if len(span) > len(CONCAT_STATES):  # checked before materialising a huge range
            raise ArchitectureError(
                f"{name}: {_snippet(text, node)!r} has {len(span)} states; {allowed}"
            )
        values = list(span)
    elif isinstance(node, (ast.List, ast.Tuple)):
        values = []
        for item in node.elts:
            value = _int(item)
            if value is None:
                raise ArchitectureError(
                    f"{name}: {_snippet(text, item)!r} is not an integer state; {allowed}"
                )
            values.append(value)
    else:
        raise ArchitectureError(
            f"{name}: expected a list or range(2, 6), got {_snippet(text, node)!r}; {allowed}"
        )
    if not values:
        raise ArchitectureError(f"{name} is empty; {allowed}")
    for value in values:
        if value not in CONCAT_STATES:
            raise ArchitectureError(f"{name}: state {value} cannot be concatenated; {allowed}")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ArchitectureError(f"{name}: state {duplicates[0]} appears more than once; {allowed}")
    return tuple(values)


def parse(arch: str) -> Genotype:
    """Parse a genotype string into a :class:`Genotype`, or raise ArchitectureError.

    Accepts tuples or lists, single or double quotes, any whitespace, ``range(a, b)`` for concat,
    positional or keyword fields, and a missing ``Genotype`` prefix (``normal=[...], ...`` or
    ``(normal=[...], ...)``). Nothing in the text is executed.
    """
    if not isinstance(arch, str):
        raise ArchitectureError(
            f"a DARTS architecture is a genotype string like {_FORMAT}, got {type(arch).__name__}"
        )
    return _parse(arch)


@lru_cache(maxsize=4096)
def _parse(arch: str) -> Genotype:
    if len(arch) > MAX_ARCH_CHARS:
        raise ArchitectureError(
            f"architecture string is {len(arch)} characters; a DARTS genotype has at most "
            f"{MAX_ARCH_CHARS} (format {_FORMAT})"
        )
    text = arch.strip()
    if not text:
        raise ArchitectureError(f"empty architecture string; expected {_FORMAT}")
    if text.startswith("("):
        text = "Genotype" + text
    elif not _CALL_START.match(text):
        text = f"Genotype({text})"
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ArchitectureError(
            f"not a genotype: {exc.msg} at column {exc.offset}; expected {_FORMAT}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise ArchitectureError(
            f"not a genotype ({type(exc).__name__}); expected {_FORMAT}"
        ) from None
    call = tree.body
    func = call.func if isinstance(call, ast.Call) else None
    func_name = (
        func.id
        if isinstance(func, ast.Name)
        else func.attr if isinstance(func, ast.Attribute) else None
    )
    if func_name != "Genotype":
        raise ArchitectureError(
            f"expected Genotype(...), got {_snippet(text, call)!r}; format {_FORMAT}"
        )
    if any(isinstance(a, ast.Starred) for a in call.args):
        raise ArchitectureError("Genotype(*...) is not allowed; write the four fields out")
    if len(call.args) > len(FIELDS):
        raise ArchitectureError(
            f"Genotype takes at most {len(FIELDS)} fields ({', '.join(FIELDS)}), got "
            f"{len(call.args)} positional arguments"
        )
    values: dict[str, ast.AST] = dict(zip(FIELDS, call.args, strict=False))
    for keyword in call.keywords:
        if keyword.arg not in FIELDS:
            field = "**" if keyword.arg is None else keyword.arg
            close = difflib.get_close_matches(field, FIELDS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ArchitectureError(
                f"unknown Genotype field {field!r}{hint}; fields: {', '.join(FIELDS)}"
            )
        if keyword.arg in values:
            raise ArchitectureError(f"Genotype field {keyword.arg!r} is given twice")
        values[keyword.arg] = keyword.value
    missing = [f for f in FIELDS if f not in values]
    if missing:
        raise ArchitectureError(
            f"Genotype lacks {', '.join(missing)}; it needs all of {', '.join(FIELDS)}"
        )
    return Genotype(
        _pairs(text, values["normal"], "normal"),
        _concat(text, values["normal_concat"], "normal"),
        _pairs(text, values["reduce"], "reduce"),
        _concat(text, values["reduce_concat"], "reduce"),
    )


# --- canonical form -------------------------------------------------------------------------------


def _cell_text(pairs: tuple[Pair, ...], concat: tuple[int, ...]) -> str:
    return f"{list(pairs)!r}|{list(concat)!r}"


def _normalise_node(node: tuple[Pair, Pair]) -> tuple[Pair, Pair]:
    """Give ``none`` edges a fixed input (their input is never read), then sort the two pairs."""
    (op_a, in_a), (op_b, in_b) = node
    if op_a == "none" and op_b == "none":
        return DEAD_NODE
    if op_a == "none":
        in_a = 1 if in_b == 0 else 0
    elif op_b == "none":
        in_b = 1 if in_a == 0 else 0
    first, second = sorted(((op_a, in_a), (op_b, in_b)))
    return first, second


@lru_cache(maxsize=8192)
def canonical_cell(
    pairs: tuple[Pair, ...], concat: tuple[int, ...]
) -> tuple[tuple[Pair, ...], tuple[int, ...]]:
    """Return the representative of one cell's class (see :meth:`DartsSpace.canonical`)."""
    nodes = [(pairs[2 * k], pairs[2 * k + 1]) for k in range(NODES)]
    live = set(concat)
    for state in range(NODES + 1, 1, -1):  # last node first: readers come after what they read
        if state in live:
            live.update(i for op, i in nodes[state - 2] if op != "none" and i >= 2)
    nodes = [node if k + 2 in live else DEAD_NODE for k, node in enumerate(nodes)]
    best: tuple[str, tuple[Pair, ...], tuple[int, ...]] | None = None
    for order in itertools.permutations(CONCAT_STATES):
        relabel = {0: 0, 1: 1, **dict(zip(CONCAT_STATES, order, strict=True))}
        placed: list[tuple[Pair, Pair] | None] = [None] * NODES
        legal = True
        for k, node in enumerate(nodes):
            state = relabel[k + 2]
            moved = tuple((op, relabel[i]) for op, i in node)
            # Only real reads constrain the order; a none edge's input is rewritten anyway.
            if any(op != "none" and i >= state for op, i in moved):
                legal = False
                break
            placed[state - 2] = _normalise_node(moved)  # type: ignore[arg-type]
        if not legal:
            continue
        spelled = tuple(pair for node in placed for pair in node)  # type: ignore[union-attr]
        new_concat = tuple(sorted(relabel[c] for c in concat))
        key = _cell_text(spelled, new_concat)
        if best is None or key < best[0]:
            best = (key, spelled, new_concat)
    assert best is not None  # the identity order is always legal
    return best[1], best[2]


def canonical_genotype(genotype: Genotype) -> Genotype:
    """Canonicalise the normal and the reduction cell independently."""
    normal, normal_concat = canonical_cell(genotype.normal, genotype.normal_concat)
    reduce, reduce_concat = canonical_cell(genotype.reduce, genotype.reduce_concat)
    return Genotype(normal, normal_concat, reduce, reduce_concat)


def _with_pair(genotype: Genotype, cell: str, position: int, pair: Pair) -> Genotype:
    pairs = list(getattr(genotype, cell))
    pairs[position] = pair
    return genotype._replace(**{cell: tuple(pairs)})


def _pair_text(pair: Pair) -> str:
    return f"{pair[0]}<-{pair[1]}"


@search_space("darts")
class DartsSpace(SearchSpace):
    """DARTS micro space: a normal and a reduction cell stacked into the DARTS CIFAR network."""

    edit_schema = DartsEdit
    arch_format = (
        "a DARTS genotype Genotype(normal=[('op', input) x 8], normal_concat=[2, 3, 4, 5], "
        f"reduce=[('op', input) x 8], reduce_concat=[2, 3, 4, 5]), ops: {', '.join(OP_NAMES)}"
    )

    def __init__(
        self,
        channels: int = 16,
        layers: int = 8,
        auxiliary: bool = False,
        max_params: float | None = None,
    ) -> None:
        """Search-time defaults are the small network (C=16, 8 cells); DARTS trains C=36, 20 cells
        with the auxiliary head. ``max_params`` (optional) bounds ``sample``, ``mutate`` and
        :meth:`check_budget`; the evaluator applies its own budget to every candidate."""
        for label, value in (("channels", channels), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if max_params is not None and not max_params > 0:
            raise ValueError(f"max_params must be positive or None, got {max_params!r}")
        self.channels, self.layers = channels, layers
        self.auxiliary = bool(auxiliary)
        self.max_params = max_params

    # -- parsing -----------------------------------------------------------------------------------

    def parse(self, arch: str) -> Genotype:
        """Parse ``arch`` into a :class:`Genotype` (see :func:`parse`)."""
        return parse(arch)

    def validate(self, arch: str) -> str:
        """Parse ``arch``; return its standard spelling (as DARTS's ``str(Genotype)`` prints it)."""
        return to_string(parse(arch))

    def canonical(self, arch: str) -> str:
        """Return one genotype string shared by cells that compute the same function.

        Each cell is treated on its own. Identified: (1) the order of a node's two pairs (they are
        summed); (2) the input of a ``none`` edge (zero whatever it reads; it is set to 0, or 1 when
        the other slot reads 0; a node of two ``none`` edges reads 0 and 1); (3) relabellings of
        the four intermediate nodes that keep every real read pointing at an earlier state (the
        lexicographically smallest spelling wins); (4) the order of ``concat``, which only permutes
        output channels - every reader (the next cells' 1x1 or FactorizedReduce preprocessing, the
        auxiliary head's 1x1 conv, the classifier) absorbs that permutation in its weights;
        (5) dead nodes (not in concat, not read through a non-``none`` edge by a live node) become
        ``[('none', 0), ('none', 1)]``; their weights still exist in a built network, so their
        parameters count, but they never affect the output.

        Not identified: nodes that equal another state (``skip_connect`` + ``none``) or that are
        all-zero feeding later ops, duplicated parameter-free nodes, swapping states 0 and 1, and
        equalities between different op spellings; those stay distinct classes.
        """
        return to_string(canonical_genotype(parse(arch)))

    # -- budgets -----------------------------------------------------------------------------------

    def count_params(self, arch: str, num_classes: int = 10) -> int:
        """Return the exact parameter count of ``build(arch, num_classes)``, analytically."""
        return network_params(parse(arch), num_classes, self.channels, self.layers, self.auxiliary)

    def check_budget(self, arch: str, num_classes: int = 10) -> int:
        """Return the parameter count of ``arch``; over ``max_params``, raise naming both."""
        params = self.count_params(arch, num_classes)
        if self.max_params is not None and params > self.max_params:
            raise ArchitectureError(
                f"{params:,} parameters exceed max_params={int(self.max_params):,} "
                f"(C={self.channels}, {self.layers} cells, {num_classes} classes); use pooling, "
                "skip or dil_conv ops instead of sep_conv"
            )
        return params

    def _fits(self, arch: str) -> bool:
        if self.max_params is None:
            return True
        try:
            self.check_budget(arch)
        except ArchitectureError:
            return False
        return True

    # -- random architectures ----------------------------------------------------------------------

    def _draw_cell(self, rng: random.Random) -> tuple[Pair, ...]:
        pairs: list[Pair] = []
        for node in range(NODES):
            for index in rng.sample(range(node + 2), 2):
                pairs.append((rng.choice(SAMPLE_OPS), index))
        return tuple(pairs)

    def sample(self, rng: random.Random) -> str:
        """Draw both cells uniformly: ops from the seven non-``none`` ops, distinct input pairs,
        concat [2, 3, 4, 5] (DARTS's random-search baseline). Draws over ``max_params`` are redrawn.
        """
        for _ in range(SAMPLE_TRIES):
            normal = self._draw_cell(rng)
            reduce = self._draw_cell(rng)
            arch = to_string(Genotype(normal, CONCAT_STATES, reduce, CONCAT_STATES))
            if self._fits(arch):
                return arch
        raise ArchitectureError(
            f"no random genotype fit max_params={self.max_params:,.0f} in {SAMPLE_TRIES} draws; "
            "raise the budget or lower channels/layers"
        )

    def neighbours(self, arch: str) -> list[str]:
        """Return every genotype one slot change away: another non-``none`` op, or (for a slot
        that is not ``none``) another legal input distinct from the node's other slot."""
        genotype = parse(arch)
        children: list[str] = []
        for cell in ("normal", "reduce"):
            pairs = getattr(genotype, cell)
            for position, (op, index) in enumerate(pairs):
                node = position // 2
                other = pairs[position ^ 1][1]
                changes = [(new_op, index) for new_op in SAMPLE_OPS if new_op != op]
                if op != "none":  # a none edge reads nothing, so moving its input changes nothing
                    changes += [
                        (op, new) for new in range(node + 2) if new not in (index, other)
                    ]
                children += [to_string(_with_pair(genotype, cell, position, c)) for c in changes]
        return children

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Return a random one-slot neighbour computing a different function, within the budget."""
        parent = self.canonical(arch)
        children = self.neighbours(arch)
        rng.shuffle(children)
        for child in children:
            if self.canonical(child) != parent and self._fits(child):
                return child
        raise ArchitectureError(
            f"no one-slot change of this genotype computes a different function within "
            f"max_params={self.max_params}; raise the budget"
        )

    # -- edits and diffs ---------------------------------------------------------------------------

    def apply_edit(self, arch: str, edit: BaseModel | dict[str, Any]) -> str:
        """Set ``edit.op`` reading ``edit.input`` on one slot; the input must be legal for the node
        and differ from the other slot's, and the edit must change something."""
        data = edit.model_dump() if isinstance(edit, BaseModel) else edit
        try:
            parsed = DartsEdit.model_validate(data)
        except ValidationError as exc:
            raise ArchitectureError(
                f"invalid DARTS edit {data!r}: cell is normal or reduce, node 0..3, slot 0 or 1, "
                f"op one of {', '.join(OP_NAMES)}, input 0..5 ({exc.error_count()} error(s))"
            ) from None
        genotype = parse(arch)
        where = f"{parsed.cell} node {parsed.node} slot {parsed.slot}"
        if parsed.input > parsed.node + 1:
            raise ArchitectureError(
                f"{where}: input {parsed.input} is not an earlier state; node {parsed.node} may "
                f"read states 0..{parsed.node + 1} (0, 1 = the previous two cells, 2+j = node j)"
            )
        pairs = getattr(genotype, parsed.cell)
        position = 2 * parsed.node + parsed.slot
        other = pairs[position ^ 1]
        if other[1] == parsed.input:
            raise ArchitectureError(
                f"{where}: slot {1 - parsed.slot} already reads state {parsed.input}; the two "
                f"inputs of a node must be distinct"
            )
        new = (parsed.op, parsed.input)
        if pairs[position] == new:
            raise ArchitectureError(
                f"{where} already is {_pair_text(new)}; an edit must change the op or the input"
            )
        return to_string(_with_pair(genotype, parsed.cell, position, new))

    def diff(self, parent: str, child: str) -> list[str]:
        """List changed slots and concats.

        For example ``normal node 2 slot 1: sep_conv_3x3<-0 -> dil_conv_5x5<-1``.
        """
        a, b = parse(parent), parse(child)
        changes: list[str] = []
        for cell in ("normal", "reduce"):
            for position, (x, y) in enumerate(zip(getattr(a, cell), getattr(b, cell), strict=True)):
                if x != y:
                    node, slot = divmod(position, 2)
                    changes.append(
                        f"{cell} node {node} slot {slot}: {_pair_text(x)} -> {_pair_text(y)}"
                    )
            old, new = getattr(a, f"{cell}_concat"), getattr(b, f"{cell}_concat")
            if old != new:
                changes.append(f"{cell} concat: {list(old)} -> {list(new)}")
        return changes

    # -- networks and descriptions -----------------------------------------------------------------

    def build(self, arch: str, num_classes: int) -> nn.Module:
        """Build :class:`DartsNetwork` for ``arch`` (works at 32x32 and 16x16 inputs)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        return DartsNetwork(parse(arch), num_classes, self.channels, self.layers, self.auxiliary)

    def describe_text(self) -> str:
        """Describe the network, the cells, the ops and their costs, notation and edit rule."""
        c = self.channels
        return _DESCRIPTION.format(
            c=c,
            stem=3 * c,
            layers=self.layers,
            r1=self.layers // 3,
            r2=2 * self.layers // 3,
            sep3=2 * (9 * c + c * c + 2 * c),
            sep5=2 * (25 * c + c * c + 2 * c),
            dil3=9 * c + c * c + 2 * c,
            dil5=25 * c + c * c + 2 * c,
            fr=c * c + 2 * c,
            aux="with" if self.auxiliary else "without",
            budget="none" if self.max_params is None else f"{self.max_params:,.0f}",
            example=_NOTATION_EXAMPLE,
        )

    def describe_code(self) -> str:
        """Return the source of the ops, the cell and the network (read live via inspect)."""
        objects = (
            darts_ops.ReLUConvBN,
            darts_ops.DilConv,
            darts_ops.SepConv,
            darts_ops.Zero,
            darts_ops.FactorizedReduce,
            darts_ops.make_op,
            darts_ops.drop_path,
            darts_ops.DartsCell,
            darts_ops.AuxiliaryHeadCIFAR,
            darts_ops.DartsNetwork,
        )
        header = (
            f"OP_NAMES = {OP_NAMES!r}\n"
            f"NODES = {NODES}  # intermediate nodes; node k is state k + 2\n"
            f"STEM_MULTIPLIER = {darts_ops.STEM_MULTIPLIER}\n"
            f"AUX_MIN_SIZE = {darts_ops.AUX_MIN_SIZE}\n"
        )
        return header + "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects) + "\n"

    def info(self) -> dict[str, Any]:
        """Return name, format, network size and budget."""
        return {
            **super().info(),
            "channels": self.channels,
            "layers": self.layers,
            "auxiliary": self.auxiliary,
            "max_params": self.max_params,
        }


#: A made-up, unremarkable genotype that illustrates the notation (never a published cell, so
#: the Designer is not handed a known good answer).
_NOTATION_EXAMPLE = (
    "Genotype(normal=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('dil_conv_3x3', 0), "
    "('skip_connect', 2), ('avg_pool_3x3', 1), ('none', 3), ('skip_connect', 1), "
    "('dil_conv_5x5', 4)], normal_concat=[2, 3, 4, 5], reduce=[('avg_pool_3x3', 0), "
    "('sep_conv_3x3', 1), ('max_pool_3x3', 2), ('skip_connect', 0), ('dil_conv_3x3', 3), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('avg_pool_3x3', 4)], reduce_concat=[2, 3, 4, 5])"
)

_DESCRIPTION = """\
Search space: DARTS cells (Liu et al., 2019), CIFAR network.
The network is fixed except for two cells: a NORMAL cell (keeps resolution and width) and a
REDUCE cell (halves the resolution, doubles the width). Stem: 3x3 conv to {stem} channels + BN.
Then {layers} cells at width C={c}; cells {r1} and {r2} (0-based) are reduce cells, every other
cell is a normal cell; the width doubles at each reduce cell. Global average pooling and a linear
classifier follow the last cell ({aux} the auxiliary head). Parameter budget: {budget}.

Inside a cell there are 6 states. States 0 and 1 are the outputs of the previous two cells
(state 1 the most recent), each first mapped to C channels by a 1x1 ReLU-conv-BN. Four
intermediate nodes follow: node k (k = 0..3) is state k + 2 and equals the SUM of two edges,
op_a(state i) + op_b(state j), where i and j are two DIFFERENT earlier states (node k may read
states 0..k+1). The cell output concatenates the states in concat (normally all four nodes,
[2, 3, 4, 5], giving 4C channels). In a reduce cell, every edge reading state 0 or 1 has
stride 2. A node that is not in concat and not read by a later node in the cell is dead: it
costs parameters but never changes the output.

Operations on an edge (parameters per edge at width C={c}; BN included):
  none          outputs zeros: removes the edge. 0 parameters.
  skip_connect  identity, 0 parameters; at stride 2 (reduce cell reading state 0 or 1) a
                factorized reduce of two 1x1 convs: {fr} parameters.
  max_pool_3x3  3x3 max pooling. 0 parameters.
  avg_pool_3x3  3x3 average pooling (borders average real pixels only). 0 parameters.
  sep_conv_3x3  twice (ReLU, depthwise 3x3, pointwise 1x1, BN): {sep3} parameters; 5x5 field.
  sep_conv_5x5  twice (ReLU, depthwise 5x5, pointwise 1x1, BN): {sep5} parameters; 9x9 field.
  dil_conv_3x3  ReLU, depthwise 3x3 dilation 2, pointwise 1x1, BN: {dil3} parameters; 5x5 field.
  dil_conv_5x5  ReLU, depthwise 5x5 dilation 2, pointwise 1x1, BN: {dil5} parameters; 9x9 field.
Costs scale with C squared and double in width after each reduce cell; sep_conv is the most
expensive op, pooling and skip are free. Compute (FLOPs) follows parameters times resolution.

Notation: a genotype lists each cell's 8 (op, input) pairs in node order (node 0's two pairs,
then node 1's, ...), then the concat states:
  {example}
Here normal node 0 (state 2) = sep_conv_5x5(state 1) + max_pool_3x3(state 0), and normal
node 3 (state 5) = skip_connect(state 1) + dil_conv_5x5(state 4).

Mutation rule: a child differs from its parent in exactly one slot: pick the cell (normal or
reduce), the node (0..3) and the slot (0 or 1), then set its op and its input state (an edit
names all five: cell, node, slot, op, input). The input must be at most node + 1 and differ from
the other slot's input; the edit must change the op, the input or both.
"""
