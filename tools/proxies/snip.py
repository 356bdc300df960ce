"""SNIP (Lee et al., ICLR 2019) connection sensitivity summed into a network score.

SNIP's saliency of a weight is ``|dL/dm|`` for a multiplicative mask ``m = 1`` on it, which equals
``|w * dL/dw|``; the score sums it over all Conv/Linear weights (Abdelfattah et al., ICLR 2021).
"""

from __future__ import annotations

import torch
from torch import nn

from . import Batch, proxy
from ._common import loss_backward, weight_layers


@proxy(
    "snip",
    summary="sum |w * dLoss/dw| over Conv/Linear weights on one batch (Lee et al. 2019); "
    "higher is better",
)
def snip(net: nn.Module, batch: Batch) -> float:
    """Return the summed SNIP saliency ``|w * dL/dw|``."""
    layers = weight_layers(net)
    loss_backward(net, batch)
    with torch.no_grad():
        parts = [
            (layer.weight * layer.weight.grad).abs().sum()
            for layer in layers
            if layer.weight.grad is not None
        ]
    return float(torch.stack(parts).sum()) if parts else 0.0
