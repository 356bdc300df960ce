"""``--fork RUN_DIR@ITERATION``: start a new run from the state another run had after an iteration.

The state comes from the source run's LangGraph checkpoint history (every step is checkpointed),
so a fork can start from any completed iteration, not only the last one. The new run gets copies of
the source's score and LLM caches: a fork with unchanged settings replays the source's calls for
free, and one with another model or prompt pays only for the calls that differ. Both runs record
the lineage in ``lineage.json``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.files import copy_sqlite, write_atomic

LINEAGE_FILE = "lineage.json"
#: The state a fork started from, kept so a bundle of the fork can replay it (graphs.bundle).
FORK_STATE_FILE = "fork_state.json"
#: State that a fork takes over; per-step scratch (children, a pending pause) starts empty.
FORKED_KEYS = ("population", "iteration", "reflections", "history", "progress", "evaluated",
               "invalid_proposals", "fallbacks", "evaluations", "cache_hits", "tokens",
               "cost_usd", "llm_calls", "pareto", "calibration")


class ForkError(ValueError):
    """The fork point does not exist or cannot be read; the message names the fix."""


@dataclass(frozen=True)
class ForkPoint:
    """Where a fork starts: a run directory and a completed iteration of it."""

    run_dir: Path
    iteration: int

    def __str__(self) -> str:
        return f"{self.run_dir}@{self.iteration}"


def parse_fork(text: str) -> ForkPoint:
    """Parse ``RUN_DIR@ITERATION`` (a bare RUN_DIR forks from its last iteration: -1)."""
    where, sep, number = text.rpartition("@")
    if not sep:
        return ForkPoint(Path(text), -1)
    try:
        iteration = int(number)
    except ValueError:
        raise ForkError(f"--fork takes RUN_DIR@ITERATION, e.g. runs/my-run@2; got {text!r}") from None
    if iteration < 0:
        raise ForkError(f"--fork iteration must be 0 or more, got {iteration}")
    return ForkPoint(Path(where), iteration)


def forked_state(graph: Any, point: ForkPoint, thread: dict) -> tuple[dict, str]:
    """Return the source's state right after ``point.iteration`` and that checkpoint's id.

    ``graph`` is the search graph compiled with the source run's checkpointer.
    """
    done: dict[int, Any] = {}
    for snapshot in graph.get_state_history(thread):  # newest first
        values = snapshot.values or {}
        if values.get("population") and isinstance(values.get("iteration"), int):
            done[values["iteration"]] = snapshot  # ends as the earliest: right after update
    if not done:
        raise ForkError(f"{point.run_dir} has no completed iteration to fork from")
    iteration = max(done) if point.iteration < 0 else point.iteration
    if iteration not in done:
        raise ForkError(f"{point.run_dir} has no checkpoint after iteration {iteration}; it has "
                        f"iterations {_ranges(sorted(done))}")
    snapshot = done[iteration]
    values = {k: snapshot.values[k] for k in FORKED_KEYS if k in snapshot.values}
    values.update(stop_reason=None, children=[])
    return values, snapshot.config["configurable"]["checkpoint_id"]


def _ranges(numbers: list[int]) -> str:
    return f"{numbers[0]}-{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1)) \
        else ", ".join(map(str, numbers))


def copy_caches(source: Path, target: Path, llm_cache: bool) -> list[str]:
    """Copy the source's score cache (and LLM cache) into ``target``; return what was copied."""
    copied = []
    for name, wanted in (("scores.sqlite", True), ("llm_cache.sqlite", llm_cache)):
        if wanted and (source / name).exists():
            try:
                copy_sqlite(source / name, target / name)
            except sqlite3.DatabaseError as exc:
                raise ForkError(f"cannot copy {source / name} ({exc}); fork without it by moving "
                                "it aside") from None
            copied.append(name)
    return copied


def read_lineage(run_dir: Path) -> dict:
    """Return ``lineage.json`` of a run (empty lineage when it has none or it is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / LINEAGE_FILE).read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    forks = data.get("forks")
    return {"forked_from": data.get("forked_from"), "forks": forks if isinstance(forks, list) else []}


def record_lineage(point: ForkPoint, checkpoint_id: str, target: Path) -> dict:
    """Write the lineage into both runs; return the new run's ``forked_from``."""
    forked_from = {"run_dir": str(point.run_dir), "iteration": point.iteration,
                   "checkpoint_id": checkpoint_id}
    mine = read_lineage(target)
    mine["forked_from"] = forked_from
    write_atomic(target / LINEAGE_FILE, (json.dumps(mine, indent=2) + "\n").encode())
    theirs = read_lineage(point.run_dir)
    theirs["forks"].append({"run_dir": str(target), "iteration": point.iteration,
                            "time": time.time()})
    write_atomic(point.run_dir / LINEAGE_FILE, (json.dumps(theirs, indent=2) + "\n").encode())
    return forked_from


def save_fork_state(run_dir: Path, forked_from: dict, values: dict) -> None:
    """Keep the state a fork started from (plain JSON data), for bundles and replays."""
    data = {"forked_from": forked_from, "values": values}
    write_atomic(Path(run_dir) / FORK_STATE_FILE, (json.dumps(data) + "\n").encode())
