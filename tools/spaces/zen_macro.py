"""The ``zen-macro`` search space: Zen-NAS block strings, as RZ-NAS uses for its macro space.

An architecture is a block string such as
``SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperConvK1BNRELU(64,256,1,1)``; the
language (parser, rules) lives in :mod:`tools.spaces.zen_dsl`, the modules and their exact costs
in :mod:`tools.spaces.zen_blocks`.

Budgets: ``max_params``/``max_flops`` are checked by :meth:`ZenMacroSpace.check_budget` (exact,
analytic, FLOPs as torch's FlopCounterMode counts them: a multiply-add is 2 FLOPs, i.e. twice the
MACs Zen-NAS reports as "FLOPs"); ``max_layers`` (the sum of ``sub_layers``, Zen-NAS's
``get_num_layers``) by :meth:`ZenMacroSpace.validate`. ``None`` means no limit, except in
:meth:`ZenMacroSpace.sample`, which falls back to ``SAMPLE_MAX_PARAMS`` and
``SAMPLE_MAX_LAYERS`` (Zen-NAS's CIFAR search settings) so random nets stay cheap to score on CPU.
"""

from __future__ import annotations

import difflib
import inspect
import math
import random

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from tools.spaces import ArchitectureError, SearchSpace, search_space, zen_blocks
from tools.spaces.zen_blocks import ZenMacroNet, network_cost
from tools.spaces.zen_dsl import (
    BLOCK_TYPES,
    INPUT_CHANNELS,
    MAX_BLOCKS,
    MAX_CHANNELS,
    MAX_SUB_LAYERS,
    BlockSpec,
    blocks_to_string,
    check_rules,
    parse_blocks,
)

#: Networks above this many parameters are never built, budget or not (memory safety).
HARD_MAX_PARAMS = 200_000_000
#: Budgets ``sample`` uses where the space has none.
SAMPLE_MAX_PARAMS = 1_000_000
SAMPLE_MAX_LAYERS = 18
SAMPLE_TRIES = 200
MUTATE_TRIES = 200
#: Zen-NAS's width multipliers for a mutated channel count (rounded to a multiple of 8).
WIDTH_FACTORS = (2.5, 2.0, 1.5, 1.25, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)

_CIFAR_KINDS = tuple(n for n, t in BLOCK_TYPES.items() if t.family in ("basic", "bottleneck"))
_IMAGENET_KINDS = tuple(n for n, t in BLOCK_TYPES.items() if t.family == "inverted")
_CONV_KINDS = tuple(n for n, t in BLOCK_TYPES.items() if t.family == "conv")


class ZenMacroEdit(BaseModel):
    """Replace one block of a block string (the following block's in_channels follow along)."""

    model_config = ConfigDict(extra="forbid")

    block: int = Field(ge=0, lt=MAX_BLOCKS, description="0-based index of the block to replace")
    replacement: str = Field(
        min_length=1,
        max_length=200,
        description="exactly one block, e.g. SuperResK5K5(32,64,2,32,1); its in_channels must "
        "equal the previous block's out_channels (3 for block 0)",
    )


def _round8(x: float) -> int:
    """Round to the nearest multiple of 8 within [8, MAX_CHANNELS]."""
    return min(MAX_CHANNELS, max(8, int(round(x / 8)) * 8))


@search_space("zen-macro")
class ZenMacroSpace(SearchSpace):
    """Zen-NAS macro space: super-blocks in sequence, global pooling, a linear classifier."""

    edit_schema = ZenMacroEdit
    arch_format = (
        "a Zen-NAS block string, e.g. SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)"
        "SuperConvK1BNRELU(64,256,1,1)"
    )

    def __init__(
        self,
        max_params: float | None = None,
        max_flops: float | None = None,
        max_layers: int | None = None,
        resolution: int = 32,
        num_classes: int = 10,
    ):
        for label, value in (
            ("max_params", max_params),
            ("max_flops", max_flops),
            ("max_layers", max_layers),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{label} must be positive or None, got {value}")
        if resolution < 1 or num_classes < 1:
            raise ValueError(
                f"resolution and num_classes must be positive, got {resolution}, {num_classes}"
            )
        self.max_params, self.max_flops, self.max_layers = max_params, max_flops, max_layers
        self.resolution, self.num_classes = resolution, num_classes

    # -- parsing and checking -------------------------------------------------------------------

    def parse(self, arch: str) -> list[BlockSpec]:
        """Parse ``arch`` and check the structural rules and the layer budget."""
        blocks = parse_blocks(arch)
        check_rules(blocks)
        layers = sum(b.sub_layers for b in blocks)
        if self.max_layers is not None and layers > self.max_layers:
            raise ArchitectureError(
                f"{layers} layers (the sum of sub_layers) exceed max_layers={self.max_layers}; "
                "lower sub_layers or remove a block"
            )
        return blocks

    def validate(self, arch: str) -> str:
        """Parse and check ``arch`` (structure and layer budget); return its canonical spelling."""
        return blocks_to_string(self.parse(arch))

    def canonical(self, arch: str) -> str:
        """Return the canonical spelling: no whitespace, canonical block names, plain integers."""
        return self.validate(arch)

    def cost(
        self, arch: str, num_classes: int | None = None, resolution: int | None = None
    ) -> tuple[int, int]:
        """Return exact (params, FLOPs) of the network, FLOPs as FlopCounterMode counts them."""
        return network_cost(
            self.parse(arch), num_classes or self.num_classes, resolution or self.resolution
        )

    def check_budget(
        self, arch: str, num_classes: int | None = None, resolution: int | None = None
    ) -> tuple[int, int]:
        """Return (params, FLOPs) of ``arch``; over a budget, raise naming figure and limit."""
        num_classes, resolution = num_classes or self.num_classes, resolution or self.resolution
        params, flops = self.cost(arch, num_classes, resolution)
        where = f"at {resolution}x{resolution} with {num_classes} classes"
        if self.max_params is not None and params > self.max_params:
            raise ArchitectureError(
                f"{params:,} parameters exceed max_params={int(self.max_params):,} ({where}); "
                "narrow channels, lower sub_layers or remove a block"
            )
        if self.max_flops is not None and flops > self.max_flops:
            raise ArchitectureError(
                f"{flops:,} FLOPs exceed max_flops={int(self.max_flops):,} ({where}); "
                "narrow channels, stride earlier or lower sub_layers"
            )
        return params, flops

    def build(self, arch: str, num_classes: int) -> nn.Module:
        """Build :class:`ZenMacroNet` for ``arch``; nets over HARD_MAX_PARAMS are refused."""
        blocks = self.parse(arch)
        params, _ = network_cost(blocks, num_classes, self.resolution)
        if params > HARD_MAX_PARAMS:
            raise ArchitectureError(
                f"{params:,} parameters is more than the {HARD_MAX_PARAMS:,} this tool builds"
            )
        return ZenMacroNet(blocks, num_classes)

    def _fits(
        self, blocks: list[BlockSpec], max_params: float | None, max_layers: int | None
    ) -> bool:
        if max_layers is not None and sum(b.sub_layers for b in blocks) > max_layers:
            return False
        params, flops = network_cost(blocks, self.num_classes, self.resolution)
        return (max_params is None or params <= max_params) and (
            self.max_flops is None or flops <= self.max_flops
        )

    # -- random architectures -------------------------------------------------------------------

    def sample(self, rng: random.Random) -> str:
        """Draw a net in the style of Zen-NAS's initial structures, within the budgets.

        Below 64 px: stem ``SuperConvK3BNRELU(3,C,1,1)``, 2-5 residual blocks of the CIFAR families
        (``SuperResKXKX``/``SuperResK1KXK1``), widening at each stride-2 block, then
        ``SuperConvK1BNRELU(...,...,1,1)``. From 64 px: stride-2 stem and inverted-residual blocks
        (Zen-NAS's ImageNet space). Draws are rejected until one fits; budgets left at None fall
        back to ``SAMPLE_MAX_PARAMS``/``SAMPLE_MAX_LAYERS``.
        """
        max_params = self.max_params if self.max_params is not None else SAMPLE_MAX_PARAMS
        max_layers = self.max_layers if self.max_layers is not None else SAMPLE_MAX_LAYERS
        for _ in range(SAMPLE_TRIES):
            blocks = self._draw(rng)
            if self._fits(blocks, max_params, max_layers):
                return blocks_to_string(blocks)
        raise ArchitectureError(
            f"no random architecture fit max_params={max_params:,.0f}, max_flops={self.max_flops}, "
            f"max_layers={max_layers} in {SAMPLE_TRIES} draws; raise the budgets"
        )

    def _draw(self, rng: random.Random) -> list[BlockSpec]:
        imagenet = self.resolution >= 64
        stem_stride = 2 if imagenet else 1
        size = (self.resolution - 1) // stem_stride + 1
        # Stride-2 residual blocks: 3 at 32 px, 2 at 16 px, 4 after the stem at 224 px.
        downsamples = max(0, min(4, int(math.log2(size)) - 2))
        n_res = rng.randint(max(2, downsamples), max(2, downsamples) + 2)
        strided = set(rng.sample(range(n_res), downsamples))
        width = rng.choice((16, 24, 32) if imagenet else (8, 16, 24, 32))
        blocks = [BlockSpec("SuperConvK3BNRELU", INPUT_CHANNELS, width, stem_stride, None, 1)]
        for j in range(n_res):
            stride = 2 if j in strided else 1
            out = _round8(width * rng.choice((1.5, 2.0) if stride == 2 else (1.0, 1.25, 1.5)))
            kind = rng.choice(_IMAGENET_KINDS if imagenet else _CIFAR_KINDS)
            family = BLOCK_TYPES[kind].family
            bottleneck = _round8(
                out * rng.choice((0.25, 0.5) if family == "bottleneck" else (0.5, 1.0))
            )
            sub_layers = rng.randint(1, 3 if family == "basic" else 2)
            blocks.append(BlockSpec(kind, width, out, stride, bottleneck, sub_layers))
            width = out
        final = _round8(width * rng.choice((2, 4)))
        blocks.append(BlockSpec("SuperConvK1BNRELU", width, final, 1, None, 1))
        return blocks

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Change one block, Zen-NAS style, and return a different valid string within the budgets.

        One of: block type within its group (conv kernel; CIFAR residual families; inverted residual
        expansion/kernel), out_channels times a Zen-NAS width factor (the next block's in_channels
        follow), bottleneck_channels likewise, sub_layers +-1, or stride 1<->2 while the number of
        stride-2 blocks stays at most log2(resolution).
        """
        blocks = self.parse(arch)
        parent = blocks_to_string(blocks)
        for _ in range(MUTATE_TRIES):
            child = self._mutate_once(blocks, rng)
            if child is None or blocks_to_string(child) == parent:
                continue
            try:
                text = self.validate(blocks_to_string(child))
                self.check_budget(text)
            except ArchitectureError:
                continue
            return text
        raise ArchitectureError(
            f"no valid mutation within max_params={self.max_params}, max_flops={self.max_flops}, "
            f"max_layers={self.max_layers} in {MUTATE_TRIES} tries; raise the budgets"
        )

    def _mutate_once(self, blocks: list[BlockSpec], rng: random.Random) -> list[BlockSpec] | None:
        idx = rng.randrange(len(blocks))
        b = blocks[idx]
        family = b.type.family
        ops = ["kind", "out", "sub_layers", "stride"] + ([] if family == "conv" else ["bottleneck"])
        op = rng.choice(ops)
        child = list(blocks)
        if op == "kind":
            group = {"conv": _CONV_KINDS, "inverted": _IMAGENET_KINDS}.get(family, _CIFAR_KINDS)
            child[idx] = b.replace(kind=rng.choice([k for k in group if k != b.kind]))
        elif op == "out":
            out = _round8(b.out_channels * rng.choice(WIDTH_FACTORS))
            child[idx] = b.replace(out_channels=out)
            if idx + 1 < len(child):
                child[idx + 1] = child[idx + 1].replace(in_channels=out)
        elif op == "bottleneck":
            child[idx] = b.replace(bottleneck=_round8(b.bottleneck * rng.choice(WIDTH_FACTORS)))
        elif op == "sub_layers":
            child[idx] = b.replace(sub_layers=max(1, b.sub_layers + rng.choice((-1, 1))))
        else:
            strided = sum(x.stride == 2 for x in blocks) + (1 if b.stride == 1 else -1)
            if strided > int(math.log2(self.resolution)):
                return None
            child[idx] = b.replace(stride=3 - b.stride)
        return child

    # -- edits and diffs ------------------------------------------------------------------------

    def apply_edit(self, arch: str, edit: BaseModel) -> str:
        """Replace block ``edit.block`` by ``edit.replacement`` and return the validated child.

        If the replacement changes out_channels, the following block's in_channels are set to match
        (as Zen-NAS's mutation does); the replacement's own in_channels must already match.
        """
        try:
            edit = ZenMacroEdit.model_validate(
                edit.model_dump() if isinstance(edit, BaseModel) else edit
            )
        except ValidationError as err:
            raise ArchitectureError(f"malformed edit: {err.errors()[0]['msg']}") from None
        blocks = self.parse(arch)
        if edit.block >= len(blocks):
            raise ArchitectureError(
                f"block {edit.block} does not exist; choose 0..{len(blocks) - 1}"
            )
        try:
            new = parse_blocks(edit.replacement)
        except ArchitectureError as err:
            raise ArchitectureError(f"replacement: {err}") from None
        if len(new) != 1:
            raise ArchitectureError(f"replacement must be exactly one block, got {len(new)}")
        blocks[edit.block] = new[0].replace()
        if edit.block + 1 < len(blocks):
            blocks[edit.block + 1] = blocks[edit.block + 1].replace(in_channels=new[0].out_channels)
        return self.validate(blocks_to_string(blocks))

    def diff(self, parent: str, child: str) -> list[str]:
        """List changed blocks, e.g. ``block 1: SuperResK3K3(8,16,2,8,1) -> SuperResK5K5(...)``."""
        old = [str(b) for b in parse_blocks(parent)]
        new = [str(b) for b in parse_blocks(child)]
        changes: list[str] = []
        matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "replace" and i2 - i1 == j2 - j1:
                changes += [
                    f"block {i1 + k}: {old[i1 + k]} -> {new[j1 + k]}" for k in range(i2 - i1)
                ]
            else:
                if tag in ("replace", "delete"):
                    changes += [f"block {i}: removed {old[i]}" for i in range(i1, i2)]
                if tag in ("replace", "insert"):
                    changes += [f"block {j}: added {new[j]}" for j in range(j1, j2)]
        return changes

    # -- descriptions ---------------------------------------------------------------------------

    def describe_text(self) -> str:
        """Describe the grammar, block families, rules and budgets for the Designer."""

        def limit(value: float | None) -> str:
            return "none" if value is None else f"{value:,.0f}"

        return f"""\
Zen-NAS macro search space. An architecture is a block string: blocks written one after
another, e.g. SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperConvK1BNRELU(64,256,1,1).
Grammar: block := NAME "(" int ("," int)* ")"; whitespace is ignored, names are case-insensitive.
The blocks run in sequence on a 3-channel image; global average pooling and one linear layer
then give the class logits.

Block families (k = kernel size in the name; every conv is followed by BatchNorm):
- SuperConvK{{1,3,5,7}}BNRELU(in,out,stride,sub_layers): sub_layers x (kxk conv -> BN -> ReLU),
  no shortcut. Zen-NAS uses it for the stem and for the final 1x1 widening layer.
- SuperResK3K3, SuperResK5K5, SuperResK7K7 (in,out,stride,bottleneck_channels,sub_layers):
  sub_layers basic residual units: kxk conv in->bottleneck (stride) -> BN -> ReLU ->
  kxk conv bottleneck->out -> BN.
- SuperResK1K{{3,5,7}}K1(in,out,stride,bottleneck_channels,sub_layers): each sub_layer is TWO
  bottleneck units: 1x1 conv ->bottleneck -> BN -> ReLU -> kxk conv -> BN -> ReLU ->
  1x1 conv ->out -> BN.
- SuperResIDWE{{1,2,4,6}}K{{3,5,7}}(in,out,stride,bottleneck_channels,sub_layers): each sub_layer
  is TWO MobileNet-style inverted-residual units with expansion E. Unit A: 1x1 conv
  in->E*bottleneck -> BN -> ReLU -> depthwise kxk -> BN -> ReLU -> 1x1 conv ->bottleneck -> BN.
  Unit B: the same from bottleneck through E*out channels to out.
Residual units add a shortcut, then apply ReLU; the main branch ends in BN without activation.
The first unit of each residual block has a 1x1-conv+BN projection shortcut; later units use
identity unless channels change. Only a block's first layer or unit uses its stride.

Arguments: in = input channels, out = output channels, stride 1 keeps and 2 halves the spatial
size, bottleneck_channels = inner width of residual units, sub_layers = repetitions (as above).
Rules: the first block's in is 3; every other block's in equals the previous block's out;
out and bottleneck channels are multiples of 8 from 8 to {MAX_CHANNELS}; stride is 1 or 2;
sub_layers is 1 to {MAX_SUB_LAYERS}; at most {MAX_BLOCKS} blocks.
Budgets (a candidate over one is rejected): max_params={limit(self.max_params)} (all trainable
parameters, classifier included); max_flops={limit(self.max_flops)} (one forward pass, a
multiply-add counts as 2 FLOPs); max_layers={limit(self.max_layers)} (the sum of sub_layers over
all blocks). Costs are counted for {self.resolution}x{self.resolution} inputs and
{self.num_classes} classes.
Edit: replace one block (0-based index) by one block string; if its out changes, the next
block's in is updated to match."""

    def describe_code(self) -> str:
        """Return the source of the block modules and the network, as they run."""
        parts = [
            zen_blocks.conv_bn,
            zen_blocks.ResidualUnit,
            zen_blocks.SuperConvKXBNRELU,
            zen_blocks.SuperResKXKX,
            zen_blocks.SuperResK1KXK1,
            zen_blocks.SuperResIDWEXKX,
            zen_blocks.build_block,
            zen_blocks.ZenMacroNet,
        ]
        return "\n\n".join(inspect.getsource(p).rstrip() for p in parts) + "\n"

    def info(self) -> dict[str, object]:
        """Return name, format, budgets, resolution and class count."""
        return {
            **super().info(),
            "max_params": self.max_params,
            "max_flops": self.max_flops,
            "max_layers": self.max_layers,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
        }
