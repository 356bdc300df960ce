"""The ablation grid: planning, flags and config files, resumable cells, results, benchmark."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

from graphs.ablate import (
    AblationGrid,
    Cell,
    main,
    model_tag,
    plan,
    run_grid,
    search_config,
)
from graphs.ablate_report import best_so_far, mean_curve, write_results
from graphs.config import SearchConfig
from graphs.runner import UsageError, run_search

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT.parent / "shared" / "data" / "nb201.csv"
needs_truth = pytest.mark.skipif(not TRUTH.exists(),
                                 reason=f"NB201 ground truth not found at {TRUTH}")
EDGES = ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def fake_model(tmp_path: Path) -> str:
    """A repeat-mode script: edits cycling over edges and ops, and a fixed reflection."""
    edits = [json.dumps({"edge": EDGES[i % 6], "op": OPS[(i // 6 + i) % 5], "rationale": f"r{i}"})
             for i in range(30)]
    reflection = json.dumps({"what_changed": "an edge", "why": "scores", "suggestion": "try 3x3"})
    path = tmp_path / "fake.json"
    path.write_text(json.dumps({"designer": {"replies": edits, "repeat": True},
                                "reflector": {"replies": [reflection], "repeat": True}}))
    return f"fake:{path}"


def small_grid(**overrides) -> AblationGrid:
    values = {"methods": ("rea", "random"), "proxies": ("params",), "seeds": 1, "budget": 8,
              "population": 4, "sample_size": 2, "batch_size": 8, "device": "cpu",
              "eval_timeout_s": 60}
    values.update(overrides)
    return AblationGrid(**values)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


# -- planning -----------------------------------------------------------------------------------


def test_plan_crosses_rz_nas_variants_but_not_baselines():
    grid = AblationGrid(methods=("rz-nas", "rea"), prompts=("designer@v1", "designer@v2"),
                        switches=("full", "no-reflection+no-code"), designer_models=("local",),
                        proxies=("synflow",), seeds=2)
    cells = plan(grid)
    assert len(cells) == 2 * 2 * 1 * 1 * 2 + 2
    assert len({c.name for c in cells}) == len(cells)
    assert {c.configuration for c in cells if c.method == "rea"} == {"rea-synflow"}
    assert "rz-nas-designer@v2-no-reflection+no-code-local-synflow-s1" in {c.name for c in cells}


def test_rz_nas_cells_spend_the_budget_as_population_plus_iterations_times_concurrency():
    grid = AblationGrid(budget=100, population=10, concurrency=4, proxies=("naswot",))
    cell = Cell("rz-nas", "naswot", 3, "designer@v2+reflector@v1", "no-reflection+no-text", "local")
    config = search_config(grid, cell)
    assert config.iterations == math.ceil(90 / 4) and config.population + 23 * 4 >= 100
    assert (config.designer_prompt, config.reflector_prompt) == ("designer@v2", "reflector@v1")
    assert not config.reflection and not config.text_description and config.code_description
    assert config.seed == 3 and config.proxy == "naswot" and config.concurrency == 4


def test_model_tags_are_short_safe_and_distinct():
    assert model_tag("local") == "local"
    assert model_tag("openai:gpt-4o") == "openai-gpt-4o"
    a, b = model_tag("fake:/a/x.json"), model_tag("fake:/b/x.json")
    assert a.startswith("fake-x-") and a != b and "/" not in a


# -- flags and config files -----------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--methods", "rea,bogus"], "unknown method 'bogus'"),
    (["--methods", "rz-nas", "--switches", "no-brains"], "unknown switch 'no-brains'"),
    (["--methods", "rz-nas", "--budget", "10", "--population", "10"], "must exceed --population"),
    (["--methods", "rz-nas", "--prompts", "designer@v9"], "designer@v9"),
    (["--methods", "rea", "--proxies", "nope"], "unknown proxy"),
    (["--methods", "rea", "--seeds", "0"], "--seeds must be at least 1"),
    (["--budget", "many"], "invalid int value"),
    (["--methods", "rz-nas", "--designer-models", "gpt4"], "unknown provider 'gpt4'"),
])
def test_bad_flags_give_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert exit_code([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing ran


def test_missing_output_and_bad_config_files_exit_2(tmp_path, capsys):
    assert exit_code(["--methods", "rea"]) == 2
    assert "--output" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"methods": "rea", "colour": "blue"}))
    assert exit_code(["--config", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "unknown setting 'colour'" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("methods = [rea\n")
    assert exit_code(["--config", str(broken), "--output", str(tmp_path / "o")]) == 2
    assert "not valid toml" in capsys.readouterr().err


def test_config_files_fill_the_grid_and_flags_win(tmp_path, monkeypatch):
    from graphs import ablate

    seen = {}

    def fake_run_grid(grid, output, **kwargs):
        seen["grid"], seen["output"] = grid, output
        return [], True

    monkeypatch.setattr(ablate, "run_grid", fake_run_grid)
    toml = tmp_path / "grid.toml"
    toml.write_text('methods = ["rea", "random"]\nproxies = "synflow,naswot"\nbudget = 50\n'
                    f'seeds = 2\noutput = "{tmp_path / "from-file"}"\n')
    assert main(["--config", str(toml), "--budget", "70"]) == 0
    grid = seen["grid"]
    assert grid.methods == ("rea", "random") and grid.proxies == ("synflow", "naswot")
    assert grid.budget == 70 and grid.seeds == 2 and seen["output"] == tmp_path / "from-file"
    js = tmp_path / "grid.json"
    js.write_text(json.dumps({"methods": ["rz-nas"], "switches": ["full", "no-reflection"],
                              "designer-models": "openai:gpt-4o", "eval-timeout": 30}))
    assert main(["--config", str(js), "--output", str(tmp_path / "o")]) == 0
    assert seen["grid"].switches == ("full", "no-reflection")
    assert seen["grid"].designer_models == ("openai:gpt-4o",)
    assert seen["grid"].eval_timeout_s == 30.0


# -- results ------------------------------------------------------------------------------------


def test_best_so_far_follows_the_proxy_best_and_counts_unique_evaluations():
    events = [
        {"event": "evaluation", "canonical": "a", "arch": "A", "ok": True, "score": 1.0},
        {"event": "evaluation", "canonical": "b", "arch": "B", "ok": False, "score": None},
        {"event": "evaluation", "canonical": "a", "arch": "A", "ok": True, "score": 1.0},  # replay
        {"event": "population_updated"},
        {"event": "evaluation", "canonical": "c", "arch": "C", "ok": True, "score": 3.0},
        {"event": "evaluation", "canonical": "d", "arch": "D", "ok": True, "score": 2.0},
    ]
    truth = {"A": 90.0, "C": 85.0, "D": 93.0}
    assert best_so_far(events, True, lambda arch, s: truth[arch]) == [90.0, 90.0, 85.0, 85.0]
    assert best_so_far(events, False, lambda arch, s: s) == [1.0, 1.0, 1.0, 1.0]
    assert mean_curve([[1.0, 3.0], [None, 5.0, 7.0]]) == [1.0, 4.0, 5.0]


def test_rz_nas_cell_is_resumed_then_skipped_and_reported(tmp_path):
    model = fake_model(tmp_path)
    grid = small_grid(methods=("rz-nas",), designer_models=(model,), concurrency=2)
    out = tmp_path / "out"
    [cell] = plan(grid)
    # The cell stopped after one of its two iterations, as a killed run leaves it.
    partial = SearchConfig.from_dict({**search_config(grid, cell).to_dict(), "iterations": 1})
    run_search(partial, out / cell.name, resume=False, trace_mode="quiet")

    lines: list[str] = []
    results, complete = run_grid(grid, out, log=lines.append)
    assert complete and [c for c, _ in results] == [cell]
    summary = results[0][1]
    assert summary["iterations"] == 2 and summary["tokens"] > 0  # resumed to the planned 2
    events = [json.loads(x) for x in (out / cell.name / "events.jsonl").read_text().splitlines()]
    assert [e["resumed"] for e in events if e["event"] == "run_started"] == [False, True]
    assert summary["evaluations"] <= grid.budget  # population 4 + 2 iterations x 2
    paths = write_results(out, grid, results)
    [row] = read_csv(paths["csv"])
    assert row["method"] == "rz-nas" and row["designer_model"].startswith("fake")
    assert int(row["tokens"]) == summary["tokens"] and row["switches"] == "full"
    assert f"`{row['configuration']}`" in paths["markdown"].read_text()
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"

    lines.clear()
    again, _ = run_grid(grid, out, log=lines.append)
    assert "finished earlier, skipped" in lines[-1] and again[0][1]["best"] == summary["best"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One small rea/random grid run through the CLI with ground truth (shared by two tests)."""
    out = tmp_path_factory.mktemp("ablate") / "out"
    argv = ["--methods", "rea,random", "--proxies", "params", "--budget", "6", "--population",
            "4", "--sample-size", "2", "--seeds", "1", "--output", str(out)]
    return main([*argv, "--truth", str(TRUTH)] if TRUTH.exists() else argv), out


@needs_truth
def test_ablate_cli_reports_the_ground_truth_of_what_each_run_returns(cli_run, capsys):
    from tools.truth import load_truth

    code, out = cli_run
    assert code == 0
    truth = load_truth(TRUTH)
    rows = read_csv(out / "results.csv")
    assert [r["cell"] for r in rows] == ["rea-params-s0", "random-params-s0"]
    for row in rows:
        assert float(row["ground_truth"]) == truth.query(row["best_arch"], "cifar10_test_acc")
    markdown = (out / "results.md").read_text()
    assert "the space's optimum is 94.37" in markdown and "| cifar10_test_acc |" in markdown


@needs_truth
def test_search_quality_benchmark_prints_the_documented_json(cli_run, capsys):
    path = ROOT / "benchmarks" / "search_quality.py"
    spec = importlib.util.spec_from_file_location("search_quality", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, out = cli_run
    capsys.readouterr()
    # The same grid as the CLI run: its cells are reused, so this checks the figures, not a rerun.
    code = bench.main(["--truth", str(TRUTH), "--budget", "6", "--seeds", "1", "--proxy",
                       "params", "--population", "4", "--sample-size", "2", "--json",
                       "--output", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.err.count("finished earlier, skipped") == 2
    report = json.loads(captured.out)
    assert set(report["methods"]) == {"rea", "random"}
    assert report["optimum"] == pytest.approx(94.3733, abs=1e-3)
    rows = read_csv(out / "results.csv")
    for name, figures in report["methods"].items():
        accs = [float(r["ground_truth"]) for r in rows if r["method"] == name]
        assert {"mean_acc", "std_acc", "gap_to_optimum", "top1pct_rate"} <= set(figures)
        assert figures["mean_acc"] == pytest.approx(accs[0], abs=1e-3) and figures["std_acc"] == 0
        assert figures["gap_to_optimum"] == pytest.approx(report["optimum"] - figures["mean_acc"],
                                                          abs=1e-3)
        assert figures["top1pct_rate"] == float(accs[0] >= report["top1pct_threshold"])
    assert report["top1pct_threshold"] == pytest.approx(93.775)  # rank 157 of 15,625
    assert bench.top_threshold([5, 4, 3, 2, 1] * 40) == 5  # top 1% of 200 = 2 cells


def test_a_finished_cell_with_other_settings_is_refused(cli_run):
    code, out = cli_run
    assert code == 0
    grid = small_grid(budget=6, population=5, sample_size=2, batch_size=64)
    with pytest.raises(UsageError, match="other settings \\(population\\)"):
        run_grid(grid, out, log=lambda line: None)
