"""The Zen-NAS block-string language: block types, parsed blocks, the parser and structural rules.

A block string is blocks written one after another, e.g.
``SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)``; grammar
``block := NAME "(" int ("," int)* ")"`` with whitespace ignored and names case-insensitive.
Errors are :class:`~tools.spaces.ArchitectureError` naming the bad token and its character
position, because they are shown to the Designer verbatim.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tools.spaces import ArchitectureError

MAX_ARCH_CHARS = 4096
MAX_BLOCKS = 64
MAX_SUB_LAYERS = 32
MAX_CHANNELS = 2048
INPUT_CHANNELS = 3
_MAX_DIGITS = 6

Family = Literal["conv", "basic", "bottleneck", "inverted"]


@dataclass(frozen=True)
class BlockType:
    """One block name: its family, kernel size and (inverted residual only) expansion."""

    name: str
    family: Family
    kernel: int
    expansion: int | None = None

    @property
    def arg_names(self) -> tuple[str, ...]:
        """Return the names of the block's integer arguments, in order."""
        if self.family == "conv":
            return ("in_channels", "out_channels", "stride", "sub_layers")
        return ("in_channels", "out_channels", "stride", "bottleneck_channels", "sub_layers")


def _block_types() -> dict[str, BlockType]:
    types = [BlockType(f"SuperConvK{k}BNRELU", "conv", k) for k in (1, 3, 5, 7)]
    types += [BlockType(f"SuperResK{k}K{k}", "basic", k) for k in (3, 5, 7)]
    types += [BlockType(f"SuperResK1K{k}K1", "bottleneck", k) for k in (3, 5, 7)]
    types += [
        BlockType(f"SuperResIDWE{e}K{k}", "inverted", k, e) for k in (3, 5, 7) for e in (1, 2, 4, 6)
    ]
    return {t.name: t for t in types}


#: Every block name the language knows, keyed by its canonical spelling.
BLOCK_TYPES: dict[str, BlockType] = _block_types()
KNOWN_BLOCKS = (
    "SuperConvK{1,3,5,7}BNRELU, SuperResK3K3, SuperResK5K5, SuperResK7K7, "
    "SuperResK1K{3,5,7}K1, SuperResIDWE{1,2,4,6}K{3,5,7}"
)
_BY_LOWER = {name.lower(): name for name in BLOCK_TYPES}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class BlockSpec:
    """One parsed block: its type name and integer arguments (``bottleneck`` is None for convs)."""

    kind: str
    in_channels: int
    out_channels: int
    stride: int
    bottleneck: int | None
    sub_layers: int
    #: Character offset in the string the block was parsed from (for error messages only).
    pos: int = dataclasses.field(default=-1, compare=False, repr=False)

    @property
    def type(self) -> BlockType:
        """Return the block's :class:`BlockType`."""
        return BLOCK_TYPES[self.kind]

    def replace(self, **changes: object) -> BlockSpec:
        """Return a copy with some fields changed and no source position."""
        return dataclasses.replace(self, pos=-1, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        args = [self.in_channels, self.out_channels, self.stride, self.bottleneck, self.sub_layers]
        return f"{self.kind}({','.join(str(a) for a in args if a is not None)})"


def blocks_to_string(blocks: Sequence[BlockSpec]) -> str:
    """Return the canonical block string of ``blocks`` (no whitespace)."""
    return "".join(str(b) for b in blocks)


def parse_blocks(arch: str) -> list[BlockSpec]:
    """Parse a block string; syntax errors name the bad token and its character position."""
    if not isinstance(arch, str):
        raise ArchitectureError(
            f"a Zen-NAS architecture is a block string, got {type(arch).__name__}"
        )
    if len(arch) > MAX_ARCH_CHARS:
        raise ArchitectureError(
            f"block string has {len(arch)} characters; the limit is {MAX_ARCH_CHARS}"
        )
    blocks: list[BlockSpec] = []
    i, n = 0, len(arch)

    def skip(j: int) -> int:
        while j < n and arch[j].isspace():
            j += 1
        return j

    while (i := skip(i)) < n:
        m = _NAME.match(arch, i)
        if not m:
            raise ArchitectureError(
                f"unexpected character {arch[i]!r} at position {i}; expected a block name"
            )
        start, token = i, m.group()
        kind = _BY_LOWER.get(token.lower())
        if kind is None:
            close = difflib.get_close_matches(token, list(BLOCK_TYPES), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ArchitectureError(
                f"unknown block {token!r} at position {start}; {hint}known: {KNOWN_BLOCKS}"
            )
        i = skip(m.end())
        if i >= n or arch[i] != "(":
            found = repr(arch[i]) if i < n else "the end"
            raise ArchitectureError(f"expected '(' after {token!r} at position {i}, found {found}")
        opened, i, args = i, i + 1, []
        while True:
            i = skip(i)
            m = _INT.match(arch, i)
            if i >= n:
                raise ArchitectureError(
                    f"unclosed '(' of {token} opened at position {opened}; add ')'"
                )
            if not m:
                raise ArchitectureError(
                    f"expected an integer at position {i} in {token}, found {arch[i]!r}"
                )
            if len(m.group()) > _MAX_DIGITS:
                raise ArchitectureError(f"number at position {i} in {token} is too large")
            args.append(int(m.group()))
            i = skip(m.end())
            if i >= n:
                raise ArchitectureError(
                    f"unclosed '(' of {token} opened at position {opened}; add ')'"
                )
            if arch[i] not in ",)":
                raise ArchitectureError(
                    f"expected ',' or ')' at position {i} in {token}, found {arch[i]!r}"
                )
            i += 1
            if arch[i - 1] == ")":
                break
        names = BLOCK_TYPES[kind].arg_names
        if len(args) != len(names):
            raise ArchitectureError(
                f"{kind} at position {start} takes {len(names)} arguments "
                f"({','.join(names)}), got {len(args)}"
            )
        if len(names) == 4:
            args.insert(3, None)  # no bottleneck_channels
        blocks.append(BlockSpec(kind, *args, pos=start))
        if len(blocks) > MAX_BLOCKS:
            raise ArchitectureError(
                f"more than {MAX_BLOCKS} blocks; merge blocks by raising sub_layers"
            )
    if not blocks:
        raise ArchitectureError(
            "empty architecture; expected blocks such as SuperConvK3BNRELU(3,32,1,1)"
        )
    return blocks


def check_rules(blocks: Sequence[BlockSpec]) -> None:
    """Raise ArchitectureError at the first block that breaks a structural rule."""
    prev_out = INPUT_CHANNELS
    for idx, b in enumerate(blocks):
        where = f"block {idx} {b}" + (f" (position {b.pos})" if b.pos >= 0 else "")
        if b.in_channels != prev_out:
            source = f"block {idx - 1} outputs {prev_out}" if idx else "the image has 3 channels"
            raise ArchitectureError(
                f"{where}: in_channels {b.in_channels} breaks channel continuity ({source}); "
                f"set it to {prev_out}"
            )
        for label, value in (
            ("out_channels", b.out_channels),
            ("bottleneck_channels", b.bottleneck),
        ):
            if value is not None and (value % 8 or not 8 <= value <= MAX_CHANNELS):
                raise ArchitectureError(
                    f"{where}: {label} {value} must be a multiple of 8 from 8 to {MAX_CHANNELS}"
                )
        if b.stride not in (1, 2):
            raise ArchitectureError(f"{where}: stride {b.stride} must be 1 or 2")
        if not 1 <= b.sub_layers <= MAX_SUB_LAYERS:
            raise ArchitectureError(
                f"{where}: sub_layers {b.sub_layers} must be from 1 to {MAX_SUB_LAYERS}"
            )
        prev_out = b.out_channels
