"""Run reports written from a recorded event stream and its summary."""

from __future__ import annotations

import json
from pathlib import Path

from graphs.events import read_events, redact
from graphs.report import progress_rows, render_summary, write_reports

SAMPLE = Path(__file__).parent / "fixtures" / "events_sample.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample() -> tuple[list[dict], dict, list[dict]]:
    """Return the sample's events, summary and final population (replayed from the events)."""
    events = read_events(SAMPLE)
    scored = {e["arch"]: e for e in events if e["event"] == "evaluation" and e["ok"]}
    born: dict[str, int] = {}
    for e in events:
        if e["event"] == "population_updated":
            for arch in e["added"]:
                born[arch] = e["iteration"]
            for arch in e["removed"]:
                born.pop(arch)
    population = [
        {"arch": a, "canonical": a, "born": it,
         **{k: scored[a][k] for k in ("score", "scores", "params", "flops")}}
        for a, it in born.items()
    ]
    population.sort(key=lambda m: -m["score"])
    return events, events[-1]["summary"], population


def test_write_reports_writes_every_file(tmp_path):
    events, summary, population = sample()
    paths = write_reports(tmp_path, summary, events, population)
    assert set(paths) == {"summary", "population", "progress", "report"}
    assert all(p.parent == tmp_path and p.exists() for p in paths.values())
    written = json.loads(paths["summary"].read_text())
    assert written == summary  # as given: nothing added, nothing lost
    assert list(written)[:4] == ["best", "iterations", "evaluations", "cache_hits"]
    for key in ("iterations", "evaluations", "invalid_proposals", "fallbacks", "cache_hits",
                "tokens", "cost_usd", "wall_seconds", "models", "prompts", "seed"):
        assert key in written
    assert json.loads(paths["population"].read_text()) == population
    assert paths["progress"].read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_report_markdown_names_best_population_models_and_resume(tmp_path):
    events, summary, population = sample()
    report = write_reports(tmp_path, summary, events, population)["report"].read_text()
    best = summary["best"]["arch"]
    assert f"```\n{best}\n```" in report
    assert "ground truth (cifar10_test_acc): **93.46**" in report
    assert "![progress](progress.png)" in report
    assert best.replace("|", "\\|") in report  # first row of the population table, pipes escaped
    assert report.index("## Population (top 8 of 8)") < report.index(best.replace("|", "\\|"))
    assert "| invalid proposals | 3 |" in report and "| random fallbacks | 1 |" in report
    assert "over_budget: 1" in report
    assert summary["prompts"]["designer"]["sha256"] in report
    assert "python -m graphs.search --resume runs/20260101-100000-nb201-synflow" in report
    assert "replace avg_pool_3x3 on edge 3<-1" in report  # the latest reflection
    assert "FAKE" not in report


def test_progress_rows_come_from_events_then_summary_then_evaluations():
    events, summary, _ = sample()
    rows = progress_rows(summary, events)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    best = [r["best_score"] for r in rows]
    assert best == sorted(best) and best[-1] == summary["best"]["score"]
    assert [r["best_ground_truth"] for r in rows] == [92.71, 93.46, 93.46, 93.46]
    # Without population events the summary's progress is used.
    assert progress_rows(summary, [])[-1]["best_ground_truth"] == 93.46
    # Ground truth carried only by evaluation events still reaches the plot.
    bare = [{k: v for k, v in e.items() if k != "best_ground_truth"} for e in events]
    for e in bare:
        if e["event"] == "evaluation" and e["ok"]:
            e["ground_truth"] = 50.0 + e["score"]
    rows = progress_rows({}, bare)
    assert rows[1]["best_ground_truth"] == 50.0 + rows[1]["best_score"]


def test_reports_survive_a_run_with_almost_nothing(tmp_path):
    summary = {"best": {"arch": "|skip_connect~0|", "score": 1.0}, "iterations": 0}
    paths = write_reports(tmp_path / "new", summary, [], [])
    assert paths["progress"].read_bytes()[:8] == PNG_MAGIC
    assert "|skip_connect~0|" in paths["report"].read_text()
    assert json.loads(paths["summary"].read_text()) == summary


def test_fake_models_are_flagged_and_secrets_never_written(tmp_path):
    events, summary, population = sample()
    summary = {**summary, "models": {"designer": "fake:script.json (FAKE)", "reflector": None},
               "note": "called with api_key=sk-abcdefghijklmnopqrstuvwx"}
    paths = write_reports(tmp_path, summary, events, population)
    report = paths["report"].read_text()
    assert "**FAKE MODEL**" in report
    assert "FAKE MODEL" in render_summary(summary)
    for path in paths.values():
        assert b"sk-abcdefghijklmnopqrstuvwx" not in path.read_bytes()
    assert json.loads(paths["summary"].read_text())["note"] == "called with api_key=[REDACTED]"


def test_render_summary_is_short_and_says_what_matters():
    _, summary, _ = sample()
    text = render_summary(summary)
    assert len(text.splitlines()) <= 6
    assert summary["best"]["arch"] in text
    assert "synflow 43.62" in text and "cifar10_test_acc 93.46" in text
    assert "3 iterations (iterations)" in text and "3 invalid proposals" in text
    assert "1 fallbacks" in text
    assert "15,096 tokens" in text and "$0.0025" in text and "5m 43s" in text
    assert "resume" not in text
    interrupted = render_summary({**summary, "stop_reason": "interrupted"})
    assert "resume: python -m graphs.search --resume runs/20260101-100000-nb201" in interrupted


def test_redact_hides_key_shapes_and_keeps_ordinary_data(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "opaque-key-value-123456")
    monkeypatch.setenv("RZNAS_KEY_PATH", "/home/user/keys")  # a path, not a key: left alone
    data = {
        "text": "use sk-ant-api03-AbCdEfGhIjKlMnOp and Bearer abcdefghijklmnopqrstuvwxyz0123",
        "api_key": "short",
        "authorization": "Basic dXNlcjpwYXNz",
        "env": "the key opaque-key-value-123456 leaked",
        "input_tokens": 2412, "tokens": 15096,
        "arch": "|nor_conv_3x3~0|+|skip_connect~0|none~1|",
        "path": "/home/user/keys/run",
        "nested": [{"password": "hunter2hunter2"}, "password: hunter2hunter2"],
    }
    clean = redact(data)
    assert clean["text"] == "use [REDACTED] and Bearer [REDACTED]"
    assert clean["api_key"] == clean["authorization"] == "[REDACTED]"
    assert clean["env"] == "the key [REDACTED] leaked"
    assert clean["input_tokens"] == 2412 and clean["tokens"] == 15096
    assert clean["arch"] == data["arch"] and clean["path"] == data["path"]
    assert clean["nested"] == [{"password": "[REDACTED]"}, "password: [REDACTED]"]
    assert data["api_key"] == "short"  # the input is not modified
