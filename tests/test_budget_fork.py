"""Cost and token budgets (stop cleanly, resume with a raised budget) and ``--fork RUN@ITERATION``.

Real searches on nb201 with ``--proxy params`` and scripted fake models; prices come from
``$RZNAS_PRICES`` as a user would set them.

Run: .venv/bin/python -m pytest -q tests/test_budget_fork.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphs.cli import main
from graphs.runner import run_search
from tests.search_helpers import read_jsonl, repeating_script
from tests.test_graph import small_config

pytestmark = pytest.mark.slow


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _llm_calls(run_dir: Path) -> int:
    return sum(1 for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "llm_call")


@pytest.fixture()
def model(tmp_path) -> str:
    return repeating_script(tmp_path / "script.json", 0.0)


def test_token_budget_stops_cleanly_and_a_raised_budget_continues(tmp_path, model, capsys):
    run_dir = tmp_path / "run"
    first = run_search(small_config(model, iterations=4, budget_tokens=3000), run_dir,
                       resume=False, trace_mode="quiet")
    summary = first.summary
    assert summary["stop_reason"] == "budget_tokens"
    assert summary["iterations"] < 4 and summary["tokens"] >= 3000
    assert summary["budget"] == {"usd": None, "tokens": 3000}
    # One step's tokens at most past the budget: the step before it was still under.
    under = [e for e in read_jsonl(run_dir / "events.jsonl")
             if e["event"] == "population_updated" and e["iteration"] == summary["iterations"] - 1]
    assert under[-1]["tokens"] < 3000

    calls = _llm_calls(run_dir)
    assert main(["--resume", str(run_dir), "--quiet"]) == 0  # still at its budget: no new step
    assert _llm_calls(run_dir) == calls
    assert _summary(run_dir)["iterations"] == summary["iterations"]
    assert "--budget-tokens <higher>" in capsys.readouterr().out

    assert main(["--resume", str(run_dir), "--quiet", "--budget-tokens", "1M"]) == 0
    resumed = _summary(run_dir)
    assert resumed["iterations"] == 4 and resumed["stop_reason"] == "iterations"
    assert json.loads((run_dir / "config.json").read_text())["budget_tokens"] == 1_000_000


def test_usd_budget_counts_priced_calls_and_reports_cost_per_improvement(tmp_path, model,
                                                                        monkeypatch):
    prices = tmp_path / "prices.json"
    # $1 per 1,000 tokens: a Designer call (~2,300 tokens) costs about $2.3
    prices.write_text(json.dumps({model: [1000.0, 1000.0]}))
    monkeypatch.setenv("RZNAS_PRICES", str(prices))
    summary = run_search(small_config(model, iterations=5, budget_usd=4.0), tmp_path / "run",
                         resume=False, trace_mode="quiet").summary
    assert summary["stop_reason"] == "budget_usd"
    assert summary["cost_usd"] >= 4.0 and summary["iterations"] < 5
    assert summary["improvements"] >= 1
    assert summary["cost_per_improvement_usd"] == pytest.approx(
        summary["cost_usd"] / summary["improvements"], rel=1e-4)
    lines = [e for e in read_jsonl(tmp_path / "run" / "events.jsonl")
             if e["event"] == "population_updated"]
    assert lines[-1]["cost_usd"] == pytest.approx(summary["cost_usd"])


def test_budget_flags_are_checked(tmp_path, capsys):
    for flags in (["--budget-usd", "0"], ["--budget-usd", "-1"], ["--budget-tokens", "0"],
                  ["--budget-tokens", "lots"]):
        try:
            code = main([*flags, "--output", str(tmp_path / "x")])
        except SystemExit as exc:  # argparse's type errors exit from the parser
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "budget" in err


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished 3-iteration run to fork from (forks only add to its lineage.json)."""
    root = tmp_path_factory.mktemp("source")
    model = repeating_script(root / "script.json", 0.0)
    run_search(small_config(model, iterations=3), root / "run", resume=False, trace_mode="quiet")
    return root / "run"


def test_fork_from_a_middle_iteration_with_other_flags_records_lineage(tmp_path, source, capsys):
    original = _summary(source)
    fork = tmp_path / "fork"
    assert main(["--fork", f"{source}@1", "--no-reflection", "--output", str(fork), "--quiet"]) == 0
    forked = _summary(fork)
    assert forked["iterations"] == 3 and forked["models"]["reflector"] is None
    assert forked["forked_from"]["run_dir"] == str(source)
    assert forked["forked_from"]["iteration"] == 1
    # The fork starts from the source's state after iteration 1: same history up to there
    assert forked["progress"][:2] == original["progress"][:2]
    events = read_jsonl(fork / "events.jsonl")
    assert events[0]["event"] == "run_started" and events[0]["iteration"] == 1
    started = [e["iteration"] for e in events if e["event"] == "iteration_started"]
    assert started == [2, 3]
    assert not any(e["event"] == "llm_call" and e["role"] == "reflector" for e in events)
    lineage = json.loads((fork / "lineage.json").read_text())
    assert lineage["forked_from"]["iteration"] == 1
    source_lineage = json.loads((source / "lineage.json").read_text())
    assert {"run_dir": str(fork), "iteration": 1} in [
        {k: f[k] for k in ("run_dir", "iteration")} for f in source_lineage["forks"]]
    assert _summary(source) == original  # the source itself is untouched


def test_fork_with_unchanged_flags_replays_the_source_from_its_caches(tmp_path, source):
    fork = tmp_path / "fork"
    assert main(["--fork", f"{source}@2", "--output", str(fork), "--quiet"]) == 0
    a, b = _summary(source), _summary(fork)
    assert (b["best"], b["evaluations"], b["invalid_proposals"]) == \
        (a["best"], a["evaluations"], a["invalid_proposals"])
    calls = [e for e in read_jsonl(fork / "events.jsonl") if e["event"] == "llm_call"]
    assert calls and all(e["cached"] for e in calls)  # nothing paid again


def test_fork_mistakes_are_one_line(tmp_path, source, capsys):
    cases = {
        f"{source}@7": "no checkpoint after iteration 7",
        f"{source}@x": "RUN_DIR@ITERATION",
        f"{tmp_path / 'nothing'}@1": "not a run directory",
    }
    for arg, expected in cases.items():
        assert main(["--fork", arg, "--output", str(tmp_path / "f")]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
    assert main(["--fork", f"{source}@1", "--proxy", "synflow",
                 "--output", str(tmp_path / "f")]) == 2
    assert "cannot change: proxy" in capsys.readouterr().err
    assert main(["--fork", f"{source}@3", "--output", str(tmp_path / "f")]) == 2
    assert "--iterations" in capsys.readouterr().err  # nothing left to do from the last one
    assert main(["--fork", f"{source}@1", "--resume", str(source)]) == 2
    assert not (tmp_path / "f" / "checkpoints.sqlite").exists()
