"""How scores, architectures and history look in the Designer's and Reflector's prompts.

Scores of log-scale proxies are shown as log10 (raw values span many orders of magnitude, which
a language model reads badly); long architectures (whole programs) are abbreviated in history
lines; all JSON is compact and keeps non-ASCII text as is.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from numbers import Real
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.proxies import ProxySpec
    from tools.spaces import SearchSpace

#: Programs (torch-code sources) longer than this are abbreviated in history lines.
SHORT_ARCH_CHARS = 240
#: One-line architecture strings are shown whole up to this length: a DARTS genotype is ~350
#: characters, a Zen-NAS block string a few hundred, and a hash would hide what the model needs.
SHORT_ONE_LINE_CHARS = 1200
#: Error texts in history lines are cut to this many characters.
SHORT_ERROR_CHARS = 160
#: A history entry is written as its changes against the parent only when it has at most this
#: many changed parts (and they are shorter than the architecture itself).
MAX_CHANGE_PARTS = 2


def score_type(proxy: ProxySpec) -> str:
    """Return the label of the scores shown to the model, e.g. ``synflow, log10``."""
    return f"{proxy.name}, log10" if proxy.log_scale else proxy.name


def score_note(proxy: ProxySpec) -> str:
    """Say how scores are shown and which direction is better."""
    better = "Higher is better." if proxy.higher_is_better else "Lower is better."
    if proxy.log_scale:
        return (
            f"Scores are log10 of the raw {proxy.name} value, because raw values span many orders "
            f"of magnitude (a score of 3.0 means 1000; +1 means ten times larger). {better}"
        )
    return f"Scores are raw {proxy.name} values. {better}"


def shown_score(score: float | None, proxy: ProxySpec) -> float | str | None:
    """Return the score as the model sees it: log10 for log-scale proxies, 4 significant digits."""
    if score is None:
        return None
    if not math.isfinite(score):
        return str(score)
    if proxy.log_scale:
        if score <= 0:
            return f"raw {score:.4g} (no log10)"
        return round(math.log10(score), 3)
    return float(f"{score:.4g}")


def short_arch(arch: str) -> str:
    """Abbreviate a long program to its length and a short content hash; one-liners stay whole."""
    limit = SHORT_ONE_LINE_CHARS if "\n" not in arch.strip() else SHORT_ARCH_CHARS
    if len(arch) <= limit:
        return arch
    digest = hashlib.sha256(arch.encode()).hexdigest()[:8]
    return f"<program of {len(arch.splitlines())} lines, sha256 {digest}>"


def history_line(item: dict, proxy: ProxySpec) -> str:
    """Render one history record ``{"arch", "score", "error"}`` as a JSON line."""
    line: dict[str, Any] = {"arch": short_arch(str(item.get("arch", "")))}
    if item.get("error"):
        line["error"] = one_line(str(item["error"]))[:SHORT_ERROR_CHARS]
    else:
        line["score"] = shown_score(item.get("score"), proxy)
    return as_json(line)


def relative_arch(arch: str, parent: str, space: SearchSpace) -> str:
    """Write ``arch`` as its changes against ``parent`` when that is shorter, else abbreviated.

    ``"the parent"`` for the parent itself, ``"parent with edge 3<-0: skip_connect -> none"`` for
    a near relative; an NB201 string costs a small model ~45 prompt tokens, a change ~12.
    """
    if arch == parent:
        return "the parent"
    try:
        parts = space.diff(parent, arch)
    except (ValueError, TypeError, RecursionError):  # an unparsable history entry: show it as is
        parts = []
    relative = "parent with " + "; ".join(parts)
    if parts and len(parts) <= MAX_CHANGE_PARTS and len(relative) < len(arch):
        return relative
    return short_arch(arch)


def change_line(item: dict, parent: str, space: SearchSpace, proxy: ProxySpec) -> str:
    """Render one history record ``{"arch", "score", "error"}`` relative to ``parent``, one line."""
    return _outcome_line(relative_arch(str(item.get("arch", "")), parent, space), item, proxy)


def entry_line(item: dict, proxy: ProxySpec) -> str:
    """Render one history record as ``- ARCH: score S``, written the same whatever the parent.

    A line that does not depend on the parent reads the same on the next call, where a local
    server can reuse it from its KV cache (designer@v6).
    """
    return _outcome_line(short_arch(str(item.get("arch", ""))), item, proxy)


def scored_arch(arch: str, score: float | None, proxy: ProxySpec) -> str:
    """Return ``ARCH (score S)``; a program of several lines goes in a fence after the score.

    Plain text, where a JSON object with a score-type field cost a small model ~20 more prompt
    tokens per architecture (the system message already says what a score means).
    """
    shown = shown_score(score, proxy)
    if "\n" in arch.strip():
        return f"(score {shown})\n```\n{arch.strip()}\n```"
    return f"{arch} (score {shown})"


def _outcome_line(where: str, item: dict, proxy: ProxySpec) -> str:
    if item.get("error"):
        return f"- {where}: failed: {one_line(str(item['error']))[:SHORT_ERROR_CHARS]}"
    return f"- {where}: score {shown_score(item.get('score'), proxy)}"


def proxy_source(proxy: ProxySpec) -> str:
    """Return the proxy function's source code, or a one-line note when it is unavailable."""
    try:
        return inspect.getsource(proxy.fn).strip()
    except (OSError, TypeError):
        return f"# source of {proxy.name} is not available; summary: {proxy.summary}"


def as_json(value: Any) -> str:
    """Return compact one-line JSON, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False)


def one_line(text: str) -> str:
    """Collapse all whitespace runs (newlines included) to single spaces."""
    return " ".join(text.split())


__all__ = [
    "as_json",
    "change_line",
    "entry_line",
    "history_line",
    "one_line",
    "proxy_source",
    "relative_arch",
    "score_note",
    "scored_arch",
    "score_type",
    "short_arch",
    "shown_score",
]


def spread(front: list[dict], limit: int) -> list[dict]:
    """Return at most ``limit`` points evenly spaced along ``front``, both ends always included."""
    if limit < 2:
        raise ValueError(f"limit must be at least 2 (the two ends of the front), got {limit}")
    if len(front) <= limit:
        return list(front)
    last = len(front) - 1
    # Rounded even steps from 0 to last: distinct indices because len(front) > limit.
    return [front[round(i * last / (limit - 1))] for i in range(limit)]


def front_lines(front: list[dict], proxy_spec: ProxySpec, limit: int = 6) -> str:
    """Return the front for the Designer prompt: one JSON line per point, at most ``limit``.

    Scores are shown as elsewhere in the prompt (log10 for log-scale proxies), architectures
    abbreviated like history lines; the points are spread along the front from the smallest
    network to the largest.
    """
    return "\n".join(
        as_json({"arch": short_arch(str(p.get("arch", ""))),
                 "score": shown_score(p.get("score"), proxy_spec),
                 "params": _count(p.get("params")), "flops": _count(p.get("flops"))})
        for p in spread(front, limit)
    )


def _count(value: Any) -> Any:
    """Write a whole number as an int (``1045946``, not ``1045946.0``: fewer tokens), and numpy
    numbers as plain ones, which JSON can write."""
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
        return int(value) if float(value).is_integer() else float(value)
    return value
