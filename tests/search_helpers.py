"""Helpers shared by tests that drive ``python -m graphs.search``: scripts, event files, kills."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_script(path: Path, designer: list | dict, reflector: list | dict) -> str:
    """Write a role-split fake script (see ``agents.fake``) and return its ``fake:`` model spec."""
    path.write_text(json.dumps({"designer": designer, "reflector": reflector}))
    return f"fake:{path}"


def repeating_script(path: Path, latency_s: float) -> str:
    """A fake model that answers every Designer and Reflector call the same, after ``latency_s``.

    The Designer always asks for the same edit, so later steps meet already-evaluated children
    and exercise retries and fallbacks; the latency leaves time to stop a run mid-call.
    """
    designer = {"sleep": latency_s, "text": json.dumps(
        {"edge": "3<-0", "op": "nor_conv_3x3", "rationale": "a 3x3 conv on the long edge"})}
    reflector = {"sleep": latency_s, "text": json.dumps(
        {"what_changed": "one edge", "why": "more weights raise the count",
         "suggestion": "widen another edge"})}
    return write_script(path, {"replies": [designer], "repeat": True},
                        {"replies": [reflector], "repeat": True})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events_after(path: Path, offset: int) -> list[dict]:
    """Return the whole events written to ``path`` after byte ``offset`` (skips a cut last line)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            tail = f.read()
    except FileNotFoundError:
        return []
    lines = tail.decode("utf-8", errors="replace").splitlines()
    if lines and not tail.endswith(b"\n"):
        lines.pop()  # being written right now
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wait_for_event(
    proc: subprocess.Popen,
    events_path: Path,
    matches: Callable[[dict], bool],
    *,
    count: int = 1,
    offset: int = 0,
    timeout_s: float = 120.0,
) -> list[dict]:
    """Poll ``events_path`` until ``count`` events after byte ``offset`` satisfy ``matches``.

    Returns the events after ``offset`` seen at that moment. Fails (AssertionError) when the
    process exits first or the deadline passes, with the tail of what was written.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        events = events_after(events_path, offset)
        if sum(1 for e in events if matches(e)) >= count:
            return events
        if proc.poll() is not None:
            raise AssertionError(
                f"the search exited (rc {proc.returncode}) before the awaited event; "
                f"last events: {[e.get('event') for e in events[-8:]]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no awaited event within {timeout_s:g} s; "
                f"last events: {[e.get('event') for e in events[-8:]]}"
            )
        time.sleep(0.005)  # short: the kill must land inside a window of a few hundred ms


def _process_table() -> dict[int, tuple[int, str]]:
    """Return ``{pid: (parent pid, start time)}`` for every running process (zombies are gone)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may itself hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):  # exited; only its parent's wait is missing
            table[int(entry)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """Return ``{pid: start time}`` of every running descendant of ``pid`` (zygote, workers)."""
    table = _process_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                frontier.append(child)
    return found


@dataclass(frozen=True)
class Killed:
    """What a killed search left behind: descendants (pid -> start time), their scratch dirs."""

    children: dict[int, str]
    scratch_dirs: set[str]


def sigkill(proc: subprocess.Popen) -> Killed:
    """``kill -9`` the search and reap it; return its descendants, to check that they go too."""
    children = descendants(proc.pid)
    scratch_dirs = set()
    for pid in children:  # a sandbox process works in its own scratch directory
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if "rznas-" in cwd:
            scratch_dirs.add(cwd)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return Killed(children, scratch_dirs)


def wait_until_gone(processes: dict[int, str], timeout_s: float = 30.0) -> dict[int, str]:
    """Poll until none of ``processes`` (pid -> start time) runs; return those still alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        table = _process_table()
        alive = {pid: started for pid, started in processes.items()
                 if pid in table and table[pid][1] == started}  # same start time: not a reused pid
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def search_argv(model: str, run_dir: Path, iterations: int, concurrency: int = 1) -> list[str]:
    """A small, seeded ``python -m graphs.search`` run with ``model`` in both roles."""
    return [sys.executable, "-m", "graphs.search", "--designer-model", model, "--reflector-model",
            model, "--proxy", "params", "--iterations", str(iterations), "--population", "6",
            "--concurrency", str(concurrency), "--max-retries", "1", "--batch-size", "8",
            "--seed", "5", "--plain", "--output", str(run_dir)]


def resume_argv(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "graphs.search", "--resume", str(run_dir), "--plain"]


def sqlite_rows(db: Path, query: str) -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def call_key(e: dict) -> tuple:
    """What identifies one LLM request of a run in its ``llm_call`` events."""
    return e["iteration"], e["slot"], e["role"], e["attempt"]


def read_results(run_dir: Path) -> tuple[dict, list, list[dict]]:
    """Return a finished run's summary, population and events."""
    summary = json.loads((run_dir / "summary.json").read_text())
    population = json.loads((run_dir / "population.json").read_text())
    return summary, population, events_after(run_dir / "events.jsonl", 0)


def assert_like_unbroken(run_dir: Path, unbroken_dir: Path, *, all_calls_recorded: bool) -> None:
    """Check that a stopped-and-resumed run ended as an unbroken run with the same flags did.

    Same population and summary, no candidate scored twice and the same candidates, no LLM
    request asked twice and the same cache keys. ``all_calls_recorded`` False allows fewer
    ``llm_call`` events than the unbroken run (a process stopped at once may not have written the
    events of calls answered just before; the LLM cache holds them all).
    """
    summary, population, events = read_results(run_dir)
    expected_summary, expected_population, expected_events = read_results(unbroken_dir)
    assert population == expected_population
    for key in ("best", "iterations", "evaluations", "invalid_proposals", "fallbacks", "llm_calls",
                "tokens", "progress", "population_size"):
        assert summary[key] == expected_summary[key], key

    scored = Counter(e["canonical"] for e in events
                     if e["event"] == "evaluation" and not e["cached"])
    assert scored and max(scored.values()) == 1, scored.most_common(3)
    evaluated = {e["canonical"] for e in events if e["event"] == "evaluation"}
    assert evaluated == {e["canonical"] for e in expected_events if e["event"] == "evaluation"}

    calls = [e for e in events if e["event"] == "llm_call"]
    asked = Counter(call_key(e) for e in calls if not e["cached"])
    assert max(asked.values()) == 1, asked.most_common(3)
    recorded = {call_key(e) for e in calls}
    expected = {call_key(e) for e in expected_events if e["event"] == "llm_call"}
    assert recorded == expected if all_calls_recorded else recorded <= expected
    keys = "SELECT key FROM replies ORDER BY key"
    assert sqlite_rows(run_dir / "llm_cache.sqlite", keys) == sqlite_rows(
        unbroken_dir / "llm_cache.sqlite", keys)
