"""NASWOT (Mellor et al., ICML 2021): how differently a network's ReLUs split a batch of inputs.

Each ReLU gives every input a binary code (which units are active). The kernel
``K = C C^T + (1 - C)(1 - C)^T`` summed over all ReLUs counts, for every pair of inputs, the units
on which they agree; the score is ``log|det K|``. Networks whose codes separate the inputs well get
a large determinant. ReLUs are found as ``nn.ReLU``/``nn.ReLU6``/``nn.LeakyReLU`` modules
(a functional ``F.relu`` is invisible), and the pre-activation sign is used as in the
authors' second version and NASLib's ``nwot``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import Batch, proxy
from ._common import require_finite

RELU_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)


@proxy(
    "naswot",
    summary="log-determinant of the ReLU activation-pattern kernel over the batch (Mellor et al. "
    "2021); higher is better",
)
def naswot(net: nn.Module, batch: Batch) -> float:
    """Return ``log|det K|`` of the binary ReLU-code kernel of the batch."""
    inputs = batch.inputs
    size = inputs.shape[0]
    if size < 2:
        raise ValueError("naswot needs a batch of at least 2 inputs to compare")
    kernel = torch.zeros((size, size), dtype=torch.float64, device=inputs.device)

    def accumulate(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        codes = (args[0].detach().reshape(size, -1) > 0).float()
        agree = codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T
        kernel.add_(agree.double())

    relus = [m for m in net.modules() if isinstance(m, RELU_TYPES)]
    if not relus:
        raise ValueError("naswot needs nn.ReLU modules (functional relu calls cannot be hooked)")
    handles = [m.register_forward_pre_hook(accumulate) for m in relus]
    try:
        net.train()
        with torch.no_grad():
            net(inputs)
    finally:
        for handle in handles:
            handle.remove()
    _sign, logdet = torch.linalg.slogdet(kernel)
    return require_finite(
        logdet.item(), "naswot", "log|det K| (two inputs share every ReLU code, K is singular)"
    )
