"""ZiCo (Li et al., ICLR 2023): gradients that are large and consistent across batches.

The batch is split into two halves; for each half the cross-entropy gradient of every Conv/Linear
weight is taken. Per layer, ``sum_w mean|g_w| / std(g_w)`` over the weights whose gradient varies
between the halves, and the score is the sum over layers of its log.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import Batch, proxy
from ._common import cross_entropy, weight_layers

#: Mini-batches the batch is split into (ZiCo's official setting uses two).
SPLITS = 2


@proxy(
    "zico",
    summary="sum over layers of log sum(mean|grad|/std(grad)) across two half-batches (Li et al. "
    "2023); higher is better",
)
def zico(net: nn.Module, batch: Batch) -> float:
    """Return the ZiCo score over :data:`SPLITS` mini-batches of the batch."""
    if batch.inputs.shape[0] < SPLITS:
        raise ValueError(f"zico needs a batch of at least {SPLITS} inputs to split")
    layers = weight_layers(net)
    grads: dict[nn.Module, list[torch.Tensor]] = {layer: [] for layer in layers}
    net.train()
    for inputs, targets in zip(batch.inputs.chunk(SPLITS), batch.targets.chunk(SPLITS)):
        net.zero_grad(set_to_none=True)
        cross_entropy(net, inputs, targets).backward()
        for layer in layers:
            if layer.weight.grad is not None:
                grads[layer].append(layer.weight.grad.detach().reshape(-1).clone())
    total = 0.0
    for per_split in grads.values():
        if len(per_split) < 2:
            continue
        stacked = torch.stack(per_split)
        std = stacked.std(dim=0, unbiased=False)
        varying = std != 0
        ratio_sum = float((stacked.abs().mean(dim=0)[varying] / std[varying]).sum())
        if ratio_sum > 0:
            total += math.log(ratio_sum)
    return total
