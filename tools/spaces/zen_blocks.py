"""Zen-NAS macro blocks: the modules a block string builds, and their exact costs.

A block string such as ``SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)`` is a sequence of
super-blocks; each expands into convolution layers and residual units with the wiring of Zen-NAS's
``PlainNet`` (idstcv/ZenNAS), re-implemented here as plain ``nn.Module`` classes:

* every convolution is bias-free with padding ``k // 2`` and is followed by BatchNorm;
* a residual unit's main branch ends in BatchNorm, the shortcut is added, then ReLU is applied;
* the first unit of a residual super-block always has a projection shortcut (1x1 conv + BN);
  later units use identity unless stride or channel count change;
* ``SuperResK1KXK1`` and ``SuperResIDWEXKX`` stack *two* units per ``sub_layers``.

``block_cost``/``network_cost`` count parameters and FLOPs analytically with torch's
``FlopCounterMode`` convention (a multiply-add is 2 FLOPs; BatchNorm, ReLU, additions and pooling
are free), so budgets can be checked without building a network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from tools.spaces.zen_dsl import BlockSpec

#: Zen-NAS's MasterNet sets every BatchNorm's eps to 1e-3; we keep its value.
BN_EPS = 1e-3


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Return a bias-free kxk convolution (padding k//2) and its BatchNorm."""
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout, eps=BN_EPS)]


class ResidualUnit(nn.Module):
    """Compute ``relu(main(x) + shortcut(x))``; the main branch ends in BatchNorm, not ReLU.

    The shortcut is a 1x1 convolution (with bias, as in Zen-NAS) plus BatchNorm when ``project``
    is set, the stride is 2 or the channel count changes; identity otherwise. With
    ``residual=False`` there is no shortcut at all (Zen-NAS's ``no_reslink``, used by its
    Zen-score): the unit computes ``relu(main(x))``.
    """

    def __init__(
        self,
        main: list[nn.Module],
        cin: int,
        cout: int,
        stride: int,
        project: bool = False,
        residual: bool = True,
    ):
        super().__init__()
        self.main = nn.Sequential(*main)
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (project or stride != 1 or cin != cout):
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=True), nn.BatchNorm2d(cout, eps=BN_EPS)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the main branch, add the shortcut, then ReLU."""
        out = self.main(x)
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class SuperConvKXBNRELU(nn.Sequential):
    """``sub_layers`` x (kxk conv -> BN -> ReLU), no shortcut; the first layer has the stride."""

    def __init__(self, cin: int, cout: int, stride: int, sub_layers: int, kernel: int):
        layers: list[nn.Module] = []
        for i in range(sub_layers):
            layers += conv_bn(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1)
            layers.append(nn.ReLU())
        super().__init__(*layers)


class SuperResKXKX(nn.Sequential):
    """``sub_layers`` basic residual units; only the first one strides.

    Unit: kxk conv (-> bottleneck, stride) -> BN -> ReLU -> kxk conv (-> out) -> BN,
    + shortcut, ReLU.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        bottleneck: int,
        sub_layers: int,
        kernel: int,
        residual: bool = True,
    ):
        units = []
        for i in range(sub_layers):
            c, s = (cin, stride) if i == 0 else (cout, 1)
            main = [
                *conv_bn(c, bottleneck, kernel, s),
                nn.ReLU(),
                *conv_bn(bottleneck, cout, kernel),
            ]
            units.append(ResidualUnit(main, c, cout, s, project=i == 0, residual=residual))
        super().__init__(*units)


class SuperResK1KXK1(nn.Sequential):
    """``sub_layers`` x TWO bottleneck units; only the very first one strides.

    Unit: 1x1 conv (-> bottleneck) -> BN -> ReLU -> kxk conv (stride) -> BN -> ReLU ->
    1x1 conv (-> out) -> BN, + shortcut, ReLU. The first unit of a pair maps its input to out,
    the second maps out to out.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        bottleneck: int,
        sub_layers: int,
        kernel: int,
        residual: bool = True,
    ):
        units = []
        for i in range(sub_layers):
            c, s = (cin, stride) if i == 0 else (cout, 1)
            for unit_in, unit_stride, project in ((c, s, i == 0), (cout, 1, False)):
                main = [
                    *conv_bn(unit_in, bottleneck, 1),
                    nn.ReLU(),
                    *conv_bn(bottleneck, bottleneck, kernel, unit_stride),
                    nn.ReLU(),
                    *conv_bn(bottleneck, cout, 1),
                ]
                units.append(ResidualUnit(main, unit_in, cout, unit_stride, project, residual))
        super().__init__(*units)


class SuperResIDWEXKX(nn.Sequential):
    """``sub_layers`` x TWO inverted-residual (MobileNetV2-style) units, wired as in Zen-NAS.

    Unit A: 1x1 conv (-> E*bottleneck) -> BN -> ReLU -> depthwise kxk (stride) -> BN -> ReLU ->
    1x1 conv (-> bottleneck) -> BN, plus shortcut, then ReLU;
    Unit B: 1x1 conv (bottleneck -> E*out) -> BN -> ReLU -> depthwise kxk -> BN -> ReLU ->
    1x1 conv (-> out) -> BN, plus shortcut, then ReLU. E is the expansion in the block name.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        bottleneck: int,
        sub_layers: int,
        kernel: int,
        expansion: int,
        residual: bool = True,
    ):
        units = []
        for i in range(sub_layers):
            c, s = (cin, stride) if i == 0 else (cout, 1)
            for unit_in, unit_out, unit_stride, project in (
                (c, bottleneck, s, i == 0),
                (bottleneck, cout, 1, False),
            ):
                wide = unit_out * expansion
                main = [
                    *conv_bn(unit_in, wide, 1),
                    nn.ReLU(),
                    *conv_bn(wide, wide, kernel, unit_stride, groups=wide),
                    nn.ReLU(),
                    *conv_bn(wide, unit_out, 1),
                ]
                units.append(ResidualUnit(main, unit_in, unit_out, unit_stride, project, residual))
        super().__init__(*units)


def build_block(spec: BlockSpec, residual: bool = True) -> nn.Module:
    """Build the module of one parsed block."""
    t = spec.type
    args = (spec.in_channels, spec.out_channels, spec.stride)
    if t.family == "conv":
        return SuperConvKXBNRELU(*args, spec.sub_layers, t.kernel)
    assert spec.bottleneck is not None
    if t.family == "basic":
        return SuperResKXKX(*args, spec.bottleneck, spec.sub_layers, t.kernel, residual)
    if t.family == "bottleneck":
        return SuperResK1KXK1(*args, spec.bottleneck, spec.sub_layers, t.kernel, residual)
    assert t.expansion is not None
    return SuperResIDWEXKX(*args, spec.bottleneck, spec.sub_layers, t.kernel, t.expansion, residual)


class ZenMacroNet(nn.Module):
    """The blocks in sequence, then global average pooling and a linear classifier."""

    def __init__(self, blocks: Sequence[BlockSpec], num_classes: int, residual: bool = True):
        super().__init__()
        self.blocks = nn.Sequential(*(build_block(b, residual) for b in blocks))
        self.classifier = nn.Linear(blocks[-1].out_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last block's feature map, before global pooling (what Zen-score measures)."""
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits."""
        pooled = F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)
        return self.classifier(pooled)


# ----------------------------------------------------------------------------------------------
# Exact costs, mirroring the modules above (tests check them against count_params/count_flops).

#: A convolution as (in_channels, out_channels, kernel, stride, groups).
Conv = tuple[int, int, int, int, int]


def _units(spec: BlockSpec) -> Iterator[tuple[list[Conv], int, int, int, bool]]:
    """Yield the residual units of a residual block as (convs, in, out, stride, project)."""
    k, b, cout, e = spec.type.kernel, spec.bottleneck or 0, spec.out_channels, spec.type.expansion
    for i in range(spec.sub_layers):
        c, s = (spec.in_channels, spec.stride) if i == 0 else (cout, 1)
        if spec.type.family == "basic":
            yield [(c, b, k, s, 1), (b, cout, k, 1, 1)], c, cout, s, i == 0
        elif spec.type.family == "bottleneck":
            for u_in, u_s, proj in ((c, s, i == 0), (cout, 1, False)):
                yield (
                    [(u_in, b, 1, 1, 1), (b, b, k, u_s, 1), (b, cout, 1, 1, 1)],
                    u_in,
                    cout,
                    u_s,
                    proj,
                )
        else:
            for u_in, u_out, u_s, proj in ((c, b, s, i == 0), (b, cout, 1, False)):
                w = u_out * (e or 1)
                yield (
                    [(u_in, w, 1, 1, 1), (w, w, k, u_s, w), (w, u_out, 1, 1, 1)],
                    u_in,
                    u_out,
                    u_s,
                    proj,
                )


def block_cost(spec: BlockSpec, h: int, residual: bool = True) -> tuple[int, int, int]:
    """Return (params, FLOPs, output size) of one block applied to an ``h`` x ``h`` input."""
    total = [0, 0]

    def run(convs: list[Conv], size: int, bias: bool = False) -> int:
        for cin, cout, k, stride, groups in convs:  # each conv is followed by BatchNorm
            size = (size - 1) // stride + 1  # odd kernel, padding k//2
            weights = cin // groups * cout * k * k
            total[0] += weights + (cout if bias else 0) + 2 * cout
            total[1] += 2 * weights * size * size
        return size

    if spec.type.family == "conv":
        c, k = spec.out_channels, spec.type.kernel
        convs = [(spec.in_channels, c, k, spec.stride, 1)] + [(c, c, k, 1, 1)] * (
            spec.sub_layers - 1
        )
        h = run(convs, h)
    else:
        for convs, cin, cout, stride, project in _units(spec):
            if residual and (project or stride != 1 or cin != cout):
                run([(cin, cout, 1, stride, 1)], h, bias=True)  # projection shortcut
            h = run(convs, h)
    return total[0], total[1], h


def network_cost(
    blocks: Sequence[BlockSpec], num_classes: int, resolution: int, residual: bool = True
) -> tuple[int, int]:
    """Return exact (params, FLOPs) of :class:`ZenMacroNet` for one ``resolution``-sized image."""
    params = flops = 0
    h = resolution
    for spec in blocks:
        p, f, h = block_cost(spec, h, residual)
        params, flops = params + p, flops + f
    last = blocks[-1].out_channels
    return params + last * num_classes + num_classes, flops + 2 * last * num_classes
