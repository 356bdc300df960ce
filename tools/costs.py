"""Exact parameter and FLOP counts of a built network."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(net: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Return forward FLOPs for one input of ``input_shape`` (C, H, W), as torch's FlopCounterMode counts them.

    FlopCounterMode counts a multiply-add as two FLOPs; divide by two for MACs (what NB201 and
    Zen-NAS report as "FLOPs").
    """
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, *input_shape))
        return int(counter.get_total_flops())
    finally:
        net.train(was_training)
