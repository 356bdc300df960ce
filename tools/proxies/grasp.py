"""GraSP (Wang et al., ICLR 2020) gradient-signal preservation, summed into a network score.

With ``g`` the loss gradient and ``H`` the Hessian over the Conv/Linear weights, GraSP's saliency
is ``-w * (H g)``; the score sums it over all weights (zero-cost-nas sign convention, under which a
larger value predicts higher accuracy). ``H g`` is a Hessian-vector product: the gradient of
``g_detached . g`` with respect to the weights (a double backward).
"""

from __future__ import annotations

import torch
from torch import nn

from . import Batch, proxy
from ._common import cross_entropy, weight_layers


@proxy(
    "grasp",
    summary="sum of -w * (H g) over Conv/Linear weights, a Hessian-gradient product (Wang et al. "
    "2020); higher is better",
)
def grasp(net: nn.Module, batch: Batch) -> float:
    """Return the summed GraSP saliency ``-w * Hg``."""
    layers = weight_layers(net)
    weights = [layer.weight for layer in layers]
    net.train()
    net.zero_grad(set_to_none=True)
    loss = cross_entropy(net, batch.inputs, batch.targets)
    # NASLib runs a second forward for the graph-carrying gradient; on the same batch it is the
    # same gradient, so one forward with create_graph gives the identical Hessian-gradient product.
    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    products = [(g.detach() * g).sum() for g in grads if g is not None]
    if not products:
        return 0.0
    torch.stack(products).sum().backward()  # leaves H g in each weight's .grad
    with torch.no_grad():
        parts = [(-w * w.grad).sum() for w in weights if w.grad is not None]
    return float(torch.stack(parts).sum()) if parts else 0.0
