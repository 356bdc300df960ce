"""Forward FLOPs for one input of the batch's shape, counted as multiply-adds.

NB201 and Zen-NAS report multiply-accumulates as "FLOPs"; :func:`tools.costs.count_flops`
counts a multiply-add as two, so this proxy halves it to speak the benchmarks' unit.
"""

from __future__ import annotations

from torch import nn

from tools.costs import count_flops

from . import Batch, proxy


@proxy(
    "flops",
    needs_data=False,
    summary="forward multiply-adds for one input (the NB201/Zen-NAS 'FLOPs'); higher is better",
)
def flops(net: nn.Module, batch: Batch) -> float:
    """Return the multiply-adds of one forward pass at the batch's input shape."""
    # count_flops builds its probe input on the CPU; the net is our private copy, so moving is safe.
    return count_flops(net.cpu(), tuple(batch.inputs.shape[1:])) / 2
