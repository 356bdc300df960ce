"""NAS-Bench-201 operations, cell and network, built as the benchmark trained them.

The layer choices follow the NAS-Bench-201 paper (Dong & Yang, ICLR 2020) and its reference
``TinyNetwork``: ReLU-Conv-BN convolutions with affine, running-statistics BatchNorm; 3x3 average
pooling that ignores padding; a residual reduction block between the three stages. Parameter
counts therefore equal the benchmark's (checked against NASLib in ``tests/test_nb201.py``).
"""

from __future__ import annotations

import torch
from torch import nn

#: The five NB201 operations, in the order the space lists them.
OP_NAMES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The six cell edges as (to node j, from node i), in the order of the standard string.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


class ReLUConvBN(nn.Sequential):
    """ReLU, then a bias-free convolution, then affine BatchNorm (NB201's ``nor_conv_kxk``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
        )


class Zero(nn.Module):
    """The ``none`` operation: an all-zero tensor shaped like the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x * 0``."""
        # Multiply rather than allocate so the output stays on the graph like NB201's op.
        return x.mul(0.0)


class AvgPool3x3(nn.AvgPool2d):
    """3x3 average pooling, stride 1, padding 1, borders averaged over real pixels only."""

    def __init__(self) -> None:
        super().__init__(kernel_size=3, stride=1, padding=1, count_include_pad=False)


def make_op(name: str, channels: int) -> nn.Module:
    """Build the operation ``name`` for a ``channels``-wide edge inside a cell (stride 1)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return AvgPool3x3()
    raise ValueError(f"unknown NB201 operation {name!r}; allowed: {', '.join(OP_NAMES)}")


class NB201Cell(nn.Module):
    """A 4-node cell: node 0 is the input, node j sums op(node i) over i < j, node 3 the output."""

    def __init__(self, ops: tuple[str, ...], channels: int) -> None:
        super().__init__()
        if len(ops) != len(EDGES):
            raise ValueError(f"an NB201 cell has {len(EDGES)} edges, got {len(ops)} operations")
        self.ops = tuple(ops)
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return node 3 of the cell applied to ``x``."""
        nodes = [x]
        for j in (1, 2, 3):
            nodes.append(
                sum(
                    edge(nodes[i])
                    for edge, (to, i) in zip(self.edges, EDGES, strict=True)
                    if to == j
                )
            )
        return nodes[3]


class ResNetBasicBlock(nn.Module):
    """Stride-2 residual reduction block placed between stages.

    Two ReLU-Conv-BN 3x3 convolutions (the first with stride 2) plus a shortcut of 2x2 average
    pooling and a 1x1 convolution that doubles the width.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the shortcut plus the two-convolution branch."""
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NB201 macro skeleton around one searched cell.

    Stem (3x3 conv + BN), then three stages of ``cells_per_stage`` copies of the cell at widths
    C, 2C, 4C separated by residual reduction blocks, then BN + ReLU, global average pooling and a
    linear classifier. ``forward`` returns logits; ``forward_features`` the map before pooling.
    """

    def __init__(
        self, ops: tuple[str, ...], num_classes: int, channels: int = 16, cells_per_stage: int = 5
    ) -> None:
        super().__init__()
        self.ops = tuple(ops)
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        layers: list[nn.Module] = []
        width = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(width, width * 2))
                width *= 2
            layers.extend(NB201Cell(self.ops, width) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        self.out_channels = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the final feature map (after BN + ReLU, before global pooling)."""
        return self.lastact(self.cells(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape (batch, num_classes)."""
        features = self.global_pooling(self.forward_features(x))
        return self.classifier(features.flatten(1))
