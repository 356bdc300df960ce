"""The load benchmark's core at a small scale: a long run resumes whole, re-scores nothing, and its
saved steps and reports do not grow with its length."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from benchmarks.load_resume import (
    build_run,
    checkpoint_growth,
    draw_architectures,
    fill_score_cache,
    load_config,
    main,
    measure_report,
    measure_resume,
    measure_trace,
)
from graphs.events import iter_events, read_events
from graphs.report import report_events, write_reports
from graphs.runner import load_run_config, run_search
from tools.spaces import get_space

EVALUATIONS, ITERATIONS, POPULATION = 500, 60, 20
CONCURRENCY = (EVALUATIONS - POPULATION) // ITERATIONS  # 8
RUN_EVALUATIONS = POPULATION + ITERATIONS * CONCURRENCY  # 500


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("load") / "run"
    built = build_run(run_dir, evaluations=EVALUATIONS, iterations=ITERATIONS,
                      population=POPULATION)
    return run_dir, built


@pytest.mark.slow  # builds a 60-step run through the real graph (shared by the tests below)
def test_build_scores_every_child_from_the_cache(run):
    _, built = run
    assert built["iterations"] == ITERATIONS and built["concurrency"] == CONCURRENCY
    assert built["cached_evaluations"] == EVALUATIONS
    assert built["run_evaluations"] == built["cache_hits"] == RUN_EVALUATIONS  # no worker ran
    assert built["invalid_proposals"] == 0  # every scripted proposal was new and valid


@pytest.mark.slow
def test_resume_finds_everything_and_rescores_nothing(run):
    run_dir, _ = run
    resumed = measure_resume(run_dir)
    assert resumed["iteration"] == ITERATIONS and resumed["next"] == []
    assert resumed["population"] == POPULATION
    # What the prompts read is kept, not the run: --history-length 3, --lessons 3 (+ the latest).
    assert (resumed["history"], resumed["reflections"]) == (3, 4)
    assert resumed["progress"] == ITERATIONS + 1  # the summary's curve is whole
    assert resumed["evaluated"] == RUN_EVALUATIONS  # the whole map, rebuilt from delta writes
    assert resumed["cache_rows"]["scores"] == resumed["cache_rows"]["candidates"] == EVALUATIONS
    assert resumed["rescored"] == 0 and resumed["worker_runs"] == 0
    assert resumed["peak_rss_mb"] > 0 and resumed["seconds"] > 0


@pytest.mark.slow
def test_saved_steps_do_not_grow_with_the_run(run):
    run_dir, _ = run
    growth = checkpoint_growth(run_dir)
    # Before the fix the evaluated map (top-level steps) and a list of every evaluated
    # architecture (branch steps and their Send packets) grew ~20x over these 60 steps.
    for kind in ("step", "branch", "send"):
        assert growth[kind]["early_bytes"] > 0, kind
        assert growth[kind]["ratio"] < 1.5, (kind, growth[kind])


@pytest.mark.slow
def test_extending_the_run_resumes_where_it_stopped(run, tmp_path):
    run_dir, _ = run
    copy = tmp_path / "run"  # extend a copy: the other tests read the original
    copy.mkdir()
    for path in run_dir.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    config = load_run_config(copy)
    _, fresh = draw_architectures(config, EVALUATIONS + 2 * CONCURRENCY)
    spare = fresh[ITERATIONS * CONCURRENCY:]  # the same draws continued: new to the run
    assert len(spare) == 2 * CONCURRENCY
    fill_score_cache(config, copy, spare, seed=1)
    script = copy / "fake_script.json"
    script.write_text(json.dumps({
        "designer": [json.dumps({"arch": a, "rationale": "extend"}) for a in spare],
        "reflector": {"replies": [json.dumps({"what_changed": "x", "why": "y",
                                              "suggestion": "z"})], "repeat": True}}))
    config.designer_model = config.reflector_model = f"fake:{script}"
    config.iterations = ITERATIONS + 2
    before = len(read_events(copy / "events.jsonl"))
    outcome = run_search(config, copy, resume=True, trace_mode="quiet",
                         console=Console(file=io.StringIO()))
    assert outcome.summary["iterations"] == ITERATIONS + 2
    assert outcome.summary["evaluations"] == RUN_EVALUATIONS + 2 * CONCURRENCY
    assert len(outcome.summary["progress"]) == ITERATIONS + 3  # iteration 0 too: nothing lost
    new = read_events(copy / "events.jsonl")[before:]
    scored = [e for e in new if e["event"] == "evaluation"]
    assert len(scored) == 2 * CONCURRENCY
    assert all(e["phase"] == "search" and e["iteration"] > ITERATIONS for e in scored)
    # Only the spare architectures: the resumed Designer was told everything evaluated before.
    space = get_space(config.space)
    assert {e["canonical"] for e in scored} == {space.canonical(a) for a in spare}
    assert all(e["cached"] and e["ok"] for e in scored)  # no sandbox worker ran
    assert not [e for e in new if e["event"] == "proposal" and not e["ok"]]


@pytest.mark.slow
def test_trace_and_report_read_the_events_once(run, tmp_path):
    run_dir, _ = run
    events = read_events(run_dir / "events.jsonl")
    kept = report_events(iter(events))
    figures = {"population_updated", "evaluation"}
    assert len(kept) <= sum(e["event"] in figures for e in events) + 2
    assert {e["event"] for e in kept} <= figures | {"run_started", "reflection"}
    # A one-shot generator gives the same reports as the whole list.
    summary = json.loads((run_dir / "summary.json").read_text())
    population = json.loads((run_dir / "population.json").read_text())
    as_list = write_reports(tmp_path / "list", summary, events, population)
    streamed = write_reports(tmp_path / "stream", summary, iter_events(run_dir / "events.jsonl"),
                             population)
    report = streamed["report"].read_text()
    assert report == as_list["report"].read_text()
    assert f"| {ITERATIONS} |" in report and "Latest reflection" in report
    assert measure_trace(run_dir)["events"] == len(events)
    assert measure_report(run_dir)["seconds"] > 0


@pytest.mark.parametrize("argv, problem", [
    (["--evaluations", "50", "--iterations", "60", "--population", "20"], "--evaluations"),
    (["--iterations", "0"], "--iterations"),
])
def test_impossible_sizes_are_one_line_usage_errors(argv, problem, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and problem in err and "\n" not in err


def test_keep_refuses_a_directory_with_files(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert main(["--keep", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--keep" in err and "Traceback" not in err


def test_config_spreads_the_evaluations_over_the_steps():
    config = load_config(10_000, 1_500, 100, 0)
    assert config.concurrency == 6 and config.space == "zen-macro"
    assert config.population + config.iterations * config.concurrency <= 10_000


def test_secrets_in_the_environment_are_still_redacted(monkeypatch):
    from graphs.events import redact

    secret = "zq81kQ2mLw7vB4nR0tY5uH3j"  # no key shape: only the environment names it secret
    monkeypatch.setenv("MY_SERVICE_TOKEN", secret)
    shown = redact({"event": "llm_call", "error": f"401 for {secret}", "nested": [secret]})
    assert secret not in json.dumps(shown)
    assert shown["nested"] == ["[REDACTED]"]
