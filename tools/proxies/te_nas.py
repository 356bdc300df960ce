"""TE-NAS trainability term (Chen et al., ICLR 2021): condition number of the network's NTK.

For inputs ``x_1..x_n`` the empirical neural tangent kernel is ``Theta = J J^T`` where row ``i``
of ``J`` is the gradient of ``sum(logits(x_i))`` with respect to every ``weight`` parameter
(Conv, Linear and BN scales, as in the TE-NAS code), taken in train mode. The score is
``lambda_max / lambda_min`` of ``Theta``. **Lower is better** (a well-conditioned NTK trains
fast), so the proxy is registered with ``higher_is_better=False`` and returns the raw condition
number; rank candidates with the spec's flag, not the sign. Only TE-NAS's NTK term is computed,
not its linear-region count.

Each input needs its own backward pass through the whole batch graph (train-mode BN couples the
inputs), so the cost grows with the square of the batch; the kernel uses the first
:data:`MAX_SAMPLES` inputs of the batch (an NB201 cell takes a few seconds on one CPU core).
"""

from __future__ import annotations

import torch
from torch import nn

from . import Batch, ProxyFailure, proxy
from ._common import forward_logits

#: Inputs used for the kernel: the cost is one backward pass per input.
MAX_SAMPLES = 16


@proxy(
    "te_nas",
    higher_is_better=False,
    log_scale=True,
    summary="condition number of the empirical NTK over the batch (TE-NAS, Chen et al. 2021); "
    "LOWER is better",
)
def te_nas(net: nn.Module, batch: Batch) -> float:
    """Return the condition number ``lambda_max / lambda_min`` of the empirical NTK."""
    inputs = batch.inputs[:MAX_SAMPLES]
    if inputs.shape[0] < 2:
        raise ValueError("te_nas needs a batch of at least 2 inputs to form a kernel")
    weights = [p for name, p in net.named_parameters() if "weight" in name and p.requires_grad]
    if not weights:
        raise ValueError("te_nas needs trainable weight parameters")
    net.train()
    logits = forward_logits(net, inputs)
    rows = []
    for index in range(inputs.shape[0]):
        grads = torch.autograd.grad(
            logits[index].sum(), weights, retain_graph=True, allow_unused=True
        )
        rows.append(torch.cat([g.reshape(-1) for g in grads if g is not None]))
    jacobian = torch.stack(rows).double()
    if not torch.isfinite(jacobian).all():
        raise ProxyFailure("non_finite", "te_nas: the weight gradients are NaN or infinite")
    eigenvalues = torch.linalg.eigvalsh(jacobian @ jacobian.T)
    smallest, largest = eigenvalues[0].item(), eigenvalues[-1].item()
    if not smallest > 0:
        raise ProxyFailure(
            "non_finite", f"te_nas: the NTK is singular (smallest eigenvalue {smallest:.3g})"
        )
    return largest / smallest
