"""The search graph driven end to end with scripted fake models and a real proxy on real nb201 cells."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphs import nodes
from graphs.cli import main
from graphs.config import SearchConfig
from graphs.runner import run_search
from graphs.search import build_graph
from tests.search_helpers import read_jsonl, sigkill, wait_for_event, write_script

ROOT = Path(__file__).resolve().parents[1]
EDGES = ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def designer_edits(n: int) -> list[str]:
    """Return ``n`` valid edit replies cycling over edges and ops (some will equal the parent)."""
    return [
        json.dumps({"edge": EDGES[i % 6], "op": OPS[(i // 6 + i) % 5], "rationale": f"try edit {i}"})
        for i in range(n)
    ]


def reflections(n: int) -> list[str]:
    return [
        json.dumps({"what_changed": f"change {i}", "why": f"reason {i}",
                    "suggestion": f"SUGGESTION-{i}: widen edge 3<-0"})
        for i in range(n)
    ]


def small_config(model: str, **overrides) -> SearchConfig:
    values = dict(space="nb201", proxy="params", iterations=3, population=4, designer_model=model,
                  reflector_model=model, batch_size=8, eval_timeout_s=60, seed=1)
    values.update(overrides)
    return SearchConfig(**values)


def test_topology_has_the_rz_nas_loop():
    drawing = build_graph().get_graph(xray=1).draw_mermaid()
    for node in ("init_population", "select_parents", "update", "mutate\\3adesign",
                 "mutate\\3aevaluate", "mutate\\3areflect"):
        assert node in drawing
    assert "mutate\\3adesign -.-> mutate\\3adesign" in drawing  # invalid proposals go back
    assert "update -.-> steer" in drawing and "update -.-> __end__" in drawing
    assert "steer -.-> select_parents" in drawing and "steer -.-> __end__" in drawing


def test_routers_are_pure():
    assert nodes.route_after_design({"proposal": None}) == "design"
    assert nodes.route_after_design({"proposal": {"child": "x"}}) == "evaluate"
    assert nodes.route_after_update({"stop_reason": None}) == "steer"
    assert nodes.route_after_update({"stop_reason": "iterations"}) == "__end__"
    assert nodes.route_after_steer({"stop_reason": None}) == "select_parents"
    assert nodes.route_after_steer({"stop_reason": "user"}) == "__end__"


def test_search_runs_and_feeds_reflections_back(tmp_path):
    model = write_script(tmp_path / "script.json", designer_edits(40), reflections(10))
    outcome = run_search(small_config(model), tmp_path / "run", resume=False, trace_mode="quiet")
    summary = outcome.summary
    assert summary["iterations"] == 3 and outcome.reason == "iterations"
    assert "FAKE" in summary["models"]["designer"] or summary["models"]["designer"].startswith("fake")
    for name in ("summary.json", "population.json", "events.jsonl", "messages.jsonl", "report.md",
                 "progress.png"):
        assert (tmp_path / "run" / name).exists(), name
    events = read_jsonl(tmp_path / "run" / "events.jsonl")
    scored = [e["canonical"] for e in events if e["event"] == "evaluation" and not e["cached"]]
    assert len(scored) == len(set(scored)) == summary["evaluations"]
    accepted = [e for e in events if e["event"] == "proposal" and e["ok"]]
    assert len(accepted) == 3
    rejected = [e for e in events if e["event"] == "proposal" and not e["ok"]]
    assert summary["invalid_proposals"] == len(rejected)
    # The Reflector's suggestion after iteration 1 reaches the Designer in iteration 2.
    messages = read_jsonl(tmp_path / "run" / "messages.jsonl")
    designer_calls = [m for m in messages if m["role"] == "designer" and m["iteration"] == 2]
    assert designer_calls and "SUGGESTION-0" in json.dumps(designer_calls[0]["messages"])
    assert "messages" not in json.dumps([e for e in events if e["event"] == "llm_call"])
    best = summary["best"]
    population = json.loads((tmp_path / "run" / "population.json").read_text())
    assert best["score"] == max(m["score"] for m in population)


def test_garbage_designer_falls_back_and_counts(tmp_path):
    model = write_script(tmp_path / "garbage.json", ["no json here"] * 4 + ["{\"edge\": 7}"] * 4,
                         reflections(4))
    config = small_config(model, iterations=2, max_retries=3)
    summary = run_search(config, tmp_path / "run", resume=False, trace_mode="quiet").summary
    assert summary["iterations"] == 2
    assert summary["invalid_proposals"] == 8 and summary["fallbacks"] == 2


def test_resume_extends_a_finished_run_without_rescoring(tmp_path):
    model = write_script(tmp_path / "script.json", designer_edits(60), reflections(20))
    run_dir = tmp_path / "run"
    first = run_search(small_config(model, iterations=2), run_dir, resume=False, trace_mode="quiet")
    assert first.summary["iterations"] == 2
    again = run_search(small_config(model, iterations=4), run_dir, resume=True, trace_mode="quiet")
    assert again.summary["iterations"] == 4
    calls = [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "llm_call"]
    designer_calls = sum(e["role"] == "designer" for e in calls)
    assert designer_calls > first.summary["llm_usage"]["designer"]["calls"] > 0
    assert again.summary["llm_usage"]["designer"]["calls"] == designer_calls  # both sessions
    events = read_jsonl(run_dir / "events.jsonl")
    scored = [e["canonical"] for e in events if e["event"] == "evaluation" and not e["cached"]]
    assert len(scored) == len(set(scored))


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    cases = [
        ["--space", "nope"],
        ["--proxy", "nope"],
        ["--designer-model", "gpt-4o"],
        ["--truth", str(tmp_path / "missing.csv")],
        ["--prompt", "designer@v999"],
        ["--resume", str(tmp_path)],
        ["--iterations", "0"],
    ]
    for argv in cases:
        assert main([*argv, "--output", str(tmp_path / "r"), "--plain"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, (argv, err)


def test_cli_lists(capsys):
    assert main(["--list-proxies"]) == 0
    out = capsys.readouterr().out
    assert "synflow" in out and "naswot" in out
    assert main(["--list-prompts"]) == 0
    assert "designer@v1" in capsys.readouterr().out


def test_unreachable_openai_compatible_fails_fast(tmp_path, capsys):
    start = time.monotonic()
    code = main(["--designer-model", "openai-compatible:http://127.0.0.1:9/v1:some-model",
                 "--output", str(tmp_path / "r"), "--plain"])
    assert code == 2 and time.monotonic() - start < 30
    assert "127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(tmp_path):
    slow = [{"sleep": 0.4, "text": t} for t in designer_edits(80)]
    model = write_script(tmp_path / "script.json", slow, reflections(30))
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "graphs.search", "--designer-model", model, "--reflector-model",
            model, "--proxy", "params", "--iterations", "6", "--population", "4", "--batch-size", "8",
            "--seed", "3", "--quiet", "--output", str(run_dir)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_event(proc, run_dir / "events.jsonl",
                   lambda e: e.get("event") == "iteration_started" and e.get("iteration") == 3)
    sigkill(proc)
    resumed = subprocess.run([sys.executable, "-m", "graphs.search", "--resume", str(run_dir),
                              "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 6
    events = read_jsonl(run_dir / "events.jsonl")
    scored = [e["canonical"] for e in events if e["event"] == "evaluation" and not e["cached"]]
    assert len(scored) == len(set(scored))
    every = {e["canonical"] for e in events if e["event"] == "evaluation"}
    assert summary["evaluations"] == len(every)
