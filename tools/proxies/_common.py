"""Helpers shared by the proxy modules: weight layers, logits, losses and finiteness checks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import Batch, ProxyFailure

#: Layers whose weights the gradient-based proxies score (zero-cost-nas scores Conv2d and Linear).
WEIGHT_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: Normalisation layers that carry batch statistics.
BATCH_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def weight_layers(net: nn.Module) -> list[nn.Module]:
    """Return the convolution and linear layers of ``net`` whose weights take gradients.

    Raises:
        ValueError: the network has no such layer, so a weight-based proxy has nothing to score.
    """
    layers = [
        m
        for m in net.modules()
        if isinstance(m, WEIGHT_LAYER_TYPES) and m.weight is not None and m.weight.requires_grad
    ]
    if not layers:
        raise ValueError("the network has no trainable Conv/Linear layer to score")
    return layers


def as_logits(output: object) -> torch.Tensor:
    """Return the logits from a forward output: a tensor, or the last item of a tuple/list.

    Some NB201 implementations return ``(features, logits)``; taking the last item covers them.
    """
    if isinstance(output, (tuple, list)):
        output = output[-1]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the network returned {type(output).__name__}, expected a logits tensor")
    return output


def forward_logits(net: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on ``inputs`` and return its logits tensor."""
    return as_logits(net(inputs))


def cross_entropy(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the mean cross-entropy of ``net`` on a batch (logits flattened to ``(B, -1)``)."""
    logits = forward_logits(net, inputs)
    return F.cross_entropy(logits.reshape(logits.shape[0], -1), targets)


def loss_backward(net: nn.Module, batch: Batch) -> None:
    """Put ``net`` in train mode, clear its gradients, backpropagate the batch's cross-entropy."""
    net.train()
    net.zero_grad(set_to_none=True)
    cross_entropy(net, batch.inputs, batch.targets).backward()


def pre_gap_features(net: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Return the features the classifier head sees.

    Uses ``net.forward_features(x)`` when the network defines it (the pre-global-average-pooling
    map in NB201 and Zen-NAS networks); otherwise runs the network and captures the input of its
    last ``nn.Linear``.
    """
    forward_features = getattr(net, "forward_features", None)
    if callable(forward_features):
        return forward_features(inputs)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the network has neither forward_features() nor an nn.Linear head")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        net(inputs)
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the network's last nn.Linear was never called in forward()")
    return captured[-1]


def require_finite(value: float, name: str, what: str) -> float:
    """Return ``value`` or raise ``ProxyFailure("non_finite")`` naming what went wrong."""
    value = float(value)
    if not math.isfinite(value):
        raise ProxyFailure("non_finite", f"{name}: {what} is {value}")
    return value
