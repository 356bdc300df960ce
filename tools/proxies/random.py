"""A seeded random score: the baseline every real proxy has to beat.

The value is uniform in [0, 1) and depends only on the seed ``score_network`` set and on the
network's structure (its module tree and parameter shapes), so the same network scores the same
under the same seed, different networks get unrelated values, and nothing about the network's
quality leaks in.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from . import Batch, proxy


@proxy(
    "random",
    needs_data=False,
    summary="uniform random value from hash(seed, network structure): a baseline; no signal",
)
def random(net: nn.Module, batch: Batch) -> float:
    """Return a pseudo-random value in [0, 1) fixed by the seed and the network's structure."""
    digest = hashlib.sha256()
    digest.update(str(torch.initial_seed()).encode())
    digest.update(repr(net).encode())
    for name, tensor in net.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
    return int.from_bytes(digest.digest()[:8], "big") / 2.0**64
