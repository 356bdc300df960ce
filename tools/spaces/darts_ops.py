"""DARTS operations, cell and CIFAR network, written from the published definitions.

Liu, Simonyan & Yang, *DARTS: Differentiable Architecture Search* (ICLR 2019), Section 3 and
Appendix A.1: eight candidate operations on each edge, cells of two inputs (the outputs of the two
previous cells) and four intermediate nodes, each the sum of two operations applied to earlier
states; a cell's output concatenates its intermediate nodes. The evaluation network stacks such
cells with reduction cells (stride 2, twice the channels) at 1/3 and 2/3 of the depth, regularised
by drop-path and an auxiliary head. BatchNorm is affine everywhere (the evaluation network's
setting); pooling is not followed by BatchNorm (that is only done in the search supernet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: The eight DARTS operations, in the order DARTS lists its ``PRIMITIVES``.
OP_NAMES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: Intermediate nodes per cell; node k is state k + 2 (states 0 and 1 are the cell inputs).
NODES = 4
#: Channel multiplier of the stem (DARTS's CIFAR stem has 3C channels).
STEM_MULTIPLIER = 3
#: Smallest map the CIFAR auxiliary head accepts (8x8: 5x5 pool stride 3 -> 2x2 -> 2x2 conv -> 1x1).
AUX_MIN_SIZE = 8

Pair = tuple[str, int]


class ReLUConvBN(nn.Sequential):
    """ReLU, bias-free convolution, affine BatchNorm (DARTS's 1x1 cell preprocessing)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=True),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (optionally dilated) kxk convolution, pointwise 1x1 convolution, BN."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in,
                c_in,
                kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=c_in,
                bias=False,
            ),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=True),
        )


class SepConv(nn.Sequential):
    """Two stacked ReLU-depthwise-pointwise-BN units; only the first strides (DARTS's sep_conv)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, dilation=1),
            DilConv(c_in, c_out, kernel, 1, padding, dilation=1),
        )


class Zero(nn.Module):
    """The ``none`` operation: zeros shaped like the op's output (subsampled when it strides)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return zeros of the strided input's shape, kept on the graph like DARTS's op."""
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing pixels: ReLU, two stride-2 1x1 convolutions (the second
    on the map shifted by one pixel) each giving half the output channels, concatenated, BatchNorm.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output width, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the reduced map (both halves sampled on interleaved pixel grids)."""
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_op(name: str, channels: int, stride: int) -> nn.Module:
    """Build DARTS operation ``name`` on a ``channels``-wide edge with ``stride`` 1 or 2."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels)
    if name == "sep_conv_3x3":
        return SepConv(channels, channels, 3, stride, 1)
    if name == "sep_conv_5x5":
        return SepConv(channels, channels, 5, stride, 2)
    if name == "dil_conv_3x3":
        return DilConv(channels, channels, 3, stride, 2, dilation=2)
    if name == "dil_conv_5x5":
        return DilConv(channels, channels, 5, stride, 4, dilation=2)
    raise ValueError(f"unknown DARTS operation {name!r}; allowed: {', '.join(OP_NAMES)}")


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero each sample's path with probability ``drop_prob``, scaling survivors by 1/keep."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class DartsCell(nn.Module):
    """One DARTS cell: two preprocessed inputs, four summing nodes, a channel concatenation.

    ``pairs`` holds eight ``(op, input state)`` pairs, two per node in node order; ``concat``
    lists the states (2..5) whose maps form the output. In a reduction cell every op reading
    state 0 or 1 has stride 2. When the previous cell reduced, input 0 is at twice this cell's
    resolution, so it is preprocessed by a FactorizedReduce instead of a 1x1 ReLU-Conv-BN.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        concat: Sequence[int],
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        if len(pairs) != 2 * NODES:
            raise ValueError(f"a DARTS cell has {2 * NODES} (op, input) pairs, got {len(pairs)}")
        self.reduction = reduction
        self.preprocess0 = (
            FactorizedReduce(c_prev_prev, channels)
            if reduction_prev
            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        )
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        self.inputs = tuple(index for _, index in pairs)
        self.ops = nn.ModuleList(
            make_op(name, channels, 2 if reduction and index < 2 else 1) for name, index in pairs
        )
        self.concat = tuple(concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        """Return the concatenated node maps; drop-path hits non-identity ops while training."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(NODES):
            total = None
            for slot in (2 * node, 2 * node + 1):
                op = self.ops[slot]
                h = op(states[self.inputs[slot]])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS's CIFAR auxiliary classifier for an 8x8 map: ReLU, 5x5 average pool stride 3,
    1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, linear.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            # Not in place: the map also feeds the next cells.
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return auxiliary logits; maps above 8x8 (inputs over 32 px) are averaged to 1x1 first."""
        x = self.features(x)
        if x.shape[-2:] != (1, 1):
            x = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(x.flatten(1))


def op_params(name: str, channels: int, stride: int) -> int:
    """Return the parameter count of :func:`make_op` ``(name, channels, stride)``, analytically."""
    c = channels
    if name in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else 2 * c * (c // 2) + 2 * c
    kernel = 3 if name.endswith("3x3") else 5
    unit = c * kernel * kernel + c * c + 2 * c  # depthwise, pointwise, BN
    if name.startswith("sep_conv"):
        return 2 * unit
    if name.startswith("dil_conv"):
        return unit
    raise ValueError(f"unknown DARTS operation {name!r}; allowed: {', '.join(OP_NAMES)}")


def network_params(
    genotype: tuple[Sequence[Pair], Sequence[int], Sequence[Pair], Sequence[int]],
    num_classes: int,
    channels: int,
    layers: int,
    auxiliary: bool,
) -> int:
    """Return the parameter count of ``DartsNetwork(...)`` without building it.

    Mirrors the construction in :class:`DartsNetwork` layer by layer (budgets check thousands of
    candidates; building each costs about 0.1 s).
    """
    normal, normal_concat, reduce, reduce_concat = genotype
    stem = STEM_MULTIPLIER * channels
    total = 3 * 9 * stem + 2 * stem
    c_prev_prev, c_prev, width = stem, stem, channels
    reduction_prev, aux_channels = False, stem
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            width *= 2
        pairs, concat = (reduce, reduce_concat) if reduction else (normal, normal_concat)
        total += 2 * c_prev_prev * (width // 2) if reduction_prev else c_prev_prev * width
        total += c_prev * width + 4 * width  # preprocess1 conv; both preprocessing BNs
        total += sum(op_params(op, width, 2 if reduction and src < 2 else 1) for op, src in pairs)
        reduction_prev = reduction
        c_prev_prev, c_prev = c_prev, len(concat) * width
        if i == 2 * layers // 3:
            aux_channels = c_prev
    if auxiliary:
        total += aux_channels * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * num_classes
        total += num_classes
    return total + c_prev * num_classes + num_classes


class DartsNetwork(nn.Module):
    """The DARTS CIFAR network around a genotype.

    Stem: 3x3 conv to 3C channels + BN. Then ``layers`` cells; those at ``layers // 3`` and
    ``2 * layers // 3`` are reduction cells (stride 2, twice the channels), all others normal
    cells. Each cell reads the outputs of the previous two (the stem output stands in for both at
    the start). Global average pooling and a linear classifier follow the last cell.

    ``forward`` returns logits only. With ``auxiliary`` and in training mode it also stores the
    auxiliary head's logits (read after the cell at ``2 * layers // 3``) in ``self.aux_logits``;
    otherwise, or when that map is smaller than 8x8, ``self.aux_logits`` is None.
    ``drop_path_prob`` (set by the trainer, typically each epoch) is the drop-path rate.
    """

    def __init__(
        self,
        genotype: tuple[Sequence[Pair], Sequence[int], Sequence[Pair], Sequence[int]],
        num_classes: int,
        channels: int = 36,
        layers: int = 20,
        auxiliary: bool = False,
    ) -> None:
        super().__init__()
        normal, normal_concat, reduce, reduce_concat = genotype
        self.layers = layers
        self.auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.aux_logits: torch.Tensor | None = None
        self.aux_index = 2 * layers // 3
        stem_channels = STEM_MULTIPLIER * channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels)
        )
        c_prev_prev, c_prev, width = stem_channels, stem_channels, channels
        reduction_prev = False
        aux_channels = c_prev
        cells: list[DartsCell] = []
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                width *= 2
            pairs, concat = (reduce, reduce_concat) if reduction else (normal, normal_concat)
            cell = DartsCell(pairs, concat, c_prev_prev, c_prev, width, reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * width
            if i == self.aux_index:
                aux_channels = c_prev
        self.cells = nn.ModuleList(cells)
        self.auxiliary_head = AuxiliaryHeadCIFAR(aux_channels, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.out_channels = c_prev

    def _run_cells(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if with_aux and i == self.aux_index and min(s1.shape[-2:]) >= AUX_MIN_SIZE:
                aux = self.auxiliary_head(s1)
        return s1, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last cell's output map (before global pooling); the aux head is not run."""
        return self._run_cells(x, with_aux=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits; set ``self.aux_logits`` (None unless auxiliary and training)."""
        features, aux = self._run_cells(x, with_aux=self.auxiliary and self.training)
        self.aux_logits = aux
        return self.classifier(self.global_pooling(features).flatten(1))
