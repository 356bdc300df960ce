"""Behaviour of the zero-cost proxies and their driver on real tiny networks.

Run: .venv/bin/python -m pytest -q tests/test_proxies.py
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tools.proxies as proxies_module
from tools.proxies import (
    Batch,
    ProxyFailure,
    get_proxy,
    load_builtin,
    proxy,
    proxy_names,
    resolve_device,
    score_network,
)

ALL = (
    "zen", "synflow", "naswot", "grad_norm", "snip", "grasp", "fisher", "jacov",
    "te_nas", "zico", "params", "flops", "random",
)
RESOLUTION = 8


class ConvNet(nn.Module):
    """Two conv-BN-ReLU layers, global pooling and a linear classifier."""

    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.classifier = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean(dim=(2, 3)))


class PlainConvNet(nn.Module):
    """Like ConvNet but without ``forward_features`` (Zen falls back to the Linear's input)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class LinearOnly(nn.Module):
    """A single linear map from pixels to logits: no ReLU, no BN."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * RESOLUTION * RESOLUTION, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Exploding(ConvNet):
    """A ConvNet whose logits are infinite."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("inf")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run on one thread: the nets are tiny, and extra threads only contend on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(cls, *args, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls(*args)


def batch(size: int = 8, seed: int = 0) -> Batch:
    return Batch.synthetic(batch_size=size, resolution=RESOLUTION, num_classes=10, seed=seed)


def test_registry_lists_every_builtin_proxy():
    assert set(proxy_names()) == set(ALL)
    assert get_proxy("te_nas").higher_is_better is False
    assert not get_proxy("params").needs_data and not get_proxy("random").needs_data
    assert all(get_proxy(name).summary for name in ALL)


def test_every_proxy_is_finite_on_a_tiny_convnet():
    scores = score_network(make(ConvNet), ALL, batch())
    failures = {k: v for k, v in scores.items() if isinstance(v, ProxyFailure)}
    assert not failures, {k: v.message for k, v in failures.items()}


def test_scores_repeat_exactly_for_the_same_seed_and_change_with_it():
    net = make(ConvNet)
    first = score_network(net, ALL, batch(), seed=3)
    second = score_network(net, ALL, batch(), seed=3)
    assert first == second
    other = score_network(net, ["zen", "random"], batch(), seed=4)
    assert other["zen"] != first["zen"] and other["random"] != first["random"]


def test_scores_do_not_depend_on_proxy_order_or_mutate_the_callers_net():
    net = make(ConvNet)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    forward = score_network(net, ALL, batch())
    backward = score_network(net, tuple(reversed(ALL)), batch())
    assert forward == backward
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_wider_network_has_more_params_flops_and_synflow():
    narrow = score_network(make(ConvNet, 4), ["params", "flops", "synflow"], batch())
    wide = score_network(make(ConvNet, 16), ["params", "flops", "synflow"], batch())
    for name in ("params", "flops", "synflow"):
        assert wide[name] > narrow[name], name


def test_params_and_flops_count_the_layers():
    scores = score_network(make(LinearOnly), ["params", "flops"], batch())
    inputs = 3 * RESOLUTION * RESOLUTION
    assert scores["params"] == inputs * 10 + 10
    assert scores["flops"] == inputs * 10  # multiply-adds of the matmul; the bias add is free


def test_random_baseline_differs_between_networks():
    scores = [score_network(make(ConvNet, w), ["random"], batch())["random"] for w in (4, 8, 16)]
    assert len(set(scores)) == 3 and all(0.0 <= s < 1.0 for s in scores)


def test_networks_without_forward_features_or_relu():
    plain = score_network(make(PlainConvNet), ALL, batch())
    assert all(not isinstance(v, ProxyFailure) for v in plain.values()), plain
    linear = score_network(make(LinearOnly), ["naswot", "synflow", "grad_norm", "zen"], batch())
    assert linear["naswot"].kind == "crashed" and "ReLU" in linear["naswot"].message
    assert all(not isinstance(linear[k], ProxyFailure) for k in ("synflow", "grad_norm", "zen"))


def test_exploding_network_gives_non_finite_failures():
    exploding = ["synflow", "grad_norm", "snip", "grasp", "fisher", "jacov", "te_nas"]
    scores = score_network(make(Exploding), [*exploding, "naswot", "zen"], batch())
    assert {name: getattr(scores[name], "kind", scores[name]) for name in exploding} == {
        name: "non_finite" for name in exploding
    }
    # Both read the network before the classifier, where nothing is infinite yet.
    assert isinstance(scores["naswot"], float) and isinstance(scores["zen"], float)


def test_a_proxy_that_raises_is_reported_as_crashed(monkeypatch):
    load_builtin()
    monkeypatch.setattr(proxies_module, "_PROXIES", dict(proxies_module._PROXIES))

    @proxy("boom_for_test")
    def boom(net, batch):
        raise RuntimeError("kaboom")

    scores = score_network(make(ConvNet), ["boom_for_test", "params"], batch())
    assert scores["boom_for_test"].kind == "crashed" and "kaboom" in scores["boom_for_test"].message
    assert scores["params"] > 0


def test_registry_rejects_duplicates_and_names_the_choices():
    load_builtin()
    with pytest.raises(KeyError, match="synflow"):
        proxy("synflow")(lambda net, batch: 0.0)
    with pytest.raises(ValueError, match="choose from: .*naswot.*synflow"):
        get_proxy("synflw")


def test_batches_too_small_to_compare_fail_cleanly():
    scores = score_network(make(ConvNet), ["naswot", "jacov", "zico", "te_nas"], batch(size=1))
    assert all(v.kind == "crashed" and "at least 2" in v.message for v in scores.values())


def test_a_real_batch_can_replace_the_synthetic_one():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, RESOLUTION, RESOLUTION, generator=generator)  # pixel-like in [0, 1)
    real = Batch(images, torch.arange(8) % 10, num_classes=10)
    scores = score_network(make(ConvNet), ["naswot", "snip", "jacov"], real)
    synthetic = score_network(make(ConvNet), ["naswot", "snip", "jacov"], batch())
    assert all(isinstance(v, float) for v in scores.values())
    assert scores != synthetic


def test_nb201_cells_order_by_size_and_dead_cells_fail_typed():
    nb201 = pytest.importorskip("tools.spaces.nb201")
    space = nb201.NB201Space(channels=4, cells_per_stage=1)  # the real ops, a tiny skeleton
    cell = "|{0}~0|+|{0}~0|{0}~1|+|{0}~0|{0}~1|{0}~2|"
    small = Batch.synthetic(batch_size=4, resolution=8, num_classes=10, seed=0)
    ops = ("nor_conv_3x3", "skip_connect", "none")
    nets = {op: make(space.build, cell.format(op), 10) for op in ops}
    conv, skip, dead = (score_network(nets[op], ALL, small) for op in nets)
    assert all(isinstance(v, float) for v in conv.values()), conv
    for name in ("params", "flops", "synflow"):
        assert conv[name] > skip[name], name
    # An all-none cell cuts the input off: the input-dependent proxies cannot score it.
    for name in ("naswot", "jacov", "zen"):
        assert isinstance(dead[name], ProxyFailure) and dead[name].kind == "non_finite", name
    # A live cell with a conv fed only by a `none` edge: its BN sees zeros, zen must still score.
    fed_by_zero = "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|"
    zen = score_network(make(space.build, fed_by_zero, 10), ["zen"], small)["zen"]
    assert isinstance(zen, float), zen


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_proxies_run_on_cuda_and_agree_with_cpu():
    cpu = score_network(make(ConvNet), ALL, batch())
    cuda = score_network(make(ConvNet).cuda(), ALL, batch())  # batch follows the net's device
    for name in ALL:
        assert isinstance(cuda[name], float), (name, cuda[name])
    for name in ("params", "flops", "random"):
        assert cuda[name] == cpu[name]
    for name in ("synflow", "naswot", "grad_norm", "snip"):
        assert cuda[name] == pytest.approx(cpu[name], rel=1e-3), name
