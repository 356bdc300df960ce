"""Tests for the NAS-Bench-201 search space: parsing, canonical forms, mutation, networks."""

from __future__ import annotations

import ast
import inspect
import json
import random
from pathlib import Path

import pytest
import torch

from tools.costs import count_params
from tools.spaces import ArchitectureError, nb201_ops
from tools.spaces.nb201 import (
    EDGE_NAMES,
    NB201Edit,
    NB201Space,
    isomorphism_key,
    parse,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALL_CONV = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
    "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
MIXED = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Intra-op threads only add contention on the small shared CPUs these tests run on.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


@pytest.fixture(scope="module")
def tiny() -> NB201Space:
    return NB201Space(channels=4, cells_per_stage=1)


# --- parsing ---------------------------------------------------------------------------------


def test_registered_under_nb201():
    # get_space("nb201") imports every built-in space, so check the decorator's mark directly.
    assert NB201Space.name == "nb201"
    assert NB201Space().edit_schema is NB201Edit


@pytest.mark.parametrize(
    "spelling",
    [
        MIXED,
        f"  {MIXED}\n",
        MIXED.strip("|"),
        "| nor_conv_1x1 ~0 | + |skip_connect~0| avg_pool_3x3~1 | + "
        "|none~0|nor_conv_1x1~1|skip_connect~2|",
    ],
)
def test_validate_accepts_spellings_and_returns_standard(space, spelling):
    assert space.validate(spelling) == MIXED


def test_round_trip_every_sampled_cell(space):
    rng = random.Random(0)
    for _ in range(200):
        arch = space.sample(rng)
        assert space.validate(arch) == arch


@pytest.mark.parametrize(
    ("arch", "fragments"),
    [
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|conv3x3~1|+|none~0|none~1|none~2|",
            ["node 2, input 1", "position 3 of 6", "'conv3x3'", "allowed: none, skip_connect"],
        ),
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~2|+|none~0|none~1|none~2|",
            ["node 2, input 1", "'~2'", "expected '~1'"],
        ),
        ("|nor_conv_3x3~0|+|none~0|none~1|", ["expected 3 node groups", "got 2"]),
        ("|a~0|+|b~0|+|c~0|+|d~0|", ["expected 3 node groups", "got 4"]),
        (
            "|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|",
            ["node 2 must list exactly 2 input"],
        ),
        (
            "|nor_conv_3x3~0|+|none~0|none~1|+|none~0||none~2|",
            ["node 3 must list exactly 3 input"],
        ),
        (
            "|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|",
            ["node 1, input 0", "lacks '~0'"],
        ),
        ("", ["empty architecture string"]),
        ("   \n\t", ["empty architecture string"]),
        ("|" + "x" * 1000 + "|", ["1002 characters"]),
        (
            "|nor_conv_3×3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            ["node 1, input 0", "'nor_conv_3×3'", "did you mean 'nor_conv_3x3'"],
        ),
        (
            "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip\u200b_connect~2|",
            ["node 3, input 2", "position 6 of 6", "skip\\u200b_connect"],
        ),
    ],
)
def test_validate_errors_name_the_problem(space, arch, fragments):
    with pytest.raises(ArchitectureError) as info:
        space.validate(arch)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_non_string_is_an_architecture_error(space):
    with pytest.raises(ArchitectureError, match="string"):
        space.validate(["nor_conv_3x3"] * 6)  # type: ignore[arg-type]


# --- canonical forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # Edges out of node 1 are all `none`, so the op on 1<-0 never reaches the output.
        (
            "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|",
            "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|",
        ),
        # Node 1 is zero (1<-0 is none), so whatever reads from it is zero too.
        (
            "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|skip_connect~2|",
            "|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|skip_connect~2|",
        ),
        # Node 3 ignores nodes 1 and 2 entirely.
        (
            "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
        ),
        # Nodes 1 and 2 swapped (2<-1 is none, so the swap maps the cell onto itself).
        (
            "|avg_pool_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|skip_connect~2|",
            "|none~0|+|avg_pool_3x3~0|none~1|+|nor_conv_3x3~0|skip_connect~1|skip_connect~2|",
        ),
        # skip_connect is the identity: a conv reading node 1 = skip(x) is a conv reading x.
        (
            "|skip_connect~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|",
            "|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_1x1~1|none~2|",
        ),
    ],
)
def test_equivalent_cells_share_a_canonical_form(space, a, b):
    assert space.canonical(a) == space.canonical(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (ALL_CONV, ALL_CONV.replace("nor_conv_3x3~2", "nor_conv_1x1~2")),
        # conv then pool is not pool then conv.
        (
            "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|",
            "|avg_pool_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|",
        ),
        # A live skip from the input changes the output.
        (MIXED, MIXED.replace("none~0|nor_conv_1x1~1", "skip_connect~0|nor_conv_1x1~1")),
    ],
)
def test_different_functions_have_different_canonical_forms(space, a, b):
    assert space.canonical(a) != space.canonical(b)


def test_canonical_is_a_valid_idempotent_member_of_the_class(space):
    rng = random.Random(1)
    for _ in range(100):
        arch = space.sample(rng)
        canon = space.canonical(arch)
        assert space.validate(canon) == canon
        assert space.canonical(canon) == canon
        assert isomorphism_key(parse(canon)) == isomorphism_key(parse(arch))


def test_dead_edges_become_none_in_the_representative(space):
    canon = space.canonical(
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|"
    )
    assert canon == "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"


def test_canonical_count_matches_nas_bench_201(space):
    assert space.info()["num_unique"] == 6466
    assert space.info()["num_archs"] == 15625


# --- sampling and mutation ---------------------------------------------------------------------


def test_neighbours_are_24_distinct_valid_single_edge_changes(space):
    for arch in (ALL_CONV, MIXED):
        children = space.neighbours(arch)
        assert len(children) == 24 == len(set(children))
        assert arch not in children
        for child in children:
            assert space.validate(child) == child
            assert len(space.diff(arch, child)) == 1


def test_sample_is_seeded_and_covers_all_ops(space):
    draws = [space.sample(random.Random(7)) for _ in range(3)]
    assert len(set(draws)) == 1
    rng = random.Random(3)
    many = [space.sample(rng) for _ in range(300)]
    assert len(set(many)) > 290
    ops_seen = {op for arch in many for op in parse(arch)}
    assert ops_seen == set(nb201_ops.OP_NAMES)


def test_mutate_returns_a_neighbour_deterministically(space):
    child = space.mutate(MIXED, random.Random(5))
    assert child in space.neighbours(MIXED)
    assert child == space.mutate(MIXED, random.Random(5))


def test_apply_edit_and_diff(space):
    child = space.apply_edit(MIXED, NB201Edit(edge="2<-1", op="nor_conv_3x3"))
    assert space.diff(MIXED, child) == ["edge 2<-1: avg_pool_3x3 -> nor_conv_3x3"]
    assert space.apply_edit(MIXED, {"edge": "3<-0", "op": "skip_connect"}) != MIXED
    with pytest.raises(ArchitectureError, match="already uses avg_pool_3x3"):
        space.apply_edit(MIXED, NB201Edit(edge="2<-1", op="avg_pool_3x3"))
    with pytest.raises(ArchitectureError, match="edge must be one of"):
        space.apply_edit(MIXED, {"edge": "4<-0", "op": "none"})
    assert space.diff(MIXED, MIXED) == []


def test_edit_schema_lists_exactly_the_edges_and_ops():
    schema = NB201Edit.model_json_schema()
    assert schema["properties"]["edge"]["enum"] == list(EDGE_NAMES)
    assert schema["properties"]["op"]["enum"] == list(nb201_ops.OP_NAMES)
    assert set(schema["properties"]) == {"edge", "op"}


# --- networks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("resolution", "classes"), [(32, 10), (32, 100), (16, 120)])
def test_forward_shapes(tiny, resolution, classes):
    net = tiny.build(MIXED, classes)
    x = torch.randn(2, 3, resolution, resolution)
    assert net(x).shape == (2, classes)
    features = net.forward_features(x)
    assert features.shape == (2, 16, resolution // 4, resolution // 4)
    assert (features >= 0).all()  # after the final ReLU


def test_full_size_network_forward_and_param_count(space):
    torch.manual_seed(0)
    net = space.build(ALL_CONV, 10)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        assert net.forward_features(torch.randn(1, 3, 16, 16)).shape == (1, 64, 4, 4)
    # NAS-Bench-201's published size for the all-3x3 cell on CIFAR-10.
    assert count_params(net) == 1_531_546
    assert count_params(space.build("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 10)) < 0.1e6


def test_zero_cell_blocks_the_cell_path(tiny):
    net = tiny.build("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 10).eval()
    cell = net.cells[0]
    assert torch.count_nonzero(cell(torch.randn(1, 4, 8, 8))) == 0


@pytest.mark.skipif(
    not (DATA / "naslib_zc_nb201_sample.json").exists(), reason="needs ../shared/data"
)
def test_params_match_naslib(space):
    from tools.truth import naslib_key_to_arch

    data = json.loads((DATA / "naslib_zc_nb201_sample.json").read_text())
    for dataset, classes in (("cifar10", 10), ("cifar100", 100), ("ImageNet16-120", 120)):
        for key in list(data[dataset])[:3]:
            net = space.build(naslib_key_to_arch(key), classes)
            assert count_params(net) / 1e6 == pytest.approx(
                data[dataset][key]["params"]["score"], abs=1e-4
            )


# --- descriptions ------------------------------------------------------------------------------


def test_describe_code_is_the_real_source(space):
    code = space.describe_code()
    for obj in (
        nb201_ops.ReLUConvBN,
        nb201_ops.NB201Cell,
        nb201_ops.NB201Network,
        nb201_ops.make_op,
    ):
        assert inspect.getsource(obj) in code
    ast.parse(code)


def test_describe_text_covers_edges_ops_and_rule(space):
    text = space.describe_text()
    for word in (*EDGE_NAMES, *nb201_ops.OP_NAMES, "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|", "24"):
        assert word in text
    assert space.validate(text.split("Example:\n")[1].split()[0])
