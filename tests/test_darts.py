"""Tests for the DARTS cell search space: parsing, canonical forms, edits, networks, proxies.

Run: .venv/bin/python -m pytest -q tests/test_darts.py   (add -m "not slow" to skip the evaluator)
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import random
import re
from collections import Counter

import pytest
import torch

from agents.edits import EXAMPLES, worked_example
from tools.costs import count_params
from tools.spaces import BUILTIN_MODULES, ArchitectureError, darts_ops, get_space
from tools.spaces.darts import (
    DARTS_V1,
    DARTS_V2,
    MAX_ARCH_CHARS,
    SAMPLE_OPS,
    DartsEdit,
    DartsSpace,
    Genotype,
    parse,
    to_string,
)
from tools.spaces.darts_ops import OP_NAMES, DartsCell, DartsNetwork, drop_path, make_op

Pairs = tuple[tuple[str, int], ...]

# Every node reads only states 0/1 except node 3, which reads node 0 (state 2): many relabellings
# are legal, but not all (node 0 must stay before node 3).
NORMAL: Pairs = (
    ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
    ("sep_conv_5x5", 1), ("skip_connect", 0),
    ("dil_conv_5x5", 0), ("max_pool_3x3", 1),
    ("avg_pool_3x3", 2), ("sep_conv_3x3", 1),
)  # fmt: skip
REDUCE: Pairs = (
    ("max_pool_3x3", 0), ("sep_conv_3x3", 1),
    ("skip_connect", 2), ("dil_conv_3x3", 0),
    ("skip_connect", 1), ("sep_conv_5x5", 3),
    ("avg_pool_3x3", 1), ("dil_conv_5x5", 4),
)  # fmt: skip
FULL = (2, 3, 4, 5)
BASE = to_string(Genotype(NORMAL, FULL, REDUCE, FULL))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Intra-op threads only add contention on the small shared CPUs these tests run on.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space() -> DartsSpace:
    return DartsSpace()


@pytest.fixture(scope="module")
def tiny() -> DartsSpace:
    # Reductions at cells 1 and 3: every kind of cell boundary, at a fraction of the cost.
    return DartsSpace(channels=4, layers=5)


def genotype_string(normal: Pairs, normal_concat=FULL, reduce: Pairs = REDUCE,
                    reduce_concat=FULL) -> str:
    return to_string(Genotype(tuple(normal), tuple(normal_concat), tuple(reduce),
                              tuple(reduce_concat)))


# --- registry and constants -------------------------------------------------------------------


def test_registered_as_a_builtin_space():
    assert "darts" in BUILTIN_MODULES and DartsSpace.name == "darts"
    space = get_space("darts", channels=36, layers=20, auxiliary=True)
    assert isinstance(space, DartsSpace) and space.edit_schema is DartsEdit
    assert space.info() == {
        "name": "darts",
        "arch_format": DartsSpace.arch_format,
        "channels": 36,
        "layers": 20,
        "auxiliary": True,
        "max_params": None,
    }
    defaults = DartsSpace()
    assert (defaults.channels, defaults.layers, defaults.auxiliary) == (16, 8, False)


@pytest.mark.parametrize("kwargs", [{"channels": 0}, {"layers": -1}, {"channels": 2.5},
                                    {"max_params": 0}])
def test_constructor_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DartsSpace(**kwargs)


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("published", [DARTS_V1, DARTS_V2])
def test_published_genotypes_are_fixed_points(space, published):
    assert space.validate(published) == published
    assert parse(published).normal_concat == FULL


def test_standard_spelling_is_what_darts_str_prints(space):
    # DARTS's genotypes are a namedtuple of lists; str() of one is the standard spelling.
    from collections import namedtuple

    darts_genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    g = parse(DARTS_V2)
    printed = str(darts_genotype(list(g.normal), list(g.normal_concat), list(g.reduce),
                                 list(g.reduce_concat)))
    assert printed == DARTS_V2


def _respell(text: str) -> list[str]:
    double = text.replace("'", '"')
    tuples = text.replace("[", "(").replace("]", ")")
    ranged = text.replace("[2, 3, 4, 5]", "range(2, 6)")
    body = text[len("Genotype("):-1]
    positional = re.sub(r"(normal|normal_concat|reduce|reduce_concat)=", "", text)
    pretty = text.replace("), (", "),\n    (").replace(", normal_concat", ",\n  normal_concat")
    reordered = (
        "Genotype(reduce_concat=[2, 3, 4, 5], "
        + body.replace(", reduce_concat=[2, 3, 4, 5]", "")
        + ")"
    )
    return [
        double,
        tuples,
        ranged,
        body,
        f"({body})",
        positional,
        f"  {pretty}\n",
        reordered,
        "genotypes." + text,
        text.replace("('", "( ' ").replace("',", " ' ,"),  # spaces inside the quotes are trimmed
    ]


def test_validate_accepts_spellings_and_returns_standard(space):
    for spelling in _respell(DARTS_V2):
        assert space.validate(spelling) == DARTS_V2, spelling


def test_concat_order_is_kept_by_validate(space):
    arch = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=(5, 2, 4)")
    assert "normal_concat=[5, 2, 4]" in space.validate(arch)
    assert space.validate(arch.replace("(5, 2, 4)", "range(5, 1, -1)")).count("[5, 4, 3, 2]") == 1


def _swap_first_pair(text: str, new: str) -> str:
    return text.replace("('sep_conv_3x3', 0)", new, 1)


@pytest.mark.parametrize(
    "arch, expected",
    [
        (
            _swap_first_pair(DARTS_V2, "('sep_conv_3x4', 0)"),
            "normal cell node 0 (state 2), slot 0 (pair 1 of 8): unknown operation "
            "'sep_conv_3x4' (did you mean 'sep_conv_3x3'?); allowed: none, max_pool_3x3",
        ),
        (
            DARTS_V2.replace("('max_pool_3x3', 1)]", "('maxpool', 1)]"),
            "reduce cell node 3 (state 5), slot 1 (pair 8 of 8): unknown operation 'maxpool' "
            "(did you mean 'max_pool_3x3'?)",
        ),
        (
            _swap_first_pair(DARTS_V2, "('conv_7x1_1x7', 0)"),
            "unknown operation 'conv_7x1_1x7'",
        ),
        (
            DARTS_V2.replace("('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ", "", 1),
            "normal cell has 6 (op, input) pairs; it needs exactly 8 (2 per node",
        ),
        (
            DARTS_V2.replace("reduce=[", "reduce=[('skip_connect', 0), "),
            "reduce cell has 9 (op, input) pairs; it needs exactly 8",
        ),
        (
            _swap_first_pair(DARTS_V2, "('sep_conv_3x3', 2)"),
            "normal cell node 0 (state 2), slot 0 (pair 1 of 8): input 2 is out of range; "
            "node 0 may read states 0..1",
        ),
        (
            DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 6)"),
            "normal cell node 3 (state 5), slot 1 (pair 8 of 8): input 6 is out of range; "
            "node 3 may read states 0..4",
        ),
        (_swap_first_pair(DARTS_V2, "('sep_conv_3x3', -1)"), "input -1 is out of range"),
        (
            _swap_first_pair(DARTS_V2, "('sep_conv_3x3', 1)"),
            "normal cell node 0 (state 2): both slots read state 1; the two inputs of a node "
            "must be distinct",
        ),
        (_swap_first_pair(DARTS_V2, "('sep_conv_3x3', True)"), "must be an integer state index"),
        (_swap_first_pair(DARTS_V2, "('sep_conv_3x3', '0')"), "must be an integer state index"),
        (_swap_first_pair(DARTS_V2, "('sep_conv_3x3', 0.0)"), "must be an integer state index"),
        (_swap_first_pair(DARTS_V2, "(sep_conv_3x3, 0)"), "the operation must be a quoted name"),
        (_swap_first_pair(DARTS_V2, "('sep_conv_3x3',)"), "expected a pair ('op', input)"),
        (_swap_first_pair(DARTS_V2, "('sep_conv_3x3', 0, 1)"), "expected a pair ('op', input)"),
        (
            DARTS_V2.replace("normal=[", "normal={", 1).replace(")], normal_c", ")}, normal_c", 1),
            "normal must be a list of 8 ('op', input) pairs",
        ),
        (
            DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 6]"),
            "normal_concat: state 6 cannot be concatenated; normal_concat must list distinct "
            "intermediate states from [2, 3, 4, 5]",
        ),
        (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[0, 1]"), "state 0 cannot"),
        (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[]"),
         "reduce_concat is empty"),
        (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 3, 3]"),
         "reduce_concat: state 3 appears more than once"),
        (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(0, 10**12)"),
         "range(...) needs 1 to 3 integer arguments"),
        (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(0, 100000000)"),
         "has 100000000 states"),
        (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2, 6, 0)"),
         "non-zero step"),
        (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat='2345'"),
         "expected a list or range(2, 6)"),
        (DARTS_V2.replace("normal_concat", "normal_concatt"),
         "unknown Genotype field 'normal_concatt' (did you mean 'normal_concat'?)"),
        (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "Genotype lacks reduce_concat"),
        (DARTS_V2[:-1] + ", normal_concat=[2])", "Genotype field 'normal_concat' is given twice"),
        (DARTS_V2.replace("Genotype(", "Genotype([], "), "field 'normal' is given twice"),
        ("Genotype([], [], [], [], [])", "Genotype takes at most 4 fields"),
        ("Genotype(*[[], [2], [], [2]])", "Genotype(*...) is not allowed"),
        ("Genotype(normal=[('sep_conv_3x3', 0)", "'[' was never closed at column 17"),
        ("", "empty architecture string"),
        ("   \n", "empty architecture string"),
        ("|nor_conv_3x3~0|+|none~0|none~1|", "not a genotype"),
    ],
)
def test_parse_errors_name_the_place_and_what_is_allowed(space, arch, expected):
    with pytest.raises(ArchitectureError) as info:
        space.validate(arch)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message  # shown to the Designer and on the command line as one line


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch {marker}')",
        "Genotype(normal=__import__('os').system('touch {marker}'), normal_concat=[2], "
        "reduce=[], reduce_concat=[2])",
        "Genotype(normal=[(open('{marker}', 'w').name, 0)] * 8, normal_concat=[2], "
        "reduce=[], reduce_concat=[2])",
        "Genotype(**dict(normal=open('{marker}', 'w')))",
        "(lambda: open('{marker}', 'w'))()",
        "[c for c in ().__class__.__base__.__subclasses__()]",
        "Genotype(normal=[(f\"{{open('{marker}', 'w')}}\", 0)] * 8)",
        "normal=[('sep_conv_3x3', 0)] + [open('{marker}', 'w')]",
        "exec(\"open('{marker}', 'w')\")",
    ],
)
def test_hostile_strings_are_refused_without_running_anything(space, marker, payload):
    with pytest.raises(ArchitectureError):
        space.validate(payload.format(marker=marker))
    assert not marker.exists()


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("x" * (MAX_ARCH_CHARS + 1), f"at most {MAX_ARCH_CHARS}"),
        (DARTS_V2 + " " * MAX_ARCH_CHARS, f"at most {MAX_ARCH_CHARS}"),
        ("[" * 1500, "not a genotype"),  # nesting deep enough to break a naive parser
        ("Genotype(normal=\x00)", "not a genotype"),
        ("Genotype(" + "-" * 1900 + "1)", "Genotype lacks normal_concat"),  # parsed, never run
    ],
)
def test_overlong_and_pathological_input(space, arch, expected):
    with pytest.raises(ArchitectureError, match=re.escape(expected)):
        space.validate(arch)


@pytest.mark.parametrize("value", [None, 42, b"Genotype()", ["normal"]])
def test_non_strings_are_architecture_errors(space, value):
    with pytest.raises(ArchitectureError, match="genotype string"):
        space.validate(value)


# --- canonical form: identities -----------------------------------------------------------------


def relabel(pairs: Pairs, concat, order: dict[int, int], swap: set[int] = frozenset()):
    """Move node states by ``order`` (old state -> new state), swapping the slots of ``swap``.

    Returns the new pairs, the concat in the same channel order (each old state renamed), and
    the map old pair position -> new pair position; None when a read would point forward.
    """
    mapping = {0: 0, 1: 1, **order}
    new: list = [None] * 8
    positions = {}
    for k in range(4):
        state = mapping[k + 2]
        for slot in (0, 1):
            op, i = pairs[2 * k + slot]
            if mapping[i] >= state:
                return None
            target = 2 * (state - 2) + (1 - slot if k in swap else slot)
            new[target] = (op, mapping[i])
            positions[2 * k + slot] = target
    return tuple(new), tuple(mapping[c] for c in concat), positions


def legal_relabellings(pairs: Pairs, concat=FULL):
    for perm in itertools.permutations(FULL):
        moved = relabel(pairs, concat, dict(zip(FULL, perm)))
        if moved is not None:
            yield moved


def remap_ops(state: dict, net: DartsNetwork, normal_map: dict, reduce_map: dict) -> dict:
    """Rename ``cells.i.ops.p`` keys by the position map of cell i's kind."""
    out = {}
    for key, value in state.items():
        match = re.match(r"cells\.(\d+)\.ops\.(\d+)\.(.*)", key)
        if match:
            cell, position, rest = int(match[1]), int(match[2]), match[3]
            position_map = reduce_map if net.cells[cell].reduction else normal_map
            key = f"cells.{cell}.ops.{position_map[position]}.{rest}"
        out[key] = value
    return out


def outputs(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        return net(x)


def test_pair_swap_and_relabelled_nodes_share_canonical_and_function(tiny):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    reference = tiny.build(BASE, 10)
    expected = outputs(reference, x)
    identity = {p: p for p in range(8)}
    checked = 0
    for perm_index, perm in enumerate(itertools.permutations(FULL)):
        # Also swap the slots of one node, a different one each time.
        moved = relabel(NORMAL, FULL, dict(zip(FULL, perm)), {perm_index % 4})
        if moved is None:
            continue
        pairs, concat, positions = moved
        other = genotype_string(pairs, concat)
        assert tiny.canonical(other) == tiny.canonical(BASE)
        net = tiny.build(other, 10)
        net.load_state_dict(remap_ops(reference.state_dict(), reference, positions, identity))
        torch.testing.assert_close(outputs(net, x), expected, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked == 12  # node 0 must precede node 3: half of the 24 orders


def test_canonical_covers_every_relabelling_of_sampled_genotypes(space):
    rng = random.Random(1)
    for _ in range(40):
        g = parse(space.sample(rng))
        reference = space.canonical(to_string(g))
        for pairs, concat, _ in legal_relabellings(g.normal):
            swapped = tuple(p for k in range(4) for p in reversed(pairs[2 * k: 2 * k + 2]))
            for normal in (pairs, swapped):
                for reduce_pairs, reduce_concat, _ in itertools.islice(
                    legal_relabellings(g.reduce), 3
                ):
                    other = genotype_string(normal, concat, reduce_pairs, reduce_concat)
                    assert space.canonical(other) == reference


def test_none_edge_input_is_normalised(tiny):
    with_none = list(NORMAL)
    with_none[3] = ("none", 0)  # node 1: sep_conv_5x5(1) + none
    a = genotype_string(with_none)
    with_none[3] = ("none", 2)
    b = genotype_string(with_none)
    assert tiny.canonical(a) == tiny.canonical(b)
    assert "('none', 0), ('sep_conv_5x5', 1)" in tiny.canonical(b)
    torch.manual_seed(0)
    net_a, net_b = tiny.build(a, 10), tiny.build(b, 10)
    net_b.load_state_dict(net_a.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(outputs(net_a, x), outputs(net_b, x))
    # A none edge no longer pins the node order: node 1 may now move before node 0.
    pinned = list(NORMAL)
    pinned[6:8] = [("none", 2), ("sep_conv_3x3", 1)]
    free = list(pinned)
    free[6] = ("none", 0)
    assert tiny.canonical(genotype_string(pinned)) == tiny.canonical(genotype_string(free))


def test_dead_nodes_take_a_fixed_form_and_do_not_change_the_output(tiny):
    # concat [2, 4]: node 3 (state 5) is unused, and node 1 (state 3) is read only by node 3.
    dead = list(NORMAL)
    dead[2:4] = [("sep_conv_5x5", 1), ("dil_conv_3x3", 0)]
    dead[6:8] = [("sep_conv_3x3", 3), ("dil_conv_5x5", 0)]
    other = list(NORMAL)
    other[2:4] = [("max_pool_3x3", 0), ("skip_connect", 1)]
    other[6:8] = [("avg_pool_3x3", 1), ("skip_connect", 4)]
    a, b = genotype_string(dead, (2, 4)), genotype_string(other, (2, 4))
    canonical = tiny.canonical(a)
    assert canonical == tiny.canonical(b)
    assert canonical.count("('none', 0), ('none', 1)") == 2
    torch.manual_seed(0)
    net_a, net_b = tiny.build(a, 10), tiny.build(b, 10)
    missing, unexpected = net_b.load_state_dict(net_a.state_dict(), strict=False)
    # Only the dead nodes' weights differ; every live weight was copied.
    positions = {re.sub(r"^cells\.\d+\.ops\.(\d+)\..*", r"\1", k) for k in unexpected}
    assert positions <= {"2", "3", "6", "7"}
    assert not missing
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(outputs(net_a, x), outputs(net_b, x))
    assert count_params(net_a) > count_params(net_b)  # dead weights still exist in the network


def test_concat_order_only_permutes_channels_that_every_reader_absorbs(tiny):
    a, b = genotype_string(NORMAL, (2, 3, 4, 5)), genotype_string(NORMAL, (5, 3, 2, 4))
    assert tiny.canonical(a) == tiny.canonical(b)
    torch.manual_seed(0)
    net_a, net_b = tiny.build(a, 10), tiny.build(b, 10)
    state = net_a.state_dict()
    for i, cell in enumerate(net_a.cells):
        if cell.reduction:  # reduce cells keep [2, 3, 4, 5] in both genotypes
            continue
        width = cell.preprocess1[1].out_channels
        index = torch.cat([torch.arange(width) + width * (s - 2) for s in (5, 3, 2, 4)])
        readers = []
        if i + 1 < len(net_a.cells):
            readers.append(f"cells.{i + 1}.preprocess1.1.weight")
        if i + 2 < len(net_a.cells):
            pre = net_a.cells[i + 2].preprocess0
            convs = ("conv_1", "conv_2") if isinstance(pre, darts_ops.FactorizedReduce) else ("1",)
            readers += [f"cells.{i + 2}.preprocess0.{conv}.weight" for conv in convs]
        if i == len(net_a.cells) - 1:
            readers.append("classifier.weight")
        for key in readers:
            state[key] = state[key][:, index]
    net_b.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(outputs(net_b, x), outputs(net_a, x), rtol=1e-5, atol=1e-6)


# --- canonical form: soundness ------------------------------------------------------------------


def random_genotype(rng: random.Random) -> str:
    """Any legal genotype: none edges and partial concats included."""

    def cell():
        pairs = [(rng.choice(OP_NAMES), i) for k in range(4) for i in rng.sample(range(k + 2), 2)]
        concat = rng.sample(FULL, rng.randint(1, 4))
        return tuple(pairs), tuple(concat)

    (n, nc), (r, rc) = cell(), cell()
    return genotype_string(n, nc, r, rc)


def live_ops(pairs: Pairs, concat) -> Counter:
    """The ops that can reach the cell output (the multiset every equivalent cell shares)."""
    live, ops = set(concat), Counter()
    for state in (5, 4, 3, 2):
        if state in live:
            for op, i in pairs[2 * (state - 2): 2 * (state - 1)]:
                if op != "none":
                    ops[op] += 1
                    live.add(i)
    return ops


def test_canonical_is_valid_idempotent_and_keeps_the_live_ops(space):
    rng = random.Random(2)
    for _ in range(300):
        arch = random_genotype(rng)
        canonical = space.canonical(arch)
        assert space.validate(canonical) == canonical
        assert space.canonical(canonical) == canonical
        g, c = parse(arch), parse(canonical)
        assert live_ops(g.normal, g.normal_concat) == live_ops(c.normal, c.normal_concat)
        assert live_ops(g.reduce, g.reduce_concat) == live_ops(c.reduce, c.reduce_concat)
        assert len(g.normal_concat) == len(c.normal_concat)  # the width is never changed


def test_different_functions_do_not_collide(space):
    assert space.canonical(DARTS_V1) != space.canonical(DARTS_V2)
    base = space.canonical(BASE)
    changed = [
        genotype_string(NORMAL[:1] + (("sep_conv_5x5", 1),) + NORMAL[2:]),  # one op
        genotype_string(NORMAL[:7] + (("sep_conv_3x3", 0),)),  # one input
        genotype_string(tuple((op, 1 - i) if i < 2 else (op, i) for op, i in NORMAL)),  # 0 <-> 1
        genotype_string(NORMAL, (2, 3, 4)),  # narrower output
        genotype_string(NORMAL, FULL, NORMAL),  # the reduce cell is its own cell
    ]
    assert len({base, *(space.canonical(a) for a in changed)}) == len(changed) + 1
    rng = random.Random(3)
    archs = [random_genotype(rng) for _ in range(300)]
    by_class: dict[str, set] = {}
    for arch in archs:
        g = parse(arch)
        key = (tuple(sorted(live_ops(g.normal, g.normal_concat).items())),
               tuple(sorted(live_ops(g.reduce, g.reduce_concat).items())))
        by_class.setdefault(space.canonical(arch), set()).add(key)
    assert all(len(keys) == 1 for keys in by_class.values())


# --- sampling, mutation, edits -------------------------------------------------------------------


def test_sample_is_valid_uniform_and_deterministic(space):
    rng = random.Random(4)
    archs = [space.sample(rng) for _ in range(500)]
    again = random.Random(4)
    assert [space.sample(again) for _ in range(5)] == archs[:5]
    ops, firsts = Counter(), Counter()
    for arch in archs:
        assert space.validate(arch) == arch
        g = parse(arch)
        assert g.normal_concat == g.reduce_concat == FULL
        ops.update(op for op, _ in g.normal + g.reduce)
        firsts[frozenset(i for _, i in g.normal[6:8])] += 1
    assert "none" not in ops and set(ops) == set(SAMPLE_OPS)
    expected = 500 * 16 / len(SAMPLE_OPS)
    assert all(abs(n - expected) < 0.15 * expected for n in ops.values()), ops
    assert len(firsts) == 10  # every unordered pair of the 5 states node 3 can read


def test_mutate_changes_one_slot_and_the_function(space):
    for seed in range(60):
        rng = random.Random(seed)
        parent = space.sample(rng) if seed % 2 else random_genotype(rng)
        child = space.mutate(parent, rng)
        assert space.validate(child) == child
        changes = space.diff(parent, child)
        assert len(changes) == 1, changes
        assert space.canonical(child) != space.canonical(parent)
        assert "-> none<-" not in changes[0]  # like sample, mutation never introduces none


def test_apply_edit_sets_op_and_input(space):
    edit = DartsEdit(cell="normal", node=3, slot=1, op="dil_conv_5x5", input=4)
    child = space.apply_edit(DARTS_V2, edit)
    assert space.diff(DARTS_V2, child) == [
        "normal node 3 slot 1: dil_conv_3x3<-2 -> dil_conv_5x5<-4"
    ]
    same_input = space.apply_edit(DARTS_V2, {"cell": "reduce", "node": 0, "slot": 0,
                                             "op": "sep_conv_3x3", "input": 0})
    assert space.diff(DARTS_V2, same_input) == [
        "reduce node 0 slot 0: max_pool_3x3<-0 -> sep_conv_3x3<-0"
    ]


@pytest.mark.parametrize(
    "edit, expected",
    [
        ({"cell": "normal", "node": 0, "slot": 0, "op": "sep_conv_3x3", "input": 2},
         "normal node 0 slot 0: input 2 is not an earlier state; node 0 may read states 0..1"),
        ({"cell": "normal", "node": 0, "slot": 0, "op": "sep_conv_3x3", "input": 1},
         "slot 1 already reads state 1; the two inputs of a node must be distinct"),
        ({"cell": "normal", "node": 0, "slot": 0, "op": "sep_conv_3x3", "input": 0},
         "normal node 0 slot 0 already is sep_conv_3x3<-0; an edit must change"),
        ({"cell": "middle", "node": 0, "slot": 0, "op": "sep_conv_3x3", "input": 0},
         "invalid DARTS edit"),
        ({"cell": "normal", "node": 4, "slot": 0, "op": "sep_conv_3x3", "input": 0},
         "node 0..3"),
        ({"cell": "normal", "node": 0, "slot": 0, "op": "conv", "input": 0}, "op one of none"),
    ],
)
def test_apply_edit_errors(space, edit, expected):
    with pytest.raises(ArchitectureError, match=re.escape(expected)):
        space.apply_edit(DARTS_V2, edit)


def test_edit_schema_is_all_literals():
    from typing import Literal, get_args, get_origin

    fields = DartsEdit.model_fields
    assert list(fields) == ["cell", "node", "slot", "op", "input"]
    assert all(get_origin(f.annotation) is Literal for f in fields.values())
    assert get_args(fields["op"].annotation) == OP_NAMES
    assert get_args(fields["input"].annotation) == (0, 1, 2, 3, 4, 5)


def test_diff_reports_concat_changes(space):
    child = DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 5]")
    assert space.diff(DARTS_V2, child) == ["reduce concat: [2, 3, 4, 5] -> [2, 5]"]
    assert space.diff(DARTS_V2, _respell(DARTS_V2)[0]) == []


def test_worked_example_is_a_mediocre_parent_and_a_real_edit(space):
    example = EXAMPLES["darts"]
    assert len(example["rationale"]) < 80
    parent, output = worked_example(space, "edit")
    assert space.validate(parent) == parent
    assert space.canonical(parent) not in {space.canonical(DARTS_V1), space.canonical(DARTS_V2)}
    child = space.apply_edit(parent, DartsEdit(**{k: v for k, v in output.items()
                                                  if k != "rationale"}))
    assert space.canonical(child) != space.canonical(parent)
    assert worked_example(space, "whole")[1]["arch"] == child


def test_designer_applies_a_scripted_darts_edit(space):
    from agents.designer import Designer, DesignRequest
    from agents.models import scripted_model
    from prompts import load_prompt
    from tools.proxies import get_proxy

    reply = {"cell": "reduce", "node": 3, "slot": 1, "op": "sep_conv_5x5", "input": 4,
             "rationale": "a conv where the reduce cell only pools"}
    model = scripted_model([json.dumps(reply)], max_retries=0)
    designer = Designer(model, space=space, dataset="cifar10", proxy=get_proxy("synflow"),
                        prompt=load_prompt("designer@v2"))
    result = designer.propose(DesignRequest(parent_arch=DARTS_V1, parent_score=1.0, iteration=1),
                              seen=set(), temperature=0.5, seed=0)
    assert result.ok and result.child == space.apply_edit(
        DARTS_V1, DartsEdit(cell="reduce", node=3, slot=1, op="sep_conv_5x5", input=4))
    assert space.describe_text() in result.messages[0]["content"]


# --- budgets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{}, {"channels": 6, "layers": 7, "auxiliary": True}, {"channels": 3, "layers": 2}]
)
def test_analytic_param_count_matches_the_built_network(kwargs):
    space, rng = DartsSpace(**kwargs), random.Random(6)
    for _ in range(12):
        arch = random_genotype(rng)  # none edges, stride-2 skips and partial concats included
        assert space.count_params(arch, 7) == count_params(space.build(arch, 7)), arch


def test_param_budget_bounds_sample_and_mutate_and_names_the_figures():
    plain = DartsSpace()
    assert plain.count_params(DARTS_V2) == count_params(plain.build(DARTS_V2, 10)) == 246_106
    tight = DartsSpace(max_params=200_000)
    rng = random.Random(5)
    for _ in range(5):
        arch = tight.sample(rng)
        assert tight.check_budget(arch) <= 200_000
        assert tight.check_budget(tight.mutate(arch, rng)) <= 200_000
    with pytest.raises(ArchitectureError, match=r"246,106 parameters exceed max_params=200,000"):
        tight.check_budget(DARTS_V2)
    with pytest.raises(ArchitectureError, match="no random genotype fit max_params=1,000"):
        DartsSpace(max_params=1000).sample(random.Random(0))


# --- networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution, final", [(32, 8), (16, 4)])
def test_forward_shapes_at_32_and_16(space, resolution, final):
    torch.manual_seed(0)
    net = space.build(DARTS_V2, 10)
    x = torch.randn(2, 3, resolution, resolution)
    assert net(x).shape == (2, 10)
    assert net.forward_features(x).shape == (2, 4 * 4 * 16, final, final)
    assert net.aux_logits is None and net.drop_path_prob == 0.0


def test_ops_follow_the_published_definitions():
    x = torch.ones(2, 4, 8, 8)
    for name in OP_NAMES:
        for stride in (1, 2):
            assert make_op(name, 4, stride)(x).shape == (2, 4, 8 // stride, 8 // stride), name
    assert torch.equal(make_op("avg_pool_3x3", 4, 1)(x), x)  # borders average real pixels only
    assert not make_op("none", 4, 2)(x).any()
    sep = make_op("sep_conv_5x5", 4, 2)
    depthwise = [m for m in sep.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 4]
    assert [(m.kernel_size, m.stride, m.padding) for m in depthwise] == [
        ((5, 5), (2, 2), (2, 2)), ((5, 5), (1, 1), (2, 2))
    ]
    assert sum(isinstance(m, torch.nn.ReLU) for m in sep.modules()) == 2
    dil = make_op("dil_conv_5x5", 4, 1)
    assert (dil[1].dilation, dil[1].padding, dil[1].groups) == ((2, 2), (4, 4), 4)
    assert isinstance(make_op("skip_connect", 4, 2), darts_ops.FactorizedReduce)
    assert all(m.affine for m in sep.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_auxiliary_logits_only_in_training_and_at_32(tiny):
    space = DartsSpace(channels=4, layers=5, auxiliary=True)
    torch.manual_seed(0)
    net = space.build(DARTS_V2, 7)
    net.train()
    logits = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7) and net.aux_logits.shape == (2, 7)
    (logits.sum() + 0.4 * net.aux_logits.sum()).backward()  # the trainer's combined loss
    assert net.auxiliary_head.classifier.weight.grad is not None
    net(torch.randn(2, 3, 16, 16))  # 4x4 after the second reduction: too small, skipped
    assert net.aux_logits is None
    net.eval()
    net(torch.randn(2, 3, 32, 32))
    assert net.aux_logits is None
    plain = tiny.build(DARTS_V2, 7).train()
    plain(torch.randn(2, 3, 32, 32))
    assert plain.aux_logits is None and plain.auxiliary_head is None


def test_drop_path_prob_is_respected(tiny):
    torch.manual_seed(0)
    net = tiny.build(BASE, 10)
    x = torch.randn(4, 3, 16, 16)
    net.train()
    first, second = net(x), net(x)
    torch.testing.assert_close(first, second)  # no drop-path: training forward is deterministic
    net.drop_path_prob = 0.5
    torch.manual_seed(1)
    dropped = net(x)
    assert not torch.allclose(dropped, first)
    net.eval()  # drop-path is a training-time regulariser only
    reference = net(x)
    net.drop_path_prob = 0.0
    torch.testing.assert_close(net(x), reference)


def test_drop_path_spares_identity_ops_and_scales_survivors():
    only_skips = tuple(("skip_connect", i) for k in range(4) for i in (k, k + 1))
    cell = DartsCell(only_skips, FULL, 8, 8, 8, reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(3, 8, 6, 6), torch.randn(3, 8, 6, 6)
    torch.testing.assert_close(cell(s0, s1, 0.9), cell(s0, s1, 0.0))
    torch.manual_seed(0)
    x = torch.ones(10_000, 1, 1, 1)
    y = drop_path(x, 0.25)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.03 and torch.allclose(y[y != 0], torch.tensor(1 / 0.75))


def test_reduce_cell_strides_only_edges_from_the_cell_inputs(tiny):
    net = tiny.build(DARTS_V2, 10)
    reduce_cell = next(c for c in net.cells if c.reduction)
    pairs = parse(DARTS_V2).reduce
    skips = [op for (name, _), op in zip(pairs, reduce_cell.ops) if name == "skip_connect"]
    assert all(isinstance(op, torch.nn.Identity) for op in skips)  # they all read state 2
    first = tiny.build(BASE, 10).cells[1]
    assert first.reduction and isinstance(first.ops[4], darts_ops.FactorizedReduce)
    assert isinstance(first.ops[2], torch.nn.Identity)  # skip_connect from state 2
    assert isinstance(net.cells[2].preprocess0, darts_ops.FactorizedReduce)  # after a reduction


def test_darts_v2_has_the_published_size():
    space = DartsSpace(channels=36, layers=20, auxiliary=False)
    net = space.build(DARTS_V2, 10)
    params = count_params(net)
    assert params == 3_349_342  # DARTS reports 3.3M (its train.py logs 3.349342 MB)
    assert 3.2e6 <= params <= 3.4e6
    assert space.count_params(DARTS_V2) == params
    with_aux = DartsSpace(channels=36, layers=20, auxiliary=True).count_params(DARTS_V2)
    head = 768 * 10 + 10 + 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768
    assert with_aux - params == head


# --- descriptions --------------------------------------------------------------------------------


def test_describe_text_and_code(space):
    text = space.describe_text()
    for op in OP_NAMES:
        assert op in text
    for needle in ("C=16", "cells 2 and 5", "node k may read", "states 0..k+1", "864 parameters",
                   "cell, node, slot, op, input", "DIFFERENT"):
        assert needle in text
    assert DARTS_V2 not in text and DARTS_V1 not in text  # no known good answer in the prompt
    code = space.describe_code()
    for obj in (DartsCell, DartsNetwork, darts_ops.SepConv, darts_ops.DilConv, darts_ops.Zero,
                darts_ops.FactorizedReduce, darts_ops.make_op, darts_ops.AuxiliaryHeadCIFAR):
        assert inspect.getsource(obj) in code
    for op in OP_NAMES:
        assert f'"{op}"' in code
    compile(code, "<describe_code>", "exec")  # real, complete Python source


# --- the evaluator and its command line ---------------------------------------------------------


@pytest.mark.slow
def test_real_proxies_score_darts_networks_in_the_sandbox():
    from tools.evaluate import EvalSettings, Evaluator

    settings = EvalSettings(
        space="darts",
        proxies=("params", "flops", "synflow", "naswot"),
        device="cpu",
        timeout_s=120,
        batch_size=8,
        space_options=(("channels", 8), ("layers", 5)),
    )
    swapped = parse(DARTS_V2)
    swapped = to_string(swapped._replace(normal=swapped.normal[1::-1] + swapped.normal[2:]))
    with Evaluator(settings, workers=1) as evaluator:
        results = evaluator.evaluate([DARTS_V2, DARTS_V1, "Genotype(nope)", swapped])
    v2, v1, bad, twin = results
    expected_params = DartsSpace(channels=8, layers=5).count_params(DARTS_V2)
    for result in (v2, v1):
        assert result.ok, result.error
        assert set(result.scores) == {"params", "flops", "synflow", "naswot"}
        assert all(math.isfinite(v) for v in result.scores.values())
    assert v2.params == expected_params and v2.scores["params"] > v1.scores["params"]
    assert bad.error.kind == "invalid_architecture" and "Genotype" in bad.error.message
    assert twin.cached and twin.scores == v2.scores  # same canonical form: scored once
    assert evaluator.stats["evaluated"] == 2


@pytest.mark.slow
def test_cli_scores_darts_v2(capsys):
    from tools.evaluate import main
    from tools.evaluate_cli import _parser

    assert "darts" in _parser().format_help()
    argv = ["--space", "darts", "--proxy", "params", "--arch", DARTS_V2, "--device", "cpu",
            "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["params"] == 246_106 == out["scores"]["params"]
    bad = ["--space", "darts", "--proxy", "params", "--arch", DARTS_V2.replace("max_", "mx_")]
    assert main(bad) == 1
    assert "did you mean 'max_pool_3x3'" in capsys.readouterr().out

