"""Random search and REA on real nb201 cells with a real proxy, through the sandboxed evaluator."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from graphs.baselines import BaselineConfig, _Search, main, run_baseline
from graphs.runner import UsageError
from tools.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT.parent / "shared" / "data" / "nb201.csv"
#: summary.json keys that python -m graphs.search writes and report/ablate code reads.
GRAPH_SUMMARY_KEYS = {"best", "iterations", "evaluations", "invalid_proposals", "fallbacks",
                      "cache_hits", "llm_calls", "tokens", "cost_usd", "wall_seconds",
                      "stop_reason", "models", "prompts", "seed", "space", "dataset", "proxy",
                      "population_size", "progress", "run_dir", "resume_command"}


def config(**overrides) -> BaselineConfig:
    values = {"method": "rea", "proxy": "params", "budget": 12, "population": 4,
              "sample_size": 2, "batch_size": 8, "seed": 1, "device": "cpu", "eval_timeout_s": 60}
    values.update(overrides)
    return BaselineConfig(**values)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluations(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "evaluation"]


@pytest.fixture(scope="module")
def rea_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rea") / "run"
    truth = str(TRUTH) if TRUTH.exists() else None
    # A parameter budget most cells break: over-budget candidates must count but never join.
    return run_baseline(config(truth=truth, budget_params=4e5), run_dir), run_dir


def initial(run_dir: Path) -> list[str]:
    return [e["arch"] for e in evaluations(read_jsonl(run_dir / "events.jsonl"))
            if e["phase"] == "init"]


def test_rea_spends_exactly_the_budget_and_writes_the_graph_run_format(rea_run):
    outcome, run_dir = rea_run
    summary = outcome.summary
    for name in ("config.json", "summary.json", "population.json", "events.jsonl", "report.md",
                 "progress.png", "scores.sqlite"):
        assert (run_dir / name).exists(), name
    assert GRAPH_SUMMARY_KEYS <= set(summary)
    assert summary["method"] == "rea" and summary["stop_reason"] == "budget"
    assert summary["tokens"] == 0 and summary["cost_usd"] == 0 and summary["invalid_proposals"] == 0
    events = read_jsonl(run_dir / "events.jsonl")
    assert {e["event"] for e in events} == {"run_started", "evaluation", "iteration_started",
                                           "proposal", "population_updated", "run_finished"}
    unique = {e["canonical"] for e in evaluations(events)}
    assert summary["evaluations"] == len(unique) == 12
    scored = [e for e in evaluations(events) if e["ok"]]
    assert summary["best"]["score"] == max(e["score"] for e in scored)  # best ever, not just alive
    population = json.loads((run_dir / "population.json").read_text())
    assert 1 <= len(population) <= 4
    assert "python -m graphs.baselines --method rea" in (run_dir / "report.md").read_text()


def test_rea_mutates_one_edge_of_a_tournament_winner_and_ages_out_the_oldest(rea_run):
    _, run_dir = rea_run
    space = get_space("nb201")
    events = read_jsonl(run_dir / "events.jsonl")
    alive: list[str] = []
    parent = None
    for e in events:
        if e["event"] == "proposal":
            assert e["ok"] and len(space.diff(parent, e["child"])) == 1  # one edge changed
        if e["event"] == "iteration_started":
            parent = e["parent"]["arch"]
            assert parent in alive  # the parent is a living member
        if e["event"] == "population_updated":
            if e["iteration"] > 0 and e["removed"]:
                assert e["removed"] == alive[: len(e["removed"])]  # the oldest leave first
            alive = [a for a in alive if a not in e["removed"]] + e["added"]
            assert len(alive) == e["size"] <= 4


def test_rerun_replays_from_the_cache_and_a_larger_budget_extends(tmp_path, rea_run):
    run_dir = tmp_path / "run"
    first = run_baseline(config(method="random", budget=10), run_dir).summary
    assert first["iterations"] == 2  # batches of 4 after the initial 4: 4 + 4 + 2
    # Every method starts from the graph's seeded initial population.
    assert initial(run_dir) == initial(rea_run[1])[:4] and len(initial(run_dir)) == 4
    again = run_baseline(config(method="random", budget=10), run_dir).summary
    assert again["cache_hits"] == again["evaluations"] == 10 and again["best"] == first["best"]
    longer = run_baseline(config(method="random", budget=14), run_dir).summary
    assert longer["evaluations"] == 14 and longer["cache_hits"] == 10
    with pytest.raises(UsageError, match="other settings"):
        run_baseline(config(method="random", budget=10, population=5), run_dir)


def test_over_budget_candidates_count_as_evaluations_but_never_join(rea_run):
    outcome, run_dir = rea_run
    events = read_jsonl(run_dir / "events.jsonl")
    over = [e for e in evaluations(events) if not e["ok"]]
    assert over and all(e["error"]["kind"] == "over_budget" for e in over)
    assert outcome.summary["best"]["params"] <= 4e5
    population = json.loads((run_dir / "population.json").read_text())
    assert all(m["params"] <= 4e5 for m in population)
    born = {a for e in events if e["event"] == "population_updated" for a in e["added"]}
    assert not born & {e["arch"] for e in over}


def test_mutation_prefers_unseen_neighbours():
    space = get_space("nb201")
    search = _Search(config(), space, None, None, None, lambda e: None)
    parent = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
              "skip_connect~2|")
    neighbours = space.neighbours(parent)
    left = neighbours[7]
    search.seen = {space.canonical(n) for n in neighbours
                   if space.canonical(n) != space.canonical(left)}
    assert space.canonical(search.mutate(parent, random.Random(0))) == space.canonical(left)
    search.seen.add(space.canonical(left))  # all seen: still a one-edge mutation
    assert len(space.diff(parent, search.mutate(parent, random.Random(0)))) == 1


@pytest.mark.skipif(not TRUTH.exists(), reason=f"NB201 ground truth not found at {TRUTH}")
def test_ground_truth_of_the_best_is_reported(rea_run):
    from tools.truth import load_truth

    best = rea_run[0].summary["best"]
    assert best["ground_truth"] == load_truth(TRUTH).query(best["arch"], "cifar10_test_acc")
    assert best["ground_truth_metric"] == "cifar10_test_acc"
    assert rea_run[0].summary["progress"][-1]["best_ground_truth"] == best["ground_truth"]


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


@pytest.mark.parametrize("argv, message", [
    (["--budget", "0"], "--budget must be at least 1"),
    (["--sample-size", "30"], "--sample-size must be between 1 and --population"),
    (["--proxy", "nope"], "unknown proxy"),
    (["--method", "bogus"], "invalid choice"),
])
def test_cli_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert exit_code([*argv, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
