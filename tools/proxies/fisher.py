"""Fisher channel saliency (Theis et al. 2018; Turner et al., ICLR 2020) summed into a score.

For every output channel ``k`` of a Conv/Linear layer with activation ``a`` and loss gradient
``g``, the saliency is ``0.5 * mean_n (sum_hw a * g)^2``. As in zero-cost-nas, each channel's
value is counted once per weight feeding it (the per-channel value is broadcast to the weights),
so a layer contributes ``sum_k saliency_k * fan_in``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import Batch, proxy
from ._common import cross_entropy, weight_layers


@proxy(
    "fisher",
    summary="sum over Conv/Linear channels of 0.5*mean_n(sum_hw act*grad)^2 (Turner et al. 2020); "
    "higher is better",
)
def fisher(net: nn.Module, batch: Batch) -> float:
    """Return the summed, fan-in-weighted Fisher channel saliency."""
    layers = weight_layers(net)
    saliency: dict[nn.Module, torch.Tensor] = {}

    def capture(layer: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        if not output.requires_grad:
            return
        activation = output.detach()

        def on_grad(grad: torch.Tensor) -> None:
            product = activation * grad
            if product.dim() > 2:  # sum over the spatial positions of each channel
                product = product.sum(dim=tuple(range(2, product.dim())))
            value = product.pow(2).mean(0).mul(0.5)
            saliency[layer] = saliency[layer] + value if layer in saliency else value

        output.register_hook(on_grad)

    handles = [layer.register_forward_hook(capture) for layer in layers]
    try:
        net.train()
        net.zero_grad(set_to_none=True)
        cross_entropy(net, batch.inputs, batch.targets).backward()
    finally:
        for handle in handles:
            handle.remove()
    total = 0.0
    for layer, value in saliency.items():
        total += float(value.abs().sum()) * math.prod(layer.weight.shape[1:])
    return total
