"""Render the search's event stream and record it on disk (the only module that imports rich).

:class:`TraceWriter` consumes the events described in ``docs/EVENTS.md``. Every event is appended
as one JSON line to ``RUN_DIR/events.jsonl``; the ``messages`` and ``response`` of ``llm_call``
events go to ``RUN_DIR/messages.jsonl`` instead. On the terminal it shows either a rich live view
(``mode="live"``), one line per event (``"plain"``, for logs and CI) or nothing (``"quiet"``).
Live degrades to plain when the console is not a terminal, so logs never get cursor movements.
Anything that looks like a credential is redacted before it is written or shown.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from graphs.calibration import describe as describe_calibration
from graphs.events import (
    RunView,
    arch_text,
    clean_text,
    fmt_cost,
    fmt_count,
    fmt_delta,
    fmt_duration,
    fmt_score,
    is_fake_model,
    plain_line,
    read_events,
    redact,
)

__all__ = ["MODES", "TraceWriter", "highlight_changes", "read_events"]

MODES = ("live", "plain", "quiet")
#: Events after which both files are fsync'ed (every line is flushed; this survives a crash).
DURABLE_EVENTS = {"run_started", "population_updated", "run_finished"}
#: Fields of ``llm_call`` that go to messages.jsonl only (``request``: the Designer's input).
TRANSCRIPT_FIELDS = ("messages", "response", "request")
#: Fields of ``llm_call`` repeated in messages.jsonl, to join the two files.
TRANSCRIPT_KEYS = ("time", "iteration", "slot", "role", "model", "prompt_id", "attempt",
                   "temperature", "cached")
#: In live mode these (and failures) are also printed above the view, as scrollback.
SCROLLBACK_EVENTS = ("run_started", "reflection", "population_updated", "run_finished")
_ARCH_TOKEN = re.compile(r"[|+(),\s]|[^|+(),\s]+")


def highlight_changes(parent: str | None, child: str) -> Text:
    """Return ``child`` as rich Text with the tokens that differ from ``parent`` highlighted."""
    text = Text(clean_text(child))
    if not parent:
        return text
    a, b = _ARCH_TOKEN.findall(parent), _ARCH_TOKEN.findall(text.plain)
    starts, pos = [], 0
    for tok in b:
        starts.append(pos)
        pos += len(tok)
    starts.append(pos)
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal" and j2 > j1:
            text.stylize("bold black on yellow", starts[j1], starts[j2])
    return text


class TraceWriter:
    """Consumes events: renders them and appends them to events.jsonl and messages.jsonl.

    Args:
        run_dir: the run directory (created if missing). Files are appended to, so a resumed
            run continues the same trace.
        mode: ``"live"`` (rich live view), ``"plain"`` (one line per event, no cursor movement)
            or ``"quiet"`` (files only). ``"live"`` becomes ``"plain"`` on a non-terminal console.
        console: where to render (default: a new stdout console).
        total_iterations: iterations planned (default: those of the ``run_started`` config).
    """

    def __init__(self, run_dir: Path, *, mode: str = "live", console: Console | None = None,
                 total_iterations: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown trace mode {mode!r}; use one of {', '.join(MODES)}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.console = console or Console()
        if mode == "live" and (not self.console.is_terminal or self.console.is_dumb_terminal):
            mode = "plain"
        self.mode = mode
        self._run = RunView(total_iterations)
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._closed = False
        self._events = _open_for_append(self.run_dir / "events.jsonl")
        self._messages = _open_for_append(self.run_dir / "messages.jsonl")

    def __enter__(self) -> TraceWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def emit(self, event: dict) -> None:
        """Record one event (adding ``time`` if missing) and render it."""
        if self._closed:
            raise RuntimeError("TraceWriter.emit() after close(); emit run_finished before closing")
        event = redact(dict(event))
        event.setdefault("time", time.time())
        kind = event.get("event")
        record = {k: v for k, v in event.items() if k not in TRANSCRIPT_FIELDS}
        with self._lock:
            if kind == "llm_call" and any(k in event for k in TRANSCRIPT_FIELDS):
                transcript = {k: event.get(k) for k in TRANSCRIPT_KEYS}
                transcript["messages"] = event.get("messages") or []
                transcript["response"] = event.get("response")
                if "request" in event:
                    transcript["request"] = event["request"]
                _append(self._messages, transcript)
            _append(self._events, record)
            if kind in DURABLE_EVENTS:
                for f in (self._messages, self._events):
                    os.fsync(f.fileno())
            self._run.update(record)
            if self.mode == "quiet":
                return
            try:
                line = plain_line(record, self._run)
            except Exception as exc:  # noqa: BLE001 - a rendering bug must not cost a long, paid run
                line = (f"trace: could not render a {kind!r} event ({type(exc).__name__}: {exc}); "
                        "it is in events.jsonl"), "red"
        # Print outside the lock: rich's Live holds its own lock while it asks _view for a frame.
        self._render(record, line)

    def _render(self, e: dict, line: tuple[str, str]) -> None:
        kind = e.get("event")
        if self.mode == "live" and self._live is None and kind != "run_finished":
            self._live = Live(console=self.console, get_renderable=self._view, refresh_per_second=4,
                              vertical_overflow="crop")
            self._live.start()
        # Above the live view, keep only the lines worth scrolling back to.
        trouble = kind in ("evaluation", "proposal", "llm_call") and (
            not e.get("ok") or e.get("fallback"))
        if self.mode == "plain" or kind in SCROLLBACK_EVENTS or trouble:
            text = clean_text(line[0]).replace("\n", " ").replace("\t", " ")  # one event, one line
            self.console.print(Text(text, style=line[1]), soft_wrap=True)

    def suspend_live(self) -> None:
        """Stop the live view until the next event (while the terminal asks the user something)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def print_line(self, text: str) -> None:
        """Print a CLI message through the same console (above the live view while it runs)."""
        self.console.print(Text(clean_text(redact(str(text)))), soft_wrap=True)

    def close(self) -> None:
        """Stop the live view and close the files (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        if self._live is not None:
            self._live.stop()  # not under self._lock: the final refresh calls _view
            self._live = None
        failure: OSError | None = None
        with self._lock:
            for f in (self._messages, self._events):
                # A full disk must not leave a file open: its buffer would fail again, noisily,
                # when garbage-collected. Close both, then report the first failure.
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    failure = failure or exc
                try:
                    f.close()
                except OSError as exc:
                    failure = failure or exc
        if failure is not None:
            raise failure

    # -- the live view ---------------------------------------------------------------------------

    def _view(self) -> RenderableType:
        with self._lock:
            try:
                sections = [[self._header()], [self._mutation()],
                            [self._reflection(compact=False), self._reflection(compact=True)],
                            [self._top()], [self._counts()]]
                return self._fit(sections, priority=(0, 1, 4, 3, 2))
            except Exception as exc:  # noqa: BLE001 - a rendering bug must not stop the search
                return Text(f"trace: live view failed ({type(exc).__name__}: {exc})", style="red")

    def _fit(self, sections: list[list[RenderableType | None]], priority: tuple[int, ...]) -> Group:
        """Show each section in the first form that fits the terminal, most important first.

        A live view taller than the terminal cannot be redrawn in place, so what does not fit is
        shortened or left out (it is in the scrollback lines and events.jsonl anyway).
        """
        room, chosen = self.console.size.height - 1, {}
        for i in priority:
            for form in sections[i]:
                if form is None:
                    continue
                height = len(self.console.render_lines(form, self.console.options, pad=False))
                if height <= room:
                    chosen[i], room = form, room - height
                    break
        return Group(*(chosen[i] for i in sorted(chosen)))

    def _header(self) -> RenderableType:
        run, started = self._run, self._run.started
        config = started.get("config") or {}
        lines: list[RenderableType] = []
        if run.fakes:
            banner = f" FAKE MODEL: {', '.join(run.fakes)} (scripted replies, not a real LLM) "
            lines.append(Text(banner, style="bold white on red", justify="center", no_wrap=True,
                              overflow="ellipsis"))
        title = Text(f"RZ-NAS {clean_text(started.get('run_id') or self.run_dir.name)}",
                     style="bold blue")
        if started.get("resumed"):
            title.append(" (resumed)", style="yellow")
        task = [str(config[k]) for k in ("space", "dataset", "proxy") if config.get(k)]
        if config.get("population"):
            task += [f"population {config['population']}", f"seed {config.get('seed')}"]
        lines.append(title.append("  " + " · ".join(task), style="dim"))
        who = Text(no_wrap=True, overflow="ellipsis")
        prompts = started.get("prompts") or {}
        for role, model in (started.get("models") or {}).items():
            if model:
                style = "red" if is_fake_model(model) else "cyan"
                who.append(f"{role} ", style="bold").append(clean_text(model), style=style)
                who.append(f" ({prompts.get(role)})   ", style="dim")
        lines.append(who)
        size = config.get("population")
        if run.iteration == 0 and size:
            label = f"initial population {run.init_done}/{size}"
            bar = ProgressBar(total=size, completed=min(run.init_done, size))
        else:
            label = f"iteration {run.iteration}/{run.total or '?'}"
            done = run.population.get("iteration", started.get("iteration", 0))  # resumed: not 0
            bar = ProgressBar(total=run.total or None, completed=done)
        status = (f"finished ({run.finished.get('reason')})" if run.finished
                  else f"ETA {fmt_duration(run.eta())}")
        grid = Table.grid(padding=(0, 2), expand=True)
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_column(no_wrap=True, justify="right")
        grid.add_row(Text(label, style="bold"), bar,
                     Text(f"elapsed {fmt_duration(run.elapsed())} · {status}"))
        return Group(*lines, grid)

    def _mutation(self) -> RenderableType | None:
        run = self._run
        view = run.slots.get(run.active_slot) or {}
        if not view.get("parent"):
            return None
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        parent = f"{arch_text(view['parent'], 400)}  {fmt_score(view.get('parent_score'))}"
        grid.add_row("parent", Text(parent))
        if view.get("child"):
            child = highlight_changes(arch_text(view["parent"], 400), arch_text(view["child"], 400))
            if view.get("status") == "failed":
                child.append("  failed", style="bold red")
            elif view.get("score") is not None:
                delta = run.delta(view)
                better = run.improved(delta)
                child.append(f"  {fmt_score(view['score'])} ", style="bold")
                child.append(f"({fmt_delta(delta)})",
                             style="green" if better else "red" if better is False else "")
            else:
                child.append("  evaluating…", style="dim")
            grid.add_row("child", child)
            changes = clean_text("; ".join(map(str, view.get("changes") or [])) or "none", 300)
            grid.add_row("change", Text(changes, style="yellow"))
            why = Text(clean_text(view.get("rationale"), 200, one_line=True))
            if view.get("fallback"):
                why = Text("FALLBACK ", style="bold yellow") + why
            grid.add_row("why", why)
            if view.get("error"):
                error = clean_text(view["error"], 200, one_line=True)
                grid.add_row("error", Text(error, style="red"))
        rejected = [f"#{a}: {clean_text(r, 160, one_line=True)}"
                    for a, r in view.get("rejected", [])]
        if rejected:
            grid.add_row("rejected", Text("\n".join(rejected[-3:]), style="yellow"))
        if not view.get("child"):
            grid.add_row("", Text("designing…", style="dim"))
        slot = f" · slot {run.active_slot + 1} of {run.concurrency}" if run.concurrency > 1 else ""
        return Panel(grid, title=f"iteration {view.get('iteration')}{slot}", title_align="left")

    def _reflection(self, *, compact: bool) -> RenderableType | None:
        r = self._run.reflection
        if not r:
            return None
        if not r.get("ok"):
            body: RenderableType = Text(f"failed: {clean_text(r.get('error'), 300)}", style="red")
        else:
            body = Table.grid(padding=(0, 1))
            body.add_column(style="bold cyan", no_wrap=True)
            body.add_column()
            for label, key in (("changed", "what_changed"), ("why", "why"), ("next", "suggestion")):
                text = clean_text(r.get(key), 300, one_line=True)
                body.add_row(label, Text(text, no_wrap=compact, overflow="ellipsis"))
        return Panel(body, title=f"reflection · iteration {r.get('iteration')}", title_align="left",
                     border_style="cyan")

    def _top(self) -> RenderableType | None:
        pop = self._run.population
        if not pop.get("top"):
            return None
        top = Table(box=None, pad_edge=False, header_style="bold dim")
        top.add_column("#", justify="right")
        top.add_column(f"top of population ({pop.get('size')})", no_wrap=True, overflow="ellipsis")
        top.add_column("score", justify="right")
        added = set(pop.get("added") or []) if pop.get("iteration") else set()
        for i, m in enumerate(pop["top"], 1):
            style = "green" if m.get("arch") in added else ""  # new this iteration
            arch = Text(arch_text(m.get("arch")), style=style)
            top.add_row(str(i), arch, fmt_score(m.get("score")))
        return top

    def _counts(self) -> RenderableType:
        run, pop = self._run, self._run.population
        items = [("best", fmt_score((pop.get("best") or {}).get("score"))),
                 ("mean", fmt_score(pop.get("mean_score")))]
        if pop.get("best_ground_truth") is not None:
            items.append(("truth of best", fmt_score(pop["best_ground_truth"])))
        evals = fmt_count(run.count("evaluations"))
        items += [("evals", f"{evals} ({run.cache_hits} cached, {run.failures} failed)"),
                  ("invalid", fmt_count(run.count("invalid_proposals"))),
                  ("fallbacks", fmt_count(run.count("fallbacks"))),
                  ("LLM calls", fmt_count(run.llm_calls)),
                  ("tokens", run.meter("tokens")),
                  ("cost", run.meter("cost_usd"))]
        if pop.get("improvements"):
            items.append(("per improvement", run.per_improvement()))
        if pop.get("calibration"):
            items.append(("proxy vs truth", describe_calibration(pop["calibration"])))
        if run.human:
            items.append(("human", f"{run.human.get('action')} at it {run.human.get('iteration')}"))
        text = Text()
        for i, (label, value) in enumerate(items):
            text.append(" · " if i else "", style="dim").append(f"{label} ", style="dim")
            text.append(value, style="bold")
        return text


def _open_for_append(path: Path) -> IO[str]:
    """Open ``path`` for appending, first cutting a partial last line left by a killed run."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(end - 1)
            if f.read(1) != b"\n":
                pos = end
                while pos > 0:  # scan back in blocks: the file may hold a long run
                    step = min(1 << 16, pos)
                    pos -= step
                    f.seek(pos)
                    newline = f.read(step).rfind(b"\n")
                    if newline >= 0:
                        f.truncate(pos + newline + 1)
                        break
                else:
                    f.truncate(0)
    return open(path, "a", encoding="utf-8")


def _append(f: IO[str], record: dict) -> None:
    f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    f.flush()  # readers (tests, tail -f, a resumed run) see whole lines at once
