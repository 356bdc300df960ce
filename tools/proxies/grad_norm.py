"""GradNorm (Abdelfattah et al., ICLR 2021): the size of the first training step's gradient.

The score is the sum over Conv/Linear layers of the Euclidean norm of the cross-entropy gradient
with respect to the layer's weight, computed on one batch in train mode.
"""

from __future__ import annotations

import torch
from torch import nn

from . import Batch, proxy
from ._common import loss_backward, weight_layers


@proxy(
    "grad_norm",
    summary="sum over Conv/Linear layers of ||dLoss/dW||_2 on one batch; higher is better",
)
def grad_norm(net: nn.Module, batch: Batch) -> float:
    """Return the sum of per-layer weight-gradient norms of the cross-entropy loss."""
    layers = weight_layers(net)
    loss_backward(net, batch)
    norms = [layer.weight.grad.norm() for layer in layers if layer.weight.grad is not None]
    return float(torch.stack(norms).sum()) if norms else 0.0
