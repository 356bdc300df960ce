"""TraceWriter: a recorded event stream rendered live and plain, and recorded to JSONL files."""

from __future__ import annotations

import copy
import json
import re
import threading
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from graphs.trace import TraceWriter, highlight_changes, read_events

SAMPLE = Path(__file__).parent / "fixtures" / "events_sample.jsonl"
CURSOR_UP = "\x1b[1A"  # rich's Live moves the cursor up to redraw; plain output never does
SECRET = "sk-proj-Zx81kQ2mLw7vB4nR0tY5uH3jC6dE9fGa"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.aGVsbG8td29ybGQ"
SECOND_BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|"
               "+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")


def plain_text(out: str) -> str:
    """Drop ANSI styling and cursor codes, keeping the text."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)


def sample() -> list[dict]:
    return read_events(SAMPLE)


def terminal() -> Console:
    return Console(file=StringIO(), force_terminal=True, width=120)


def replay(run_dir: Path, events: list[dict], mode: str, console: Console | None = None) -> str:
    """Feed ``events`` through a TraceWriter in a thread; fail, rather than hang, on a deadlock."""
    console = console or terminal()

    def run() -> None:
        with TraceWriter(run_dir, mode=mode, console=console) as trace:
            for event in events:
                trace.emit(copy.deepcopy(event))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "TraceWriter hung (lock-order deadlock with rich's Live?)"
    return console.file.getvalue()


def test_sample_follows_the_event_contract():
    events = sample()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert sum(1 for e in events if e["event"] == "evaluation" and e["phase"] == "init") == 8
    assert max(e["iteration"] for e in events) == 3
    proposals = [e for e in events if e["event"] == "proposal"]
    assert any(not p["ok"] for p in proposals) and any(p["fallback"] for p in proposals)
    assert any(e["event"] == "evaluation" and not e["ok"] for e in events)
    assert all("time" in e for e in events)


def test_plain_mode_prints_one_line_per_event_without_cursor_moves(tmp_path):
    events = sample()
    out = replay(tmp_path, events, "plain", Console(file=StringIO(), width=80))
    lines = out.splitlines()
    assert len(lines) == len(events)  # long lines are not wrapped: one event, one log line
    assert "\x1b" not in out  # a log file gets no colour codes or cursor movement
    assert lines[0].startswith("run 20260101-100000-nb201-synflow started")
    assert sum(line.startswith("[init] eval ok") for line in lines) == 8
    assert "[it 1/3] proposal REJECTED (attempt 1): edge 1<-0 already uses nor_conv_1x1" in out
    assert "(edge 1<-0: nor_conv_1x1 -> nor_conv_3x3)" in out
    assert "score 43.62 (+5.15 vs parent)" in out
    assert "[it 2/3] proposal FALLBACK (random mutation)" in out
    assert "score 26.93 (-6.48 vs parent)" in out
    assert "[it 3/3] eval FAILED" in out and "over_budget: 1,234,826 parameters" in out
    assert "next: Keep 3<-2 as nor_conv_1x1" in out
    assert "run finished (iterations): best 43.62" in out
    assert "FAKE" not in out


def test_plain_mode_on_a_terminal_uses_colour_but_no_cursor_moves(tmp_path):
    out = replay(tmp_path, sample(), "plain")
    assert "\x1b[" in out and CURSOR_UP not in out
    assert "[it 3/3]" in out


def test_live_view_shows_progress_change_reflection_and_best(tmp_path):
    raw = replay(tmp_path, sample(), "live")
    assert CURSOR_UP in raw  # it really redrew in place
    out = plain_text(raw)
    assert "iteration 3/3" in out and "finished (iterations)" in out
    assert "edge 3<-2: nor_conv_1x1 -> nor_conv_3x3" in out
    assert "Edge 3<-2 went from nor_conv_1x1 to nor_conv_3x3." in out
    assert "best 43.62" in out and "truth of best 93.46" in out
    assert "tokens 15,096" in out and "invalid 3" in out and "fallbacks 1" in out
    assert "openai:gpt-4o-mini (designer@v1)" in out
    # The top of the population fits a 25-line terminal together with everything else.
    assert f"2  {SECOND_BEST}" in out
    # Lines worth keeping scroll above the view: one per population update.
    assert out.count("[it 2/3] population 8: best 43.62") == 1
    assert "FAKE" not in out


def test_live_view_mid_run_shows_rejections_fallback_and_delta(tmp_path):
    events = sample()
    end = next(i for i, e in enumerate(events)
               if e["event"] == "evaluation" and e["iteration"] == 2)
    out = plain_text(replay(tmp_path, events[: end + 1], "live"))
    frame = out[out.rindex("iteration 2/3") :]  # the last frame drawn
    assert "ETA" in frame and "FALLBACK random one-operation mutation" in frame
    assert "#1: the reply is not JSON" in frame and "#2: LLM call timed out" in frame
    assert "26.93 (-6.48)" in frame and "edge 2<-1: avg_pool_3x3 -> none" in frame
    assert "invalid 3" in frame and "fallbacks 1" in frame  # counted before the update arrives


@pytest.mark.parametrize("mode", ["live", "plain"])
def test_fake_model_gets_a_banner(tmp_path, mode):
    events = sample()
    events[0]["models"] = {"designer": "fake:script.json (FAKE)", "reflector": "fake:x.json"}
    out = plain_text(replay(tmp_path, events, mode))
    assert "FAKE MODEL" in out


def test_live_degrades_to_plain_when_not_a_terminal(tmp_path):
    console = Console(file=StringIO(), width=120)
    with TraceWriter(tmp_path, mode="live", console=console) as trace:
        assert trace.mode == "plain"
        for event in sample()[:12]:
            trace.emit(event)
    out = console.file.getvalue()
    assert len(out.splitlines()) == 12 and "\x1b" not in out


def test_events_round_trip_and_transcripts_go_to_messages(tmp_path):
    events = sample()
    replay(tmp_path, events, "quiet")
    recorded = read_events(tmp_path / "events.jsonl")
    stripped = [{k: v for k, v in e.items() if k not in ("messages", "response")} for e in events]
    assert recorded == stripped
    assert not any("messages" in e or "response" in e for e in recorded)
    calls = [e for e in events if e["event"] == "llm_call"]
    transcripts = read_events(tmp_path / "messages.jsonl")
    assert len(transcripts) == len(calls) == 8
    for call, t in zip(calls, transcripts):
        assert t["messages"] == call["messages"] and t["response"] == call["response"]
        keys = ("time", "role", "model", "iteration", "attempt")
        assert {k: t[k] for k in keys} == {k: call[k] for k in keys}


def test_quiet_mode_prints_nothing_and_time_is_added(tmp_path):
    console = terminal()
    with TraceWriter(tmp_path, mode="quiet", console=console) as trace:
        trace.emit({"event": "iteration_started", "iteration": 1, "slot": 0,
                    "parent": {"arch": "a", "score": 1.0}})
    assert console.file.getvalue() == ""
    (event,) = read_events(tmp_path / "events.jsonl")
    assert isinstance(event["time"], float) and event["iteration"] == 1


def test_secrets_are_redacted_in_files_and_on_the_console(tmp_path, monkeypatch):
    env_secret = "hf9Q2xLmN4pR7sT1vW3yZ5bC"
    monkeypatch.setenv("HF_TOKEN", env_secret)
    events = sample()
    call = next(e for e in events if e["event"] == "llm_call")
    call["messages"][1]["content"] += f" my key is {SECRET}"
    call["response"] = f'{{"api_key": "{SECRET}"}}'
    call["error"] = f"401 with header Authorization: {BEARER}"
    reflection = next(e for e in events if e["event"] == "reflection")
    reflection["why"] = f"The endpoint refused api_key=supersecretvalue123 and {env_secret}."
    proposal = next(e for e in events if e["event"] == "proposal" and e["ok"])
    proposal["rationale"] = f"use {SECRET}"
    for mode in ("plain", "live"):
        run_dir = tmp_path / mode
        out = plain_text(replay(run_dir, events, mode))
        files = (run_dir / "events.jsonl").read_text() + (run_dir / "messages.jsonl").read_text()
        for text in (out, files):
            for secret in (SECRET, "eyJhbGciOiJIUzI1NiJ9", "supersecretvalue123", env_secret):
                assert secret not in text, (mode, secret)
        assert "[REDACTED]" in files and "[REDACTED]" in out
        assert "Bearer [REDACTED]" in files
    console = terminal()
    with TraceWriter(tmp_path / "cli", mode="quiet", console=console) as trace:
        trace.print_line(f"model openai:gpt-4o, key {SECRET}")
    assert SECRET not in console.file.getvalue() and "[REDACTED]" in console.file.getvalue()


def test_read_events_survives_a_truncated_last_line_and_resume_appends_cleanly(tmp_path):
    events = sample()
    with TraceWriter(tmp_path, mode="quiet") as trace:
        for event in events[:10]:
            trace.emit(event)
        # Lines are on disk as soon as they are emitted (another process may be reading).
        assert len(read_events(tmp_path / "events.jsonl")) == 10
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write(json.dumps(events[10])[:37])  # what a kill -9 mid-write leaves
    assert read_events(tmp_path / "events.jsonl") == events[:10]
    with TraceWriter(tmp_path, mode="quiet") as trace:  # a resumed run appends
        for event in events[10:]:
            trace.emit(event)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the partial line was cut, not glued on
    recorded = read_events(tmp_path / "events.jsonl")
    assert [e["event"] for e in recorded] == [e["event"] for e in events]
    assert read_events(tmp_path / "missing.jsonl") == []


def test_changed_tokens_are_highlighted():
    parent = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|none~1|nor_conv_1x1~2|"
    child = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|none~1|nor_conv_3x3~2|"
    text = highlight_changes(parent, child)
    assert text.plain == child
    assert [text.plain[s.start : s.end] for s in text.spans] == ["nor_conv_3x3~2"]
    assert highlight_changes(None, child).spans == []


def test_concurrent_slots_are_tagged_and_odd_events_do_not_break_rendering(tmp_path):
    events = sample()[:1]
    events[0]["config"]["concurrency"] = 2
    events += [
        {"event": "iteration_started", "iteration": 1, "slot": 1,
         "parent": {"arch": "|a~0|", "score": None}},
        {"event": "evaluation", "phase": "search", "iteration": 1, "slot": 1, "ok": True,
         "arch": "|b~0|", "score": "not-a-number", "seconds": None},
        {"event": "something_new", "iteration": 1},
        # A torch-code child is a whole program, and LLM text may carry terminal escapes.
        {"event": "proposal", "iteration": 1, "slot": 0, "ok": True, "fallback": False,
         "child": "import torch\nclass Net(nn.Module):\n    pass\n" * 50,
         "rationale": "\x1b[2Jcleared your screen", "changes": ["line 3: pass -> return x"]},
    ]
    out = replay(tmp_path, events, "plain", Console(file=StringIO(), width=200))
    assert "[it 1/3 s1] parent |a~0|  score n/a" in out
    assert "[it 1/3] something_new" in out
    assert len(out.splitlines()) == len(events)
    assert "import torch class Net(nn.Module): pass" in out and "\x1b" not in out
    assert len(out.splitlines()[-1]) < 600
    assert len(read_events(tmp_path / "events.jsonl")) == len(events)


def test_unknown_mode_and_emit_after_close_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown trace mode 'fancy'"):
        TraceWriter(tmp_path, mode="fancy")
    console = terminal()
    trace = TraceWriter(tmp_path, mode="live", console=console)
    trace.emit(sample()[0])
    trace.close()
    trace.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        trace.emit({"event": "run_finished"})
    trace.print_line("best: |none~0|")  # the CLI prints its summary after closing the trace
    assert plain_text(console.file.getvalue()).rstrip().endswith("best: |none~0|")
