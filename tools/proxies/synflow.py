"""SynFlow (Tanaka et al., NeurIPS 2020) as a network score (Abdelfattah et al., ICLR 2021).

Every parameter is replaced by its absolute value, batch normalisation is bypassed (zero-cost-nas's
``synflow`` variant, ``bn=False``), an all-ones input of one image goes through the network in
float64, and the score is ``sum |w * dR/dw|`` over Conv/Linear weights with ``R = sum(logits)``.
The data are never looked at, only their shape. Values grow multiplicatively with depth, so read
them on a log scale; an overflow even in float64 is reported as ``non_finite``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import Batch, proxy
from ._common import BATCH_NORM_TYPES, forward_logits, require_finite, weight_layers


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@proxy(
    "synflow",
    log_scale=True,
    summary="sum |w * dR/dw| with |weights|, all-ones input, BN bypassed (Tanaka et al. 2020); "
    "higher is better",
)
def synflow(net: nn.Module, batch: Batch) -> float:
    """Return the SynFlow saliency summed over all Conv/Linear weights."""
    layers = weight_layers(net)
    net.double().eval()  # eval only silences dropout; BN is bypassed below either way
    for module in net.modules():
        if isinstance(module, BATCH_NORM_TYPES):
            module.forward = _identity  # remove BN's effect, as zero-cost-nas does for synflow
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *batch.inputs.shape[1:]), dtype=torch.float64, device=batch.inputs.device)
    forward_logits(net, ones).sum().backward()
    total = torch.zeros((), dtype=torch.float64, device=ones.device)
    for layer in layers:
        if layer.weight.grad is not None:
            total += (layer.weight * layer.weight.grad).abs().sum()
    return require_finite(total.item(), "synflow", "the synaptic flow (it overflowed float64)")
