"""Trainable parameter count: the simplest size baseline, and a strong one on NB201."""

from __future__ import annotations

from torch import nn

from tools.costs import count_params

from . import Batch, proxy


@proxy("params", needs_data=False, summary="number of trainable parameters; higher is better")
def params(net: nn.Module, batch: Batch) -> float:
    """Return the number of trainable parameters (the batch is ignored)."""
    return float(count_params(net))
