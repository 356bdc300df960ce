"""Fault injection for whole searches: every fault either leaves the run going (retried, and
counted in summary.json / events.jsonl) or stops it with one clear line and a run directory that
``--resume`` continues; nothing already paid for (LLM replies, scores) is lost or paid again.

Run: .venv/bin/python -m pytest -q tests/test_faults.py

The searches are real (nb201, ``--proxy params``, sandboxed workers) and run in-process through
``graphs.cli.main``; the model is an OpenAI-compatible stub server on 127.0.0.1
(``tests/openai_stub.py``). "Paid again" is proved by effect: the stub logs every chat request,
and a wrapper around ``WorkerProcess.submit`` logs every candidate sent to a sandbox worker.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

import graphs.trace
import tools.files
from agents.llm_cache import LLMCache
from graphs.cli import main
from tests.openai_stub import DROP, RawBody, StubServer, completion, error_body, search_answer
from tools.worker_process import WorkerProcess

POPULATION = 3
ITERATIONS = 2


def search_argv(url: str, run_dir: Path, *extra: str) -> list[str]:
    model = f"openai-compatible:{url}:m"
    return ["--designer-model", model, "--reflector-model", model, "--space", "nb201",
            "--proxy", "params", "--population", str(POPULATION), "--iterations", str(ITERATIONS),
            "--batch-size", "8", "--seed", "1", "--eval-timeout", "60", "--plain",
            "--output", str(run_dir), *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run the CLI in-process; return its exit code and its stderr (stdout is the trace)."""
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(err: str, *fragments: str) -> None:
    line = err.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in line, err
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@pytest.fixture
def scored(monkeypatch) -> list[str]:
    """Every architecture handed to a sandbox worker, in order (the evaluator runs in-process)."""
    archs: list[str] = []
    monkeypatch.setattr(WorkerProcess, "submit", _recording_submit(archs))
    return archs


def _recording_submit(archs: list[str]):
    real_submit = WorkerProcess.submit

    def submit(self: WorkerProcess, task: dict) -> None:
        archs.append(task["arch"])
        real_submit(self, task)

    return submit


# --- 1 and 2. the LLM endpoint misbehaves; a sandbox worker dies -------------------------------

CUT_BODY = RawBody(json.dumps(completion('{"edge": "1<-0", "op": "none", "rationale": "x"}'))
                   .encode()[:70])  # HTTP 200, Content-Length right, the JSON stops mid-object

#: Each fault strikes one chat request and the request after it (its retry) is answered well, so
#: the 6 LLM calls of iterations 1-3 (Designer, Reflector, Designer, ...) each meet one fault.
TRANSIENT_FAULTS = {
    "rate_limit_429": (0, (429, error_body("slow down", "rate_limit_error"))),
    "server_error_500": (2, (500, error_body("boom", "server_error"))),
    "timeout": (4, (200, completion("{}"), 4.0)),  # answers after --llm-timeout 1 gave up
    "dropped_connection": (6, (200, DROP)),
    "truncated_json_body": (8, (200, CUT_BODY)),
    "empty_message": (10, (200, completion(""))),
}
#: From chat request 12 on (iteration 4) the endpoint is down for good: 429 on every request.
OUTAGE = (429, error_body("slow down", "rate_limit_error"), 0.0, {"retry-after": "0"})
FAULT_ITERATIONS = 4


def _faults_then_outage(body: dict, n: int) -> tuple:
    if n >= 2 * len(TRANSIENT_FAULTS):
        return OUTAGE
    return dict(TRANSIENT_FAULTS.values()).get(n) or search_answer(body, n)


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory):
    """One search (to save minutes of sandbox start-up) in which every LLM call of iterations 1-3
    meets a different transient fault, the endpoint is down for all of iteration 4, and the
    sandbox worker is SIGKILLed with the first child of iteration 1 in its pipe."""
    server = StubServer(answer=_faults_then_outage)
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    scored: list[str] = []
    killed: list[str] = []
    counting_submit = _recording_submit(scored)

    def submit_then_kill(self: WorkerProcess, task: dict) -> None:
        counting_submit(self, task)
        if len(scored) == POPULATION + 1:  # the first candidate of the search proper
            assert self.pid is not None, "the worker should be up after the initial population"
            os.kill(self.pid, signal.SIGKILL)  # the task is in its pipe: no reply will come
            killed.append(task["arch"])

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(WorkerProcess, "submit", submit_then_kill)
            code = main(search_argv(server.url, run_dir, "--llm-timeout", "1", "--max-retries",
                                    "1", "--iterations", str(FAULT_ITERATIONS)))
        yield {"code": code, "run_dir": run_dir, "server": server, "killed": killed,
               "summary": json.loads((run_dir / "summary.json").read_text()),
               "events": read_jsonl(run_dir / "events.jsonl")}
    finally:
        server.close()


@pytest.mark.slow
def test_llm_and_worker_faults_leave_the_run_going_and_counted(faulted_run):
    assert faulted_run["code"] == 0
    summary = faulted_run["summary"]
    assert summary["iterations"] == FAULT_ITERATIONS and summary["stop_reason"] == "iterations"
    # Iteration 4: 2 Designer attempts (--max-retries 1) of 4 requests each, then a random
    # mutation; the Reflector's 4 requests fail too. Iterations 1-3: one retry per call.
    assert summary["invalid_proposals"] == 2 and summary["fallbacks"] == 1
    usage = summary["llm_usage"]
    assert (usage["designer"]["retries"], usage["designer"]["failures"]) == (3 + 6, 2), usage
    assert (usage["reflector"]["retries"], usage["reflector"]["failures"]) == (3 + 3, 1), usage
    assert faulted_run["server"].chat_requests == 2 * len(TRANSIENT_FAULTS) + 12
    with LLMCache(faulted_run["run_dir"] / "llm_cache.sqlite") as cache:  # failures cache nothing
        assert len(cache) == len(TRANSIENT_FAULTS)
    finished = faulted_run["events"][-1]
    assert finished["event"] == "run_finished" and finished["summary"]["llm_usage"] == usage


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_llm_fault_is_retried_with_the_same_request(fault, faulted_run):
    index = TRANSIENT_FAULTS[fault][0]
    bodies = faulted_run["server"].chat_bodies()
    assert bodies[index + 1]["messages"] == bodies[index]["messages"]
    calls = [e for e in faulted_run["events"] if e["event"] == "llm_call"]
    call = calls[index // 2]
    assert call["ok"] and not call["cached"] and call["retries"] == 1, call


@pytest.mark.slow
def test_llm_endpoint_down_falls_back_and_every_failure_is_in_the_events(faulted_run):
    events = [e for e in faulted_run["events"] if e.get("iteration") == FAULT_ITERATIONS]
    failed = [e for e in events if e["event"] == "llm_call" and not e["ok"]]
    assert [e["role"] for e in failed] == ["designer", "designer", "reflector"]
    assert all("rate_limit" in e["error"] and e["retries"] is None for e in failed)
    assert [e["ok"] for e in events if e["event"] == "reflection"] == [False]
    proposals = [(e["ok"], e["fallback"]) for e in events if e["event"] == "proposal"]
    assert proposals == [(False, False), (False, False), (True, True)]
    scored = [e for e in events if e["event"] == "evaluation"]
    assert len(scored) == 1 and scored[0]["ok"]  # the random mutation was still evaluated


@pytest.mark.slow
def test_worker_killed_mid_candidate_is_typed_and_the_search_goes_on(faulted_run):
    killed, events = faulted_run["killed"], faulted_run["events"]
    assert len(killed) == 1
    evaluations = [e for e in events if e["event"] == "evaluation"]
    crashed = [e for e in evaluations if e["arch"] == killed[0]]
    assert len(crashed) == 1 and crashed[0]["iteration"] == 1 and not crashed[0]["ok"]
    assert crashed[0]["error"]["kind"] == "crashed" and "SIGKILL" in crashed[0]["error"]["message"]
    later = [e for e in evaluations if e["phase"] == "search" and e["iteration"] > 1]
    assert len(later) == FAULT_ITERATIONS - 1 and all(e["ok"] for e in later)  # a fresh worker
    summary = faulted_run["summary"]
    assert summary["evaluations"] == POPULATION + FAULT_ITERATIONS  # the crash counts as tried
    population = json.loads((faulted_run["run_dir"] / "population.json").read_text())
    assert killed[0] not in {m["arch"] for m in population}


# --- 3. the run directory stops taking writes: one run dir, a fault per session -----------------


def _full_disk_for(name: str):
    """``open`` that writes ``name`` to /dev/full: the kernel's real ENOSPC on flush."""

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name == name and "w" in mode:
            return builtins.open("/dev/full", mode, *args, **kwargs)
        return builtins.open(path, mode, *args, **kwargs)

    return fake_open


def _read_only_for(name: str):
    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name == name and "w" in mode:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return builtins.open(path, mode, *args, **kwargs)

    return fake_open


def _checkpoints_full(patch: pytest.MonkeyPatch, server: StubServer) -> None:
    real_put = SqliteSaver.put

    def put(self, *args, **kwargs):
        if server.chat_requests >= 2:  # a Designer and a Reflector reply are paid for
            raise sqlite3.OperationalError("database or disk is full")
        return real_put(self, *args, **kwargs)

    patch.setattr(SqliteSaver, "put", put)


def _event_log_full(patch: pytest.MonkeyPatch, struck: list[dict]) -> None:
    """From the first freshly scored child on, events.jsonl sits on a full disk (real ENOSPC)."""
    real_append = graphs.trace._append

    def append(f, record: dict) -> None:
        fresh = record.get("event") == "evaluation" and not record.get("cached")
        if fresh and record.get("phase") == "search" and not struck:
            struck.append(record)
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, f.fileno())
            os.close(full)
        real_append(f, record)

    patch.setattr(graphs.trace, "_append", append)


#: session name -> (fault installer, text the one-line error must hold); then a clean resume.
STORAGE_SESSIONS = {
    "checkpoints_db_full": "database or disk is full",
    "event_log_disk_full": "No space left on device",
    "summary_disk_full": "No space left on device",
    "report_read_only": "Read-only file system",
    "plot_disk_full": "No space left on device",
}


@pytest.fixture(scope="module")
def storage_chain(tmp_path_factory):
    """A run hit by a different storage fault in each session, resumed after each, then resumed
    once more with the disk fine. Records what every session asked the model and scored."""
    server = StubServer(answer=search_answer)
    run_dir = tmp_path_factory.mktemp("storage") / "run"
    sessions: dict[str, dict] = {}
    struck: list[dict] = []
    try:
        for name in [*STORAGE_SESSIONS, "clean"]:
            asked_before = server.chat_requests
            scored: list[str] = []
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(WorkerProcess, "submit", _recording_submit(scored))
                if name == "checkpoints_db_full":
                    _checkpoints_full(patch, server)
                elif name == "event_log_disk_full":
                    _event_log_full(patch, struck)
                elif name == "summary_disk_full":
                    patch.setattr(tools.files, "open", _full_disk_for(".summary.json.tmp"),
                                  raising=False)
                elif name == "report_read_only":
                    patch.setattr(tools.files, "open", _read_only_for(".report.md.tmp"),
                                  raising=False)
                elif name == "plot_disk_full":
                    patch.setattr(tools.files, "open", _full_disk_for(".progress.png.tmp"),
                                  raising=False)
                argv = (search_argv(server.url, run_dir) if not sessions
                        else ["--resume", str(run_dir), "--plain"])
                stderr = io.StringIO()
                with contextlib.redirect_stderr(stderr):
                    code = main(argv)
            sessions[name] = {"code": code, "err": stderr.getvalue(), "scored": scored,
                              "asked": [json.dumps(b["messages"]) + str(b.get("seed"))
                                        for b in server.chat_bodies()[asked_before:]]}
        yield {"run_dir": run_dir, "sessions": sessions, "struck": struck, "server": server}
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.parametrize("session", list(STORAGE_SESSIONS))
def test_storage_fault_stops_with_one_line_and_a_resumable_state(session, storage_chain):
    outcome, run_dir = storage_chain["sessions"][session], storage_chain["run_dir"]
    assert outcome["code"] == 1, outcome["err"]
    assert_one_line_error(outcome["err"], str(run_dir), STORAGE_SESSIONS[session],
                          f"python -m graphs.search --resume {run_dir}")


@pytest.mark.slow
def test_resume_after_storage_faults_finishes_paying_nothing_twice(storage_chain):
    sessions, run_dir = storage_chain["sessions"], storage_chain["run_dir"]
    assert sessions["clean"]["code"] == 0, sessions["clean"]["err"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == ITERATIONS and summary["stop_reason"] == "iterations"
    for name in ("population.json", "progress.png", "report.md"):
        assert (run_dir / name).stat().st_size > 0, name
    asked = [request for s in sessions.values() for request in s["asked"]]
    assert len(asked) == len(set(asked)), "a paid LLM request was sent again"
    assert len(asked) == 2 * ITERATIONS
    scored = [arch for s in sessions.values() for arch in s["scored"]]
    assert len(scored) == len(set(scored)) == POPULATION + ITERATIONS, scored
    # Once the search was complete, resuming only rewrote the reports.
    for name in ("report_read_only", "plot_disk_full", "clean"):
        assert sessions[name]["asked"] == [] and sessions[name]["scored"] == [], name


@pytest.mark.slow
def test_a_full_event_log_ends_the_run_after_its_iteration(storage_chain):
    """The disk fills as a fresh child's evaluation is logged: the iteration still completes into
    the checkpoints (never abandoned mid-step), so no later session redoes any of it."""
    struck, sessions = storage_chain["struck"], storage_chain["sessions"]
    assert struck, "the event log never filled up"
    child, iteration = struck[0]["arch"], struck[0]["iteration"]
    assert child in sessions["event_log_disk_full"]["scored"]
    events = read_jsonl(storage_chain["run_dir"] / "events.jsonl")
    assert not [e for e in events if e["event"] == "evaluation" and e["arch"] == child]
    starts = [e for e in events if e["event"] == "run_started"]
    assert len(starts) == len(STORAGE_SESSIONS) + 1
    assert starts[2]["iteration"] == iteration  # the next session began after that iteration
    summary = json.loads((storage_chain["run_dir"] / "summary.json").read_text())
    assert summary["evaluations"] == POPULATION + ITERATIONS  # the unlogged child is counted


# --- 4. unreadable state at --resume ------------------------------------------------------------


@pytest.fixture(scope="module")
def module_llm(storage_chain) -> StubServer:
    return storage_chain["server"]


@pytest.fixture(scope="module")
def finished_run(storage_chain) -> Path:
    """The storage chain's run, finished in the end (copied before each corruption)."""
    assert storage_chain["sessions"]["clean"]["code"] == 0
    return storage_chain["run_dir"]


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short: the header promises more pages


def _execute(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(sql, args)
    finally:
        db.close()


def _foreign(path: Path) -> None:
    path.unlink()
    _execute(path, "CREATE TABLE users (name TEXT)")


def _older_langgraph(path: Path) -> None:
    path.unlink()  # langgraph-checkpoint-sqlite 1.x: thread_ts, no namespaces
    _execute(path, "CREATE TABLE checkpoints (thread_id TEXT NOT NULL, thread_ts TEXT NOT NULL, "
                   "parent_ts TEXT, checkpoint BLOB, metadata BLOB, "
                   "PRIMARY KEY (thread_id, thread_ts))")


def _undecodable(path: Path) -> None:
    _execute(path, "UPDATE checkpoints SET checkpoint = ?", b"\xc1not msgpack")


def _rows(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


CORRUPTIONS = {
    "checkpoints_garbage": ("checkpoints.sqlite", _garbage, "new --output"),
    "checkpoints_truncated": ("checkpoints.sqlite", _truncated, "new --output"),
    "checkpoints_foreign": ("checkpoints.sqlite", _foreign, "not an RZ-NAS checkpoint file"),
    "checkpoints_older_format": ("checkpoints.sqlite", _older_langgraph, "older checkpoint format"),
    "checkpoints_undecodable": ("checkpoints.sqlite", _undecodable, "cannot read"),
    "scores_garbage": ("scores.sqlite", _garbage, "move it aside and resume"),
    "llm_cache_garbage": ("llm_cache.sqlite", _garbage, "move it aside and resume"),
}


@pytest.mark.slow  # each case is fast; the finished run they corrupt is not
@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_resume_refuses_unreadable_state_in_one_line(case, finished_run, tmp_path, capsys):
    name, corrupt, fix = CORRUPTIONS[case]
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    for stale in run_dir.glob(f"{name}-*"):  # a WAL beside a rewritten file would be replayed
        stale.unlink()
    corrupt(run_dir / name)
    broken = (run_dir / name).read_bytes()
    others = sorted({"checkpoints.sqlite", "scores.sqlite", "llm_cache.sqlite"} - {name})
    saved = {other: _rows(run_dir / other) for other in others}
    code, err = run_cli(["--resume", str(run_dir), "--iterations", "3", "--plain"], capsys)
    assert code == 2
    assert_one_line_error(err, str(run_dir / name), fix)
    assert (run_dir / name).read_bytes() == broken  # left as it was, for the user to inspect
    assert {other: _rows(run_dir / other) for other in others} == saved  # nothing paid for lost


@pytest.mark.slow
def test_fix_for_lost_checkpoints_replays_the_caches_without_paying(module_llm, finished_run,
                                                                    scored, tmp_path, capsys):
    """What the message for a broken checkpoint file says to do costs no request and no score."""
    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    _garbage(broken / "checkpoints.sqlite")
    code, err = run_cli(["--resume", str(broken), "--plain"], capsys)
    assert code == 2
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("scores.sqlite", "llm_cache.sqlite"):
        assert str(broken / name) in err
        for path in broken.glob(f"{name}*"):  # the file and its WAL, as `cp` of a live run would
            shutil.copy(path, fresh / path.name)
    paid = module_llm.chat_requests
    code, err = run_cli(search_argv(module_llm.url, fresh), capsys)
    assert code == 0, err
    assert module_llm.chat_requests == paid and scored == []
    original = json.loads((finished_run / "summary.json").read_text())
    replayed = json.loads((fresh / "summary.json").read_text())
    assert replayed["best"] == original["best"] and replayed["iterations"] == ITERATIONS
