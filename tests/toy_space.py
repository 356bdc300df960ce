"""A tiny search space for agent tests: three slots, each one of four operations.

Its canonical form sorts the slots (order does not matter), so a whole-form proposal can be
different as a string yet identical to its parent, which the Designer must reject; slot 0 may not
be ``none``, so a well-formed edit can still break a rule of the space.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict
from torch import nn

from tools.proxies import ProxySpec
from tools.spaces import ArchitectureError, SearchSpace

OPS = ("conv", "pool", "skip", "none")


class ToyEdit(BaseModel):
    """Set one slot to one operation."""

    model_config = ConfigDict(extra="forbid")

    slot: Literal[0, 1, 2]
    op: Literal["conv", "pool", "skip", "none"]


class ToySpace(SearchSpace):
    """Architectures like ``conv-pool-skip``."""

    name = "toy"
    edit_schema = ToyEdit
    arch_format = "three operations joined by '-', e.g. conv-pool-skip"

    def validate(self, arch: str) -> str:
        parts = arch.strip().split("-")
        if len(parts) != 3:
            raise ArchitectureError(
                f"expected 3 operations joined by '-', got {len(parts)} in {arch!r}"
            )
        for i, op in enumerate(parts):
            if op not in OPS:
                raise ArchitectureError(
                    f"unknown operation {op!r} at slot {i}; choose one of {', '.join(OPS)}"
                )
        if parts[0] == "none":
            raise ArchitectureError("slot 0 cannot be none: the input must reach the network")
        return "-".join(parts)

    def canonical(self, arch: str) -> str:
        return "-".join(sorted(self.validate(arch).split("-")))

    def sample(self, rng: random.Random) -> str:
        return "-".join([rng.choice(OPS[:3]), rng.choice(OPS), rng.choice(OPS)])

    def mutate(self, arch: str, rng: random.Random) -> str:
        parts = self.validate(arch).split("-")
        slot = rng.randrange(3)
        allowed = OPS[:3] if slot == 0 else OPS
        parts[slot] = rng.choice([op for op in allowed if op != parts[slot]])
        return "-".join(parts)

    def apply_edit(self, arch: str, edit: BaseModel) -> str:
        parts = self.validate(arch).split("-")
        parts[edit.slot] = edit.op
        return self.validate("-".join(parts))

    def build(self, arch: str, num_classes: int) -> nn.Module:
        raise NotImplementedError("the toy space builds no networks")

    def describe_text(self) -> str:
        return "TOY-TEXT: three slots, each conv, pool, skip or none."

    def describe_code(self) -> str:
        return "TOY-CODE: def forward(x): return ops[2](ops[1](ops[0](x)))"

    def diff(self, parent: str, child: str) -> list[str]:
        a, b = parent.split("-"), child.split("-")
        return [f"slot {i}: {x} -> {y}" for i, (x, y) in enumerate(zip(a, b)) if x != y]


def toy_proxy_fn(net, batch) -> float:
    """TOY-PROXY-CODE: count the parameters."""
    return float(sum(p.numel() for p in net.parameters()))


TOY_PROXY = ProxySpec(
    "toyproxy", toy_proxy_fn, higher_is_better=True, log_scale=False, summary="parameter count"
)
TOY_LOG_PROXY = ProxySpec(
    "toylog", toy_proxy_fn, higher_is_better=True, log_scale=True, summary="a log-scale score"
)
