"""``--interactive``: the search pauses after each step (a LangGraph interrupt) for a human.

Scripted standard input drives a real search (nb201, ``--proxy params``, scripted fake models):
hints reach the next Designer prompt, an edited architecture is evaluated as a human proposal,
``s`` stops the run resumably, mistakes are re-asked, and every human action is in the events.

Run: .venv/bin/python -m pytest -q tests/test_steering.py
"""

from __future__ import annotations

import io
import json

import pytest

from graphs.cli import main
from graphs.steering import parse_answer
from tests.search_helpers import read_jsonl, repeating_script

WIDE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _argv(model: str, run_dir, *extra: str) -> list[str]:
    return ["--designer-model", model, "--reflector-model", model, "--proxy", "params",
            "--population", "4", "--batch-size", "8", "--seed", "1", "--output", str(run_dir),
            "--plain", *extra]


def test_answers_parse():
    assert parse_answer("") == ({"action": "accept", "text": ""}, None)
    assert parse_answer("h  use more convolutions ")[0] == {"action": "hint",
                                                            "text": "use more convolutions"}
    assert parse_answer(f"e {WIDE}")[0] == {"action": "edit", "text": WIDE}
    assert parse_answer("STOP")[0]["action"] == "stop"
    assert parse_answer("h")[0] is None and "needs text" in parse_answer("h")[1]
    assert parse_answer("maybe")[0] is None


@pytest.mark.slow
def test_scripted_human_hints_edits_and_stops(tmp_path, monkeypatch, capsys):
    model = repeating_script(tmp_path / "script.json", 0.0)
    run_dir = tmp_path / "run"
    typed = ["h prefer 3x3 convolutions", "what?", "e |not an arch|", f"e {WIDE}", "s"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(typed) + "\n"))
    assert main(_argv(model, run_dir, "--iterations", "6", "--interactive")) == 0
    out = capsys.readouterr().out
    assert "paused after iteration 1" in out and "unknown answer 'what?'" in out
    assert "not a valid architecture" in out

    events = read_jsonl(run_dir / "events.jsonl")
    steers = [(e["iteration"], e["action"], e["text"]) for e in events if e["event"] == "human_steer"]
    assert steers == [(1, "hint", "prefer 3x3 convolutions"), (2, "edit", WIDE), (3, "stop", None)]
    # The hint went into every Designer prompt of the next step, and only there
    prompts = [e for e in read_jsonl(run_dir / "messages.jsonl") if e["role"] == "designer"]
    hinted = {e["iteration"] for e in prompts
              if "prefer 3x3 convolutions" in json.dumps(e["messages"])}
    assert hinted == {2}
    # The edit was evaluated in step 3 as a human proposal, without a Designer call
    human = [e for e in events if e["event"] == "proposal" and e.get("human")]
    assert [(e["iteration"], e["ok"], e["child"]) for e in human] == [(3, True, WIDE)]
    assert not any(e["event"] == "llm_call" and e["role"] == "designer" and e["iteration"] == 3
                   for e in events)
    scored = [e for e in events if e["event"] == "evaluation" and e["iteration"] == 3]
    assert scored[0]["arch"] == WIDE and scored[0]["ok"]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "user" and summary["iterations"] == 3
    assert summary["best"]["arch"] == WIDE  # the widest cell has the most parameters

    # A stopped run resumes; at the end of input every pause is accepted
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["--resume", str(run_dir), "--plain"]) == 0
    assert "end of input" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 6 and summary["stop_reason"] == "iterations"


@pytest.mark.slow
def test_a_killed_pause_asks_again_on_resume(tmp_path, monkeypatch, capsys):
    """A run killed while waiting for the human resumes at the same pause (it is checkpointed)."""
    from graphs.config import SearchConfig
    from graphs.runner import RunExtras, run_search

    model = repeating_script(tmp_path / "script.json", 0.0)
    run_dir = tmp_path / "run"
    config = SearchConfig(space="nb201", proxy="params", iterations=3, population=4,
                          designer_model=model, reflector_model=model, batch_size=8, seed=1,
                          interactive=True)

    class Killed(Exception):
        pass

    def kill(*_):
        raise Killed  # as if the process died at the prompt

    monkeypatch.setattr("graphs.steering.HumanAnswers.ask", kill)
    with pytest.raises(Killed):
        run_search(config, run_dir, resume=False, trace_mode="quiet")
    monkeypatch.undo()
    outcome = run_search(config, run_dir, resume=True, trace_mode="quiet",
                         extras=RunExtras(answers=[{"action": "hint", "text": "again"}]))
    events = read_jsonl(run_dir / "events.jsonl")
    assert [(e["iteration"], e["action"]) for e in events if e["event"] == "human_steer"] == \
        [(1, "hint"), (2, "accept")]
    assert outcome.summary["iterations"] == 3
    assert sum(e["event"] == "population_updated" and e["iteration"] == 1 for e in events) == 1


def test_interactive_needs_a_prompt_that_shows_hints(tmp_path, capsys):
    model = repeating_script(tmp_path / "script.json", 0.0)
    assert main(_argv(model, tmp_path / "run", "--interactive", "--prompt", "designer@v4")) == 2
    err = capsys.readouterr().err
    assert "--interactive" in err and "designer@v7" in err and err.count("\n") == 1
