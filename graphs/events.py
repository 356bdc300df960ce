"""The event stream without a terminal: reading it, redacting it, and folding it into text.

``docs/EVENTS.md`` defines the events. :func:`read_events` reads ``events.jsonl`` back,
:func:`redact` scrubs credentials from anything before it is written or shown, :class:`RunView`
folds events into what a view needs to know, and :func:`plain_line` turns one event into one log
line. :mod:`graphs.trace` (rich) and :mod:`graphs.report` (files) both build on these, so the
terminal and the reports say the same things in the same words.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from graphs.calibration import describe as describe_calibration

REDACTED = "[REDACTED]"

# Shapes of credentials that must never reach a trace, report or terminal.
_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI / Anthropic style (sk-, sk-proj-, sk-ant-)
    re.compile(r"\b(?:ghp|gho|ghs|ghu|ghr|github_pat)_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{16,}")
_ASSIGNED = re.compile(
    r"(?i)\b((?:api[_-]?key|secret(?:[_-]?key)?|password|passwd|access[_-]?token|auth[_-]?token)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]{8,})"
)
_SECRET_KEY = re.compile(
    r"(?i)(^|[_-])(api[_-]?key|secret|password|passwd|authorization|token|access[_-]?token)$"
)
_SECRET_ENV = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD)")
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-.=+]{12,}")  # no '/' or space: paths are not keys


def _env_secrets() -> list[str]:
    """Values of secret-looking environment variables (``OPENAI_API_KEY``, ``HF_TOKEN``, ...)."""
    # Keys first, values only of secret-looking keys: decoding every value on every event was
    # half the cost of showing one (a long run emits tens of thousands).
    values = (os.environ.get(k, "") for k in list(os.environ) if _SECRET_ENV.search(k))
    return sorted({v for v in values if _TOKEN_LIKE.fullmatch(v)}, key=len, reverse=True)


def _redact_text(text: str, env_values: list[str]) -> str:
    for value in env_values:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _ASSIGNED.sub(lambda m: m.group(1) + REDACTED, text)


def _secret_field(key: Any, value: Any) -> bool:
    named = isinstance(key, str) and _SECRET_KEY.search(key) is not None
    return named and isinstance(value, str) and bool(value)


def redact(value: Any, _env: list[str] | None = None) -> Any:
    """Return ``value`` with anything that looks like an API key or bearer token replaced.

    Strings are scanned for key shapes (``sk-...``, ``Bearer ...``, ``api_key=...``) and for the
    values of secret-looking environment variables; in dicts, string values under keys such as
    ``api_key`` or ``authorization`` are replaced whole. Lists and dicts are copied, not modified.
    """
    env = _env_secrets() if _env is None else _env
    if isinstance(value, str):
        return _redact_text(value, env)
    if isinstance(value, dict):
        return {k: REDACTED if _secret_field(k, v) else redact(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, env) for v in value]
    return value


# -- formatting ------------------------------------------------------------------------------------


def is_fake_model(name: Any) -> bool:
    """Tell whether a model name denotes a scripted fake (``fake:...`` or containing ``FAKE``)."""
    return isinstance(name, str) and ("FAKE" in name or name.strip().lower().startswith("fake:"))


def fmt_score(value: Any) -> str:
    """Format a proxy score: two decimals, four below 1, scientific when huge or tiny."""
    if value is None:
        return "n/a"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e9 or abs(x) < 1e-3):
        return f"{x:.3e}"
    if abs(x) >= 1000 and x == int(x):  # counts such as params: 372,346
        return f"{x:,.0f}"
    return f"{x:.4f}" if abs(x) < 1 else f"{x:.2f}"


def fmt_delta(value: float | None) -> str:
    """Format a score difference with its sign."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "±0"
    if abs(value) >= 1e9 or abs(value) < 1e-3:
        return f"{value:+.2e}"
    if abs(value) >= 1000 and value == int(value):
        return f"{value:+,.0f}"
    return f"{value:+.4f}" if abs(value) < 1 else f"{value:+.2f}"


def fmt_duration(seconds: Any) -> str:
    """Format seconds as ``12s``, ``5m 43s`` or ``2h 03m``."""
    if seconds is None:
        return "?"
    s = max(0, round(float(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def fmt_cost(usd: Any) -> str:
    """Format a cost in US dollars."""
    x = float(usd or 0.0)
    return f"${x:.2f}" if x >= 1 else f"${x:.4f}"


def fmt_count(n: Any) -> str:
    """Format an integer count with thousands separators (``?`` when unknown)."""
    return "?" if n is None else f"{int(n):,}"


def fmt_size(n: Any) -> str:
    """Format a parameter or FLOP count compactly (``1.05M``)."""
    if n is None:
        return "n/a"
    x = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


# -- reading and folding events -------------------------------------------------------------------

# Escape sequences in LLM text could move the cursor or recolour the terminal: drop them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def read_events(path: Path) -> list[dict]:
    """Read an ``events.jsonl`` file, skipping a line cut short by a kill (or any bad line)."""
    return list(iter_events(path))


def iter_events(path: Path) -> Iterator[dict]:
    """Yield the events of an ``events.jsonl`` file one by one, skipping bad lines as read_events.

    A long run's file holds tens of thousands of events; readers that fold them (reports, replays)
    need not hold them all in memory at once.
    """
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                event = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


def clean_text(text: Any, limit: int | None = None, *, one_line: bool = False) -> str:
    """Return ``text`` without control characters, optionally on one line and cut to ``limit``."""
    s = _CONTROL.sub("", "" if text is None else str(text))
    if one_line:
        s = " ".join(s.split())
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def _one(text: Any, limit: int = 200) -> str:
    return clean_text(text, limit, one_line=True)


def arch_text(arch: Any, limit: int = 300) -> str:
    """Return an architecture on one bounded line (torch-code candidates are whole programs)."""
    return clean_text(arch, limit, one_line=True)


#: Run totals that ``population_updated`` reports; views add what happened since the last one.
TOTALS = ("evaluations", "invalid_proposals", "fallbacks", "tokens", "cost_usd")


class RunView:
    """What a view knows about the run: the events folded into counters and the latest states."""

    def __init__(self, total: int | None) -> None:
        self.total = total  # iterations planned
        self.started: dict = {}  # the run_started event
        self.start_time: float | None = None  # time.monotonic() at the first event
        self.iteration = 0
        self.concurrency = 1
        self.init_done = 0
        self.slots: dict[int, dict] = {}  # per parallel slot: parent, child, changes, score, ...
        self.active_slot = 0
        self.reflection: dict | None = None
        self.population: dict = {}  # the last population_updated event
        self.pop_time = 0.0  # time.monotonic() when it arrived
        self.higher_is_better = True
        self.base: dict[str, float] = dict.fromkeys(TOTALS, 0)
        self.pending: dict[str, float] = dict.fromkeys(TOTALS, 0)
        self.llm_calls = self.cache_hits = self.failures = 0
        self.finished: dict | None = None
        self.human: dict | None = None  # the latest human_steer event

    def count(self, key: str) -> float:
        """Return a run total (one of ``TOTALS``) including events after the last update."""
        return self.base[key] + self.pending[key]

    @property
    def fakes(self) -> list[str]:
        """Names of the run's scripted fake models."""
        return sorted({m for m in (self.started.get("models") or {}).values() if is_fake_model(m)})

    def update(self, e: dict) -> None:
        """Fold one event into the view."""
        kind = e.get("event")
        self.start_time = self.start_time or time.monotonic()
        if isinstance(e.get("iteration"), int):
            self.iteration = max(self.iteration, e["iteration"])
        slot = e["slot"] if isinstance(e.get("slot"), int) else 0
        view = self.slots.setdefault(slot, {})
        if kind == "run_started":
            self.started, config = e, e.get("config") or {}
            self.total = self.total or config.get("iterations")
            self.concurrency = int(config.get("concurrency") or 1)
        elif kind == "iteration_started":
            parent = e.get("parent") or {}
            self.slots[slot] = {"iteration": e.get("iteration"), "parent": parent.get("arch"),
                                "parent_score": parent.get("score"), "rejected": []}
            self.active_slot = slot
        elif kind == "llm_call":
            self.llm_calls += 1
            self.pending["tokens"] += (e.get("input_tokens") or 0) + (e.get("output_tokens") or 0)
            self.pending["cost_usd"] += e.get("cost_usd") or 0.0
        elif kind == "proposal":
            self.active_slot = slot
            if not e.get("ok"):
                self.pending["invalid_proposals"] += 1
                view.setdefault("rejected", []).append((e.get("attempt"), e.get("reason")))
            else:
                self.pending["fallbacks"] += 1 if e.get("fallback") else 0
                view.update(child=e.get("child"), changes=e.get("changes") or [], score=None,
                            rationale=e.get("rationale"), fallback=bool(e.get("fallback")),
                            error=None, status="evaluating")
        elif kind == "evaluation":
            self.cache_hits += 1 if e.get("cached") else 0
            self.pending["evaluations"] += 0 if e.get("cached") else 1
            self.init_done += 1 if e.get("phase") == "init" else 0
            error = None
            if not e.get("ok"):
                self.failures += 1
                err = e.get("error") or {}
                error = f"{err.get('kind', 'error')}: {err.get('message', '')}"
            if e.get("phase") == "search":
                view.update(score=e.get("score"), error=error,
                            status="scored" if e.get("ok") else "failed")
        elif kind == "reflection":
            self.reflection = e
        elif kind == "population_updated":
            self.population, self.pop_time = e, time.monotonic()
            self.base = {k: e.get(k) or 0 for k in TOTALS}
            self.pending = dict.fromkeys(TOTALS, 0)
            top = [t.get("score") for t in e.get("top") or []]
            numbers = all(isinstance(t, (int, float)) for t in top)
            if len(top) >= 2 and numbers and top[0] != top[-1]:
                self.higher_is_better = top[0] > top[-1]  # ``top`` is best first
        elif kind == "run_finished":
            self.finished = e
        elif kind == "human_steer":
            self.human = e

    def meter(self, key: str, value: Any = None) -> str:
        """A run total as text, with its budget when one is set: ``$0.41 of $2``, ``12k of 50k tok``."""
        value = self.count(key) if value is None else value
        config = self.started.get("config") or {}
        if key == "cost_usd":
            budget = config.get("budget_usd")
            return fmt_cost(value) + (f" of {fmt_cost(budget)}" if budget else "")
        budget = config.get("budget_tokens")
        return fmt_count(value) + (f" of {fmt_count(budget)}" if budget else "") + " tok"

    def per_improvement(self, e: dict | None = None) -> str:
        """LLM spend per step that raised the best score (cost when priced, else tokens)."""
        e = e if e is not None else self.population
        n = e.get("improvements") or 0
        if not n:
            return "n/a"
        cost = e.get("cost_usd") or 0.0
        return fmt_cost(cost / n) if cost else f"{fmt_count(round((e.get('tokens') or 0) / n))} tok"

    def delta(self, view: dict) -> float | None:
        """Return child score minus parent score for a slot view (None until both are known)."""
        s, p = view.get("score"), view.get("parent_score")
        ok = isinstance(s, (int, float)) and isinstance(p, (int, float))
        return s - p if ok else None

    def improved(self, delta: float | None) -> bool | None:
        """Tell whether ``delta`` improves under the proxy's direction (None: no change)."""
        return None if not delta else (delta > 0) == self.higher_is_better

    def elapsed(self) -> float | None:
        """Return seconds of searching so far (the graph's clock, then ours since its last word)."""
        if self.finished:
            return (self.finished.get("summary") or {}).get("wall_seconds")
        if self.population.get("elapsed_s") is not None:
            return self.population["elapsed_s"] + time.monotonic() - self.pop_time
        return None if self.start_time is None else time.monotonic() - self.start_time

    def eta(self) -> float | None:
        """Return the estimated seconds left, counting down since the last update."""
        eta = self.population.get("eta_s")
        return None if eta is None else max(0.0, eta - (time.monotonic() - self.pop_time))

    def tag(self, e: dict) -> str:
        """Return the line prefix for an event: ``[init]``, ``[it 3/5]`` or ``[it 3/5 s1]``."""
        it = e.get("iteration", self.iteration)
        if it == 0 or e.get("phase") == "init":
            return "[init]"
        slot = f" s{e['slot']}" if self.concurrency > 1 and isinstance(e.get("slot"), int) else ""
        return f"[it {it}/{self.total or '?'}{slot}]"


def plain_line(e: dict, run: RunView) -> tuple[str, str]:
    """Return one log line for event ``e`` (already folded into ``run``) and a rich style for it."""
    kind, tag, style = e.get("event"), run.tag(e), ""
    if kind == "run_started":
        prompts, models = e.get("prompts") or {}, e.get("models") or {}
        roles = ", ".join(f"{r} {m} ({prompts.get(r)})" for r, m in models.items() if m)
        fake = f"  !! FAKE MODEL: {', '.join(run.fakes)} !!" if run.fakes else ""
        verb = "resumed" if e.get("resumed") else "started"
        text = f"run {e.get('run_id')} {verb} at iteration {e.get('iteration', 0)}: {roles}{fake}"
        style = "bold"
    elif kind == "iteration_started":
        p = e.get("parent") or {}
        text = f"{tag} parent {arch_text(p.get('arch'))}  score {fmt_score(p.get('score'))}"
    elif kind == "llm_call":
        status = "ok" if e.get("ok") else f"FAILED: {_one(e.get('error'))}"
        cached = " cached" if e.get("cached") else ""
        text = (f"{tag} {e.get('role')} call #{e.get('attempt')} {e.get('model')} "
                f"T={e.get('temperature')} {fmt_count(e.get('input_tokens'))}+"
                f"{fmt_count(e.get('output_tokens'))} tok {fmt_cost(e.get('cost_usd'))} "
                f"{float(e.get('seconds') or 0):.1f}s{cached} {status}")
        style = "dim" if e.get("ok") else "red"
    elif kind == "proposal" and not e.get("ok"):
        text = f"{tag} proposal REJECTED (attempt {e.get('attempt')}): {_one(e.get('reason'))}"
        style = "yellow"
    elif kind == "proposal":
        changes = "; ".join(_one(c) for c in e.get("changes") or []) or "no change"
        label = f"ok (attempt {e.get('attempt')})"
        if e.get("human"):
            label, style = "HUMAN EDIT", "magenta"
        elif e.get("fallback"):
            label, style = "FALLBACK (random mutation)", "yellow"
        text = (f"{tag} proposal {label}  {arch_text(e.get('child'))}  ({changes})  "
                f"why: {_one(e.get('rationale'), 160)}")
    elif kind == "evaluation":
        cached = " (cached)" if e.get("cached") else ""
        if not e.get("ok"):
            err = e.get("error") or {}
            text = (f"{tag} eval FAILED {arch_text(e.get('arch'))}  {err.get('kind', 'error')}: "
                    f"{_one(err.get('message'))}{cached}")
            style = "red"
        else:
            d = run.delta(run.slots.get(e["slot"] if isinstance(e.get("slot"), int) else 0, {}))
            search = e.get("phase") == "search" and d is not None
            delta = f" ({fmt_delta(d)} vs parent)" if search else ""
            text = (f"{tag} eval ok {arch_text(e.get('arch'))}  score {fmt_score(e.get('score'))}"
                    f"{delta}  {float(e.get('seconds') or 0):.2f}s{cached}")
    elif kind == "reflection" and not e.get("ok"):
        text, style = f"{tag} reflection FAILED: {_one(e.get('error'))}", "red"
    elif kind == "reflection":
        text = (f"{tag} reflection: changed: {_one(e.get('what_changed'), 160)} | "
                f"why: {_one(e.get('why'), 240)} | next: {_one(e.get('suggestion'), 240)}")
        style = "cyan"
    elif kind == "population_updated":
        best, truth = e.get("best") or {}, e.get("best_ground_truth")
        gt = f" (truth {fmt_score(truth)})" if truth is not None else ""
        eta = f", ETA {fmt_duration(e['eta_s'])}" if e.get("eta_s") is not None else ""
        text = (f"{tag} population {e.get('size')}: best {fmt_score(best.get('score'))}{gt} "
                f"{arch_text(best.get('arch'))}  mean {fmt_score(e.get('mean_score'))}  "
                f"+{len(e.get('added') or [])}/-{len(e.get('removed') or [])} | "
                f"evals {fmt_count(e.get('evaluations'))}, "
                f"invalid {fmt_count(e.get('invalid_proposals'))}, "
                f"fallbacks {fmt_count(e.get('fallbacks'))} | {run.meter('tokens', e.get('tokens'))} "
                f"{run.meter('cost_usd', e.get('cost_usd'))} | "
                f"{fmt_duration(e.get('elapsed_s'))} elapsed{eta}")
        if e.get("improvements"):
            text += f" | {run.per_improvement(e)} per improvement"
        if e.get("calibration"):
            text += f" | {describe_calibration(e['calibration'])}"
        style = "bold"
    elif kind == "human_steer":
        what = f": {_one(e.get('text'), 240)}" if e.get("text") else ""
        text, style = f"{tag} human: {e.get('action')}{what}", "magenta"
    elif kind == "run_finished":
        best = (e.get("summary") or {}).get("best") or {}
        text = (f"run finished ({e.get('reason')}): best {fmt_score(best.get('score'))} "
                f"{arch_text(best.get('arch'))}")
        style = "bold green"
    else:
        text, style = f"{tag} {kind}", "dim"
    return text, style
