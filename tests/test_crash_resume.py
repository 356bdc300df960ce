"""Crash-and-resume proof: a search SIGKILLed again and again ends where an unbroken one does.

A real ``python -m graphs.search`` subprocess (fake scripted Designer and Reflector, ``--proxy
params``) is killed with ``kill -9`` at points spread over initialisation, design, evaluation and
reflection, and resumed with ``--resume RUN_DIR`` after each kill. Each point is reached by
watching ``events.jsonl`` for the event that opens the phase, never by sleeping; after the kill the
file must not hold the event that would have closed it, so the kill provably landed inside.

Why the fake script gives the same answers in every process: a fake script restarts from its
first reply in each new process, so a script of varied replies would answer a resumed run
differently from an unbroken one. The script here is split by role and each role repeats one
reply (with a latency, so a call is in flight when the kill lands). A reply therefore does not
depend on how many calls a process made before, and the run stays a pure function of the seed:
the Designer's edit yields different children from different parents, rejected edits are retried
and then replaced by the seeded random fallback, and prompts, temperatures and seeds come from
seeded RNGs. Because equal replies would hide a call that is asked twice, the "replayed, not
re-asked" half is proven from the records instead: no request appears twice uncached in
``events.jsonl``, and the LLM cache holds exactly the requests of the unbroken run. To make the
replay itself certain rather than a matter of where a kill lands (a completed step is
checkpointed, so a plain kill seldom leaves an answered call behind), the test also puts the
checkpoints of an earlier kill back before one resume, as a power cut can with SQLite's
``synchronous=NORMAL``: every reply answered since must then come from the cache.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.search_helpers import (
    ROOT,
    Killed,
    assert_like_unbroken,
    call_key,
    events_after,
    file_size,
    read_results,
    resume_argv,
    search_argv,
    sigkill,
    sqlite_rows,
    wait_for_event,
    wait_until_gone,
    repeating_script,
)

#: Seconds per fake LLM call: long enough that a kill lands while the call is in flight.
LATENCY_S = 0.4
ITERATIONS = 6
CHECKPOINT_FILES = ("checkpoints.sqlite", "checkpoints.sqlite-wal", "checkpoints.sqlite-shm")


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: after the ``opens`` event, before the ``closes`` event of one phase."""

    phase: str
    opens: Callable[[dict], bool]
    closes: Callable[[dict], bool]


def _is(event: str, **fields: object) -> Callable[[dict], bool]:
    return lambda e: e.get("event") == event and all(e.get(k) == v for k, v in fields.items())


def _design(iteration: int) -> KillPoint:  # the Designer call is in flight
    return KillPoint(f"design@{iteration}", _is("iteration_started", iteration=iteration),
                     _is("llm_call", role="designer", iteration=iteration))


def _evaluation(iteration: int) -> KillPoint:  # the accepted child is being scored
    return KillPoint(f"evaluation@{iteration}", _is("proposal", iteration=iteration, ok=True),
                     _is("evaluation", phase="search", iteration=iteration))


def _reflection(iteration: int) -> KillPoint:  # the Reflector call is in flight
    return KillPoint(f"reflection@{iteration}",
                     _is("evaluation", phase="search", iteration=iteration),
                     _is("llm_call", role="reflector", iteration=iteration))


INIT = KillPoint("init", _is("run_started"), _is("population_updated", iteration=0))
# Ordered so that few processes pay for starting the sandbox (most of a resume's cost): the
# design@3 one is killed before it scores anything; both evaluation kills hit a warm worker.
KILL_POINTS = [INIT, _evaluation(1), _reflection(2), _design(3), _evaluation(5)]
#: After this kill the checkpoints are saved, and put back after ``ROLLBACK_AFTER``: the steps in
#: between are lost (as a power cut can lose them), so their LLM replies must come from the cache.
SNAPSHOT_AFTER, ROLLBACK_AFTER = "reflection@2", "evaluation@5"


def _kill_at(point: KillPoint, proc: subprocess.Popen, events_path: Path, offset: int) -> Killed:
    """Wait for ``point``'s opening event written after ``offset``, kill, prove where it landed."""
    wait_for_event(proc, events_path, point.opens, offset=offset, timeout_s=90)
    killed = sigkill(proc)
    events = events_after(events_path, offset)
    opened = next(i for i, e in enumerate(events) if point.opens(e))
    late = [e["event"] for e in events[opened:] if point.closes(e)]
    assert not late, f"the kill meant for {point.phase} landed after its end ({late})"
    return killed


def _save_checkpoints(run_dir: Path, into: Path) -> None:
    into.mkdir()
    for name in CHECKPOINT_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, into / name)


def _restore_checkpoints(run_dir: Path, saved: Path) -> None:
    """Put older checkpoints back: as if the steps since were lost (e.g. to a power cut)."""
    for name in CHECKPOINT_FILES:
        (run_dir / name).unlink(missing_ok=True)
        if (saved / name).exists():
            shutil.copy2(saved / name, run_dir / name)


@pytest.mark.slow
def test_repeated_sigkill_and_resume_ends_like_an_unbroken_run(
    tmp_path: Path, start: Callable[[list[str], Path], subprocess.Popen]
) -> None:
    model = repeating_script(tmp_path / "script.json", LATENCY_S)
    log = tmp_path / "search.log"

    # The reference run goes alongside the killed one: most of the time is process start-up.
    unbroken_dir = tmp_path / "unbroken"
    unbroken = start(search_argv(model, unbroken_dir, ITERATIONS), tmp_path / "unbroken.log")

    run_dir = tmp_path / "killed"
    events_path = run_dir / "events.jsonl"
    argv = search_argv(model, run_dir, ITERATIONS)
    killed: list[Killed] = []
    replayable: set[tuple] = set()  # LLM calls answered after the saved checkpoints
    snapshot_offset = rollback_offset = 0
    for point in KILL_POINTS:
        offset = file_size(events_path)
        killed.append(_kill_at(point, start(argv, log), events_path, offset))
        if point.phase == SNAPSHOT_AFTER:
            _save_checkpoints(run_dir, tmp_path / "saved")
            snapshot_offset = file_size(events_path)
        if point.phase == ROLLBACK_AFTER:
            _restore_checkpoints(run_dir, tmp_path / "saved")
            rollback_offset = file_size(events_path)
            replayable = {call_key(e) for e in events_after(events_path, snapshot_offset)
                          if e["event"] == "llm_call" and e["ok"]}
        argv = resume_argv(run_dir)
    final = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert unbroken.wait(timeout=120) == 0, (tmp_path / "unbroken.log").read_text()[-2000:]

    # The sandbox zygote and workers of every killed search noticed and exited, cleaning up.
    orphans = wait_until_gone({pid: t for k in killed for pid, t in k.children.items()})
    assert orphans == {}, f"processes outlived their killed search: {sorted(orphans)}"
    assert [d for k in killed for d in k.scratch_dirs if Path(d).exists()] == []

    assert_like_unbroken(run_dir, unbroken_dir, all_calls_recorded=True)
    summary, _, events = read_results(run_dir)
    assert summary["iterations"] == ITERATIONS
    assert len({e["canonical"] for e in events if e["event"] == "evaluation"}) == \
        summary["evaluations"]
    candidates = "SELECT count(*) FROM candidates"
    assert sqlite_rows(run_dir / "scores.sqlite", candidates) == sqlite_rows(
        unbroken_dir / "scores.sqlite", candidates)

    # After the rollback, what had been answered since the saved checkpoints is replayed.
    after_rollback = [e for e in events_after(events_path, rollback_offset)
                      if e["event"] == "llm_call" and call_key(e) in replayable]
    assert replayable and {call_key(e) for e in after_rollback} == replayable
    assert all(e["cached"] for e in after_rollback), [e for e in after_rollback if not e["cached"]]
