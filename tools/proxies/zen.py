"""Zen-score (Lin et al., ICCV 2021): expressivity of a network's pre-pooling features.

With weights redrawn from N(0, 1) (BN scales 1, biases 0) and BN in train mode, a Gaussian batch
``x`` and its perturbation ``x + 0.01 * eps`` go through the network; the score is
``log E_n ||f(x) - f(x + 0.01 eps)||_1 + sum_BN log sqrt(mean_c var_c)``, where ``f`` is the
feature map before global pooling and ``var_c`` is the batch variance of a BN layer's input
channel (the statistic Zen-NAS reads from ``running_var``; BN layers whose input is exactly
constant, behind a ``none`` edge, are left out rather than contributing ``log 0``). Averaged over
:data:`REPEATS` draws. Already a logarithm, so it is not flagged ``log_scale``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import Batch, ProxyFailure, proxy
from ._common import BATCH_NORM_TYPES, pre_gap_features, require_finite

MIXUP_GAMMA = 1e-2
#: Independent weight and perturbation draws averaged into one score.
REPEATS = 3


def _gaussian_init(net: nn.Module) -> None:
    """Redraw weights as Zen-NAS does: Conv/Linear N(0, 1), norm layers scale 1, biases 0."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (*BATCH_NORM_TYPES, nn.GroupNorm)):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


@proxy(
    "zen",
    summary="log of the feature-map change under a 1% input perturbation plus BN log-scales, "
    "Gaussian weights (Lin et al. 2021); higher is better",
)
def zen(net: nn.Module, batch: Batch) -> float:
    """Return the Zen-score averaged over :data:`REPEATS` Gaussian weight draws."""
    inputs = batch.inputs
    bns = [m for m in net.modules() if isinstance(m, BATCH_NORM_TYPES)]
    log_scales: list[torch.Tensor] = []
    recording = [False]

    def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if recording[0]:
            x = args[0]
            variance = x.var(dim=[d for d in range(x.dim()) if d != 1]).mean()
            if variance > 0:  # a BN fed by a zero op (dead branch) rescales nothing; skip it
                log_scales.append(0.5 * torch.log(variance))

    handles = [bn.register_forward_pre_hook(record) for bn in bns]
    scores = []
    try:
        net.train()
        with torch.no_grad():
            for _ in range(REPEATS):
                _gaussian_init(net)
                mixed = inputs + MIXUP_GAMMA * torch.randn_like(inputs)
                perturbed = pre_gap_features(net, mixed)
                log_scales.clear()
                recording[0] = True
                clean = pre_gap_features(net, inputs)
                recording[0] = False
                change = (clean - perturbed).abs().reshape(clean.shape[0], -1).sum(dim=1).mean()
                change = require_finite(change.item(), "zen", "the feature change")
                if change <= 0:
                    raise ProxyFailure(
                        "non_finite", "zen: the features ignore the input perturbation (log of 0)"
                    )
                bn_term = float(torch.stack(log_scales).sum()) if log_scales else 0.0
                scores.append(math.log(change) + bn_term)
    finally:
        for handle in handles:
            handle.remove()
    return require_finite(sum(scores) / len(scores), "zen", "the score")
