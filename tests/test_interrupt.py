"""Ctrl-C and SIGTERM in the middle of a search step, then ``--resume``: nothing lost or done twice.

A real ``python -m graphs.search --plain`` subprocess (fake scripted Designer and Reflector with a
latency, ``--proxy params``) gets SIGINT or SIGTERM while a Designer call or a Reflector call is in
flight. Each point is reached by polling ``events.jsonl`` for the event that opens it, never by
sleeping. The first signal must finish the current step and save (exit 130, ``summary.json`` says
``interrupted``); a second one during that wind-down must end the process at once, before the step
ends, leaving no sandbox process behind. ``--resume`` then has to end exactly where an unbroken
run with the same flags ends: the requested number of iterations, each step applied once, no
architecture added twice, no candidate scored twice and no answered LLM request asked again.

The fake script repeats one reply per role, so a reply does not depend on how many calls a process
made before and the unbroken run is a valid reference (see ``tests/test_crash_resume.py``).

Run: .venv/bin/python -m pytest -q tests/test_interrupt.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.search_helpers import (
    ROOT,
    assert_like_unbroken,
    descendants,
    events_after,
    file_size,
    read_results,
    resume_argv,
    search_argv,
    wait_for_event,
    wait_until_gone,
    repeating_script,
)

#: Seconds per fake LLM call: a signal sent just after a call starts lands while it is in flight.
LATENCY_S = 0.5
ITERATIONS = 4
#: What the first signal prints, and what the test waits for before sending a second one.
STOPPING_LINE = "stopping after the current step; press Ctrl-C again to stop now"
#: Generous bounds for a loaded 2-core machine; the search is much quicker when alone.
WIND_DOWN_S = 60.0
AT_ONCE_S = 10.0


@dataclass(frozen=True)
class StopPoint:
    """Where to signal: after ``opens``; the call in flight there ends with ``closes``."""

    phase: str
    iteration: int
    opens: Callable[[dict], bool]
    closes: Callable[[dict, dict], bool]  # (event, the opening event)


def _designing(iteration: int) -> StopPoint:  # every slot's first Designer call is in flight
    return StopPoint(
        f"design@{iteration}", iteration,
        lambda e: e.get("event") == "iteration_started" and e.get("iteration") == iteration,
        lambda e, opened: (e.get("event") == "llm_call" and e.get("role") == "designer"
                           and e.get("iteration") == iteration and e.get("slot") == opened["slot"]),
    )


def _reflecting(iteration: int) -> StopPoint:  # the scored slot's Reflector call is in flight
    return StopPoint(
        f"reflection@{iteration}", iteration,
        lambda e: (e.get("event") == "evaluation" and e.get("phase") == "search"
                   and e.get("iteration") == iteration),
        lambda e, opened: (e.get("event") == "llm_call" and e.get("role") == "reflector"
                           and e.get("iteration") == iteration and e.get("slot") == opened["slot"]),
    )


def _wait_exit(proc: subprocess.Popen, timeout_s: float, what: str, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the search did not exit within {timeout_s:g} s of {what}; "
                             f"log tail: {log.read_text()[-1500:]}") from None


def _wait_for_line(proc: subprocess.Popen, log: Path, line: str, offset: int) -> None:
    """Poll ``log`` (after byte ``offset``) until ``line`` appears; fail if the search exits."""
    deadline = time.monotonic() + WIND_DOWN_S
    while line.encode() not in log.read_bytes()[offset:]:
        assert proc.poll() is None, f"the search exited before printing {line!r}"
        assert time.monotonic() < deadline, f"no {line!r} within {WIND_DOWN_S:g} s"
        time.sleep(0.005)


def _send(proc: subprocess.Popen, sig: signal.Signals) -> None:
    """Ctrl-C goes to the terminal's whole foreground group; ``kill`` sends SIGTERM to one pid."""
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)


def _interrupt(proc: subprocess.Popen, run_dir: Path, log: Path, point: StopPoint,
               signals: tuple[signal.Signals, ...]) -> None:
    """Send ``signals`` at ``point`` and check how the search stopped (one signal or two)."""
    events_path = run_dir / "events.jsonl"
    offset, log_offset = file_size(events_path), file_size(log)
    events = wait_for_event(proc, events_path, point.opens, offset=offset, timeout_s=120)
    opened = next(e for e in events if point.opens(e))
    signalled_at = time.time()
    _send(proc, signals[0])
    if len(signals) == 2:
        _wait_for_line(proc, log, STOPPING_LINE, log_offset)  # the first one was taken
        children = descendants(proc.pid)  # the sandbox zygote and worker
        _send(proc, signals[1])
        assert _wait_exit(proc, AT_ONCE_S, "the second signal", log) == 130
        # Stopped before the step could end (a step takes over two LLM latencies here).
        ended = [e["event"] for e in events_after(events_path, offset)
                 if e["event"] in ("population_updated", "run_finished")]
        assert not ended, f"{point.phase}: the second signal waited for the step to end ({ended})"
        assert f"--resume {run_dir}" in log.read_text()[log_offset:]
        assert wait_until_gone(children) == {}, "sandbox processes outlived the stopped search"
        return
    assert _wait_exit(proc, WIND_DOWN_S, "the first signal", log) == 130
    assert STOPPING_LINE in log.read_text()[log_offset:]
    after = events_after(events_path, offset)
    closing = [e for e in after if point.closes(e, opened)]
    # The call was still running when the signal came, and the step was then finished and saved.
    assert closing, f"{point.phase}: the call in flight was not finished and recorded"
    assert min(e["time"] for e in closing) >= signalled_at, \
        f"{point.phase}: the signal landed after the call in flight returned"
    finished = [e for e in after if e["event"] == "run_finished"]
    assert [e["reason"] for e in finished] == ["interrupted"]
    assert [e["iteration"] for e in after if e["event"] == "population_updated"][-1:] == \
        [point.iteration], f"{point.phase}: the step in progress was not finished"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted"
    assert summary["iterations"] == point.iteration


def _check_like_unbroken(run_dir: Path, unbroken_dir: Path) -> None:
    summary, population, events = read_results(run_dir)
    assert summary["iterations"] == ITERATIONS and summary["stop_reason"] == "iterations"
    # Every step applied exactly once, and no architecture added to the population twice.
    updates = [e for e in events if e["event"] == "population_updated" and e["iteration"] > 0]
    assert [e["iteration"] for e in updates] == list(range(1, ITERATIONS + 1))
    added = Counter(arch for e in updates for arch in e["added"])
    assert not added or max(added.values()) == 1, added.most_common(3)
    assert len({m["canonical"] for m in population}) == len(population)
    assert_like_unbroken(run_dir, unbroken_dir, all_calls_recorded=False)


SIGINT, SIGTERM = signal.SIGINT, signal.SIGTERM
SCENARIOS = {
    # One branch at a time: Ctrl-C while designing, SIGTERM while reflecting.
    "sequential": (1, [(_designing(2), (SIGINT,)), (_reflecting(3), (SIGTERM,))]),
    # Two branches in LangGraph threads: the case where leaving the stream early applied a child
    # twice on resume; then a second signal during the wind-down, which must stop at once.
    "concurrent": (2, [(_reflecting(2), (SIGINT,)), (_designing(3), (SIGTERM, SIGINT))]),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_signal_mid_step_then_resume_ends_like_an_unbroken_run(
    scenario: str, tmp_path: Path, start: Callable[[list[str], Path], subprocess.Popen]
) -> None:
    concurrency, stops = SCENARIOS[scenario]
    model = repeating_script(tmp_path / "script.json", LATENCY_S)
    # The reference run goes alongside the interrupted one: most of the time is process start-up.
    unbroken_dir = tmp_path / "unbroken"
    unbroken = start(search_argv(model, unbroken_dir, ITERATIONS, concurrency), tmp_path / "unbroken.log")

    run_dir, log = tmp_path / "interrupted", tmp_path / "search.log"
    argv = search_argv(model, run_dir, ITERATIONS, concurrency)
    for point, signals in stops:
        _interrupt(start(argv, log), run_dir, log, point, signals)
        argv = resume_argv(run_dir)
    final = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert unbroken.wait(timeout=180) == 0, (tmp_path / "unbroken.log").read_text()[-2000:]
    _check_like_unbroken(run_dir, unbroken_dir)
