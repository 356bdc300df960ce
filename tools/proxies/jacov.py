"""Jacobian covariance (Mellor et al., 2020 first version; NASLib's ``jacov``).

The input Jacobian of the summed logits is taken for every input of the batch; a network whose
Jacobians are weakly correlated across inputs can tell them apart. With ``v`` the eigenvalues of
the inputs' Jacobian correlation matrix and ``k = 1e-5``, the score is
``-sum(log(v + k) + 1 / (v + k))``, which is largest when every eigenvalue is 1 (no correlation).
"""

from __future__ import annotations

import torch
from torch import nn

from . import Batch, ProxyFailure, proxy
from ._common import forward_logits

EPSILON = 1e-5


@proxy(
    "jacov",
    summary="-sum(log(v+k)+1/(v+k)) over eigenvalues v of the input-Jacobian correlation matrix "
    "(Mellor et al. 2020); higher is better",
)
def jacov(net: nn.Module, batch: Batch) -> float:
    """Return the Jacobian-covariance score of the batch."""
    if batch.inputs.shape[0] < 2:
        raise ValueError("jacov needs a batch of at least 2 inputs to correlate")
    inputs = batch.inputs.detach().clone().requires_grad_(True)
    net.train()
    net.zero_grad(set_to_none=True)
    logits = forward_logits(net, inputs)
    logits.backward(torch.ones_like(logits))
    if inputs.grad is None:
        raise ProxyFailure("non_finite", "jacov: the output does not depend on the input")
    jacobians = inputs.grad.reshape(inputs.shape[0], -1).double()
    correlation = torch.corrcoef(jacobians)
    if not torch.isfinite(correlation).all():
        raise ProxyFailure(
            "non_finite",
            "jacov: some input's Jacobian is constant, so its correlation is undefined",
        )
    eigenvalues = torch.linalg.eigvalsh(correlation)
    return float(-(torch.log(eigenvalues + EPSILON) + 1.0 / (eigenvalues + EPSILON)).sum())
