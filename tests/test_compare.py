"""``python -m graphs.compare``: run directories side by side, from summaries or from events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from graphs.compare import draw_comparison, load_runs, main, run_figures
from graphs.config import SearchConfig
from tests.search_helpers import ROOT, write_script

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
C3 = "nor_conv_3x3"
ARCHS = [  # nb201 cells, each one edit better than the last
    f"|{C3}~0|+|nor_conv_1x1~0|none~1|+|nor_conv_1x1~0|none~1|{C3}~2|",
    f"|{C3}~0|+|{C3}~0|none~1|+|nor_conv_1x1~0|none~1|{C3}~2|",
    f"|{C3}~0|+|{C3}~0|none~1|+|{C3}~0|none~1|{C3}~2|",
    f"|{C3}~0|+|{C3}~0|{C3}~1|+|{C3}~0|none~1|{C3}~2|",
    f"|{C3}~0|+|{C3}~0|{C3}~1|+|{C3}~0|skip_connect~1|{C3}~2|",
    f"|{C3}~0|+|{C3}~0|{C3}~1|+|{C3}~0|{C3}~1|{C3}~2|",
]
FAKE = "fake:/tmp/script.json"


def write_run(run_dir: Path, best_scores: list[float], *, finished: bool = True,
              truths: list[float] | None = None, forked_from: dict | None = None,
              forks: list[dict] | None = None, archs: list[str] | None = None,
              **config_values) -> Path:
    """Write a run directory as ``python -m graphs.search`` leaves it.

    ``best_scores[i]`` is the best score after iteration ``i`` (0: the initial population). Each
    iteration costs one evaluation, two LLM calls of 500 tokens and $0.001; iteration 2 has one
    invalid proposal. ``finished`` False leaves no summary.json and no run_finished event (a
    killed run).
    """
    run_dir.mkdir(parents=True)
    values = dict(proxy="params", iterations=len(best_scores) - 1, population=6, seed=3,
                  designer_model=FAKE, reflector_model=FAKE, designer_prompt="designer@v4",
                  reflector_prompt="reflector@v2")  # explicit: the defaults move on
    values.update(config_values)
    config = SearchConfig(**values).to_dict()
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    archs = archs or ARCHS
    reflector_prompt = config["reflector_prompt"] if config["reflection"] else None
    models = {"designer": f"{FAKE} (FAKE)",
              "reflector": f"{FAKE} (FAKE)" if config["reflection"] else None}
    shas = {"designer": "d" * 64, "reflector": "r" * 64 if reflector_prompt else None}
    events: list[dict] = [{
        "event": "run_started", "time": 1000.0, "run_id": run_dir.name, "run_dir": str(run_dir),
        "resumed": False, "config": config, "iteration": 0, "models": models,
        "prompts": {"designer": config["designer_prompt"], "reflector": reflector_prompt},
        "prompt_sha256": shas,
    }]
    progress = []
    for it, best in enumerate(best_scores):
        arch = archs[min(it, len(archs) - 1)]
        truth = truths[it] if truths else None
        if it:
            events += [{"event": "llm_call", "time": 1000.0 + it, "iteration": it, "slot": 0,
                        "role": role, "model": FAKE, "attempt": 1, "input_tokens": 400,
                        "output_tokens": 100, "cost_usd": 0.0005, "cached": False, "ok": True}
                       for role in ("designer", "reflector")]
        events.append({"event": "evaluation", "time": 1000.0 + it, "iteration": it,
                       "phase": "search" if it else "init", "arch": arch, "canonical": arch,
                       "ok": True, "score": best, "cached": False})
        events.append({
            "event": "population_updated", "time": 1000.5 + it, "iteration": it, "size": 6,
            "best": {"arch": arch, "score": best}, "best_ground_truth": truth,
            "mean_score": best * 0.8, "top": [{"arch": arch, "score": best}],
            "added": [arch], "removed": [], "evaluations": 6 + it,
            "invalid_proposals": 1 if it >= 2 else 0, "fallbacks": 0, "tokens": 1000 * it,
            "cost_usd": round(0.001 * it, 6), "elapsed_s": 30.0 * it + 5, "eta_s": None,
        })
        progress.append({"iteration": it, "best_score": best, "mean_score": best * 0.8,
                         "best_arch": arch, "best_ground_truth": truth})
    last = len(best_scores) - 1
    summary = {
        "best": {"arch": archs[min(last, len(archs) - 1)], "score": best_scores[-1],
                 "ground_truth": truths[-1] if truths else None,
                 "ground_truth_metric": "cifar10_test_acc" if truths else None,
                 "params": 1.2e6, "flops": 1.5e8},
        "iterations": last, "evaluations": 6 + last, "invalid_proposals": 1 if last >= 2 else 0,
        "fallbacks": 0, "cache_hits": 0, "llm_calls": 2 * last, "tokens": 1000 * last,
        "cost_usd": round(0.001 * last, 6), "wall_seconds": 30.0 * last + 5,
        "stop_reason": "iterations", "models": models,
        "prompts": {"designer": {"id": config["designer_prompt"], "sha256": shas["designer"]},
                    "reflector": ({"id": reflector_prompt, "sha256": shas["reflector"]}
                                  if reflector_prompt else None)},
        "seed": config["seed"], "space": config["space"], "dataset": config["dataset"],
        "proxy": config["proxy"], "population_size": 6, "progress": progress,
        "run_dir": str(run_dir),
    }
    if forked_from is not None:
        summary["forked_from"] = forked_from
    if finished:
        events.append({"event": "run_finished", "time": 2000.0, "reason": "iterations",
                       "summary": summary, "iteration": last})
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if forked_from is not None or forks:
        (run_dir / "lineage.json").write_text(json.dumps({"forked_from": forked_from,
                                                          "forks": forks or []}))
    return run_dir


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Two finished runs: full RZ-NAS on designer@v4, and designer@v1 without reflection."""
    full = write_run(tmp_path / "full", [100.0, 150.0, 150.0, 220.0],
                     truths=[88.1, 90.2, 90.2, 92.5])
    ablated = write_run(tmp_path / "no-refl", [100.0, 120.0, 180.0, 180.0],
                        reflection=False, designer_prompt="designer@v1")
    return full, ablated


def table_line(out: str, label: str) -> str:
    """The table line of the row named ``label``."""
    lines = [line for line in out.splitlines() if line.strip().startswith(label)]
    assert len(lines) == 1, (label, out)
    return lines[0]


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_table_has_the_runs_as_columns_and_the_differing_settings(two_runs, tmp_path, capsys):
    full, ablated = two_runs
    png = tmp_path / "out.png"
    assert main([str(full), str(ablated), "--output", str(png)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "full" in line and "no-refl" in line)
    assert header.index("full") < header.index("no-refl")
    assert "\x1b" not in out  # a pipe gets no colour codes
    reflection = table_line(out, "≠ reflection")
    assert reflection.index("True") < reflection.index("False")
    prompt = table_line(out, "≠ designer_prompt")
    assert prompt.index("designer@v4") < prompt.index("designer@v1")
    assert "≠ seed" not in out and "≠ proxy" not in out  # equal settings are not listed
    assert "designer@v4 (dddddddd) / reflector@v2 (rrrrrrrr)" in table_line(out, "prompts")
    assert "designer@v1 (dddddddd) / —" in table_line(out, "prompts")
    best = table_line(out, "best score")
    assert best.index("220.00") < best.index("180.00")
    assert "92.50 (cifar10_test_acc)" in table_line(out, "best's ground truth")
    assert table_line(out, "iterations done").split()[-2:] == ["3", "3"]
    assert table_line(out, "LLM calls").split()[-2:] == ["6", "6"]
    assert table_line(out, "tokens").split()[-2:] == ["3,000", "3,000"]
    assert table_line(out, "cost").split()[-2:] == ["$0.0030", "$0.0030"]
    assert table_line(out, "invalid proposals").split()[-2:] == ["1", "1"]
    assert table_line(out, "wall time").split()[-4:] == ["1m", "35s", "1m", "35s"]
    assert table_line(out, "status").split()[-2:] == ["finished", "finished"]
    assert table_line(out, "stop reason").split()[-2:] == ["iterations", "iterations"]
    assert "forked from" not in out  # no run is a fork: the row is left out
    assert out.rstrip().endswith(f"plot: {png}")
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_json_gives_each_runs_figures_and_the_differing_settings(two_runs, tmp_path, capsys):
    full, ablated = two_runs
    data = run_json(capsys, str(full), str(ablated), "--output", str(tmp_path / "c.png"))
    assert data["png"] == str(tmp_path / "c.png")
    first, second = data["runs"]
    assert first["name"] == "full" and second["name"] == "no-refl"
    assert first["best"] == {"arch": ARCHS[3], "score": 220.0, "ground_truth": 92.5,
                             "ground_truth_metric": "cifar10_test_acc"}
    assert second["best"]["ground_truth"] is None
    assert (first["iterations"], first["evaluations"], first["llm_calls"]) == (3, 9, 6)
    assert second["prompts"] == {"designer": {"id": "designer@v1", "sha256": "d" * 64},
                                 "reflector": None}
    assert [r["best_score"] for r in second["progress"]] == [100.0, 120.0, 180.0, 180.0]
    assert first["status"] == second["status"] == "finished"
    differing = {d["setting"]: d["values"] for d in data["differing_settings"]}
    assert set(differing) == {"designer_prompt", "reflection"}
    assert differing["reflection"] == {"full": True, "no-refl": False}


def test_png_goes_to_compare_png_in_the_current_directory(two_runs, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = run_json(capsys, *map(str, two_runs))
    assert data["png"] == "compare.png"
    assert (work / "compare.png").read_bytes().startswith(PNG_MAGIC)
    assert not list(work.glob(".*.tmp"))  # written atomically: no temporary left


def test_incomplete_run_is_read_from_its_events(two_runs, tmp_path, capsys):
    killed = write_run(tmp_path / "killed", [90.0, 95.0, 130.0, 140.0, 160.0], finished=False)
    with (killed / "events.jsonl").open("a") as f:
        f.write('{"event": "population_upd')  # the line a kill -9 cut short
    data = run_json(capsys, str(two_runs[0]), str(killed), "--output", str(tmp_path / "c.png"))
    run = data["runs"][1]
    assert run["status"] == "incomplete" and run["stop_reason"] is None
    assert (run["iterations"], run["evaluations"], run["invalid_proposals"]) == (4, 10, 1)
    assert (run["llm_calls"], run["tokens"], run["cost_usd"]) == (8, 4000, 0.004)
    assert run["wall_seconds"] == 125.0
    assert run["best"]["score"] == 160.0 and run["best"]["arch"] == ARCHS[4]
    assert [r["iteration"] for r in run["progress"]] == [0, 1, 2, 3, 4]
    assert main([str(two_runs[0]), str(killed), "--output", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert table_line(out, "status").split()[-2:] == ["finished", "incomplete"]
    assert table_line(out, "iterations done").split()[-2:] == ["3", "4"]


def test_resumed_run_that_has_not_finished_again_is_incomplete(two_runs, tmp_path, capsys):
    """A resume after a finished run leaves the old summary.json until it finishes again."""
    resumed = write_run(tmp_path / "resumed", [100.0, 110.0, 120.0])
    config = json.loads((resumed / "config.json").read_text())
    later = [{"event": "run_started", "time": 3000.0, "resumed": True, "iteration": 2,
              "config": {**config, "iterations": 4}, "models": {}, "prompts": {}}]
    later += [{"event": "population_updated", "time": 3000.0 + it, "iteration": it,
               "best": {"arch": ARCHS[it], "score": 100.0 + 10 * it}, "mean_score": 90.0,
               "best_ground_truth": None, "evaluations": 6 + it, "invalid_proposals": 1,
               "fallbacks": 1, "tokens": 1000 * it, "cost_usd": 0.001 * it, "elapsed_s": 40.0}
              for it in (3, 4)]
    with (resumed / "events.jsonl").open("a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in later))
    run = run_json(capsys, str(two_runs[0]), str(resumed), "--output",
                   str(tmp_path / "c.png"))["runs"][1]
    assert run["status"] == "incomplete"
    assert (run["iterations"], run["best"]["score"], run["fallbacks"]) == (4, 140.0, 1)
    assert run["wall_seconds"] == 65.0 + 40.0  # the finished session's time plus this one's
    assert run["models"]["designer"] == f"{FAKE} (FAKE)"  # from the earlier summary


def test_run_killed_while_writing_its_reports_is_finished(two_runs, tmp_path, capsys):
    (two_runs[1] / "summary.json").unlink()  # run_finished was written, summary.json not yet
    run = run_json(capsys, *map(str, two_runs), "--output", str(tmp_path / "c.png"))["runs"][1]
    assert run["status"] == "finished" and run["stop_reason"] == "iterations"
    assert (run["iterations"], run["best"]["score"]) == (3, 180.0)


def test_calibration_and_cost_per_improvement_rows_appear_when_known(two_runs, tmp_path, capsys):
    summary_path = two_runs[0] / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(calibration={"spearman": 0.62, "n": 37, "informative": True,
                                "metric": "cifar10_test_acc"}, cost_per_improvement_usd=0.0125)
    summary_path.write_text(json.dumps(summary))
    argv = [*map(str, two_runs), "--output", str(tmp_path / "c.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Spearman 0.62 over 37 candidates" in table_line(out, "proxy calibration")
    assert table_line(out, "cost per improvement").split()[-2:] == ["$0.0125", "—"]
    runs = run_json(capsys, *argv)["runs"]
    assert runs[0]["calibration"]["spearman"] == 0.62 and runs[1]["calibration"] is None


def test_runs_with_the_same_directory_name_get_their_parent_in_the_header(tmp_path, capsys):
    first = write_run(tmp_path / "seed0" / "run", [1.0, 2.0])
    second = write_run(tmp_path / "seed1" / "run", [1.0, 3.0], seed=4)
    data = run_json(capsys, str(first), str(second), "--output", str(tmp_path / "c.png"))
    assert [r["name"] for r in data["runs"]] == ["seed0/run", "seed1/run"]
    assert data["differing_settings"] == [{"setting": "seed",
                                           "values": {"seed0/run": 3, "seed1/run": 4}}]


def test_forked_run_shows_its_parent_and_the_fork_point(two_runs, tmp_path, capsys):
    parent, _ = two_runs
    fork = write_run(tmp_path / "fork", [100.0, 150.0, 150.0, 170.0, 240.0],
                     forked_from={"run_dir": str(parent), "iteration": 2,
                                  "checkpoint_id": "1ef-abc"}, designer_prompt="designer@v1")
    (parent / "lineage.json").write_text(json.dumps(
        {"forked_from": None, "forks": [{"run_dir": str(fork), "iteration": 2, "time": 1.0}]}))
    png = tmp_path / "c.png"
    assert main([str(parent), str(fork), "--output", str(png)]) == 0
    out = capsys.readouterr().out
    assert table_line(out, "forked from").split()[-2:] == ["—", "full@2"]
    assert table_line(out, "forks").split()[-2:] == ["fork@2", "—"]
    assert png.read_bytes().startswith(PNG_MAGIC)
    runs = load_runs([parent, fork])
    figures = [run_figures(r) for r in runs]
    assert figures[1]["forked_from"]["checkpoint_id"] == "1ef-abc"
    fig = draw_comparison(figures)
    score_axes, truth_axes = fig.axes  # the parent has ground truth: a second panel
    for ax in (score_axes, truth_axes):  # the fork point is marked on both panels
        dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
        assert [tuple(line.get_xdata()) for line in dotted] == [(2, 2)]
    fork_curve = next(line for line in score_axes.get_lines() if line.get_label() == "fork")
    marker = next(line for line in score_axes.get_lines() if line.get_linestyle() == ":")
    assert marker.get_color() == fork_curve.get_color()
    assert marker.get_label() == "fork forked from full@2"
    assert score_axes.get_yscale() == "linear"  # params is not a log-scale proxy


def test_lineage_from_summary_alone_counts_as_forked(two_runs, tmp_path, capsys):
    fork = write_run(tmp_path / "fork2", [100.0, 150.0],
                     forked_from={"run_dir": str(two_runs[0]), "iteration": 1,
                                  "checkpoint_id": "x"})
    (fork / "lineage.json").unlink()
    run = run_json(capsys, str(two_runs[0]), str(fork), "--output",
                   str(tmp_path / "c.png"))["runs"][1]
    assert run["forked_from"]["iteration"] == 1


def test_log_scale_proxy_plots_on_a_log_axis_and_mixed_proxies_say_so(tmp_path):
    synflow_a = write_run(tmp_path / "syn-a", [1e20, 5e25, 3e30], proxy="synflow")
    synflow_b = write_run(tmp_path / "syn-b", [1e20, 1e22, 1e28], proxy="synflow")
    params = write_run(tmp_path / "params", [1e5, 2e5, 3e5], proxy="params")
    fig = draw_comparison([run_figures(r) for r in load_runs([synflow_a, synflow_b])])
    assert len(fig.axes) == 1  # no ground truth anywhere: one panel
    assert fig.axes[0].get_yscale() == "log"
    mixed = draw_comparison([run_figures(r) for r in load_runs([synflow_a, params])])
    assert mixed.axes[0].get_yscale() == "linear"
    assert "proxies differ: synflow, params" in mixed.axes[0].get_title()
    zero = write_run(tmp_path / "syn-zero", [0.0, 0.0, 1e10], proxy="synflow")
    with_zero = draw_comparison([run_figures(r) for r in load_runs([synflow_a, zero])])
    assert with_zero.axes[0].get_yscale() == "linear"  # a log axis would drop the zeros


def test_baseline_runs_compare_with_search_runs(two_runs, tmp_path, capsys):
    baseline = tmp_path / "rea-s0"
    baseline.mkdir()
    (baseline / "config.json").write_text(json.dumps(
        {"method": "rea", "space": "nb201", "dataset": "cifar10", "proxy": "params",
         "budget": 20, "population": 6, "seed": 3}))
    (baseline / "summary.json").write_text(json.dumps({
        "best": {"arch": ARCHS[5], "score": 250.0, "ground_truth": None},
        "iterations": 14, "evaluations": 20, "invalid_proposals": 0, "fallbacks": 0,
        "llm_calls": 0, "tokens": 0, "cost_usd": 0.0, "wall_seconds": 12.0,
        "stop_reason": "budget", "models": {}, "prompts": {}, "space": "nb201",
        "dataset": "cifar10", "proxy": "params", "method": "rea",
        "progress": [{"iteration": 0, "best_score": 100.0}, {"iteration": 14, "best_score": 250.0}],
    }))
    assert main([str(two_runs[0]), str(baseline), "--output", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert table_line(out, "method").split()[-2:] == ["rz-nas", "rea"]
    assert table_line(out, "designer / reflector model").rstrip().endswith("—")
    assert "≠ budget" in out and "≠ reflection" in out


def test_odd_values_and_a_run_with_nothing_scored_yet_still_compare(two_runs, tmp_path, capsys):
    odd = write_run(tmp_path / "odd", [1.0, 2.0])
    summary = json.loads((odd / "summary.json").read_text())
    summary.update(best=["not", "a", "dict"], iterations="three", tokens=True,
                   cost_usd=float("nan"), progress=[{"iteration": "x"}, 7, {"iteration": 1,
                                                                             "best_score": 2.0}])
    (odd / "summary.json").write_text(json.dumps(summary))
    (odd / "events.jsonl").unlink()  # the progress then comes from the summary alone
    starting = tmp_path / "starting"  # killed before its initial population was scored
    starting.mkdir()
    (starting / "config.json").write_text(json.dumps(SearchConfig(proxy="params").to_dict()))
    argv = [str(two_runs[0]), str(odd), str(starting), "--output", str(tmp_path / "c.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert table_line(out, "iterations done").split()[-3:] == ["3", "?", "?"]
    assert table_line(out, "tokens").split()[-3:] == ["3,000", "?", "?"]
    assert table_line(out, "status").split()[-3:] == ["finished", "finished", "incomplete"]
    runs = run_json(capsys, *argv)["runs"]
    assert runs[1]["best"]["score"] is None and runs[1]["cost_usd"] is None
    assert runs[1]["progress"] == [{"iteration": 1, "best_score": 2.0, "mean_score": None,
                                    "best_ground_truth": None}]
    assert runs[2]["progress"] == [] and runs[2]["iterations"] is None


def test_run_text_is_neither_markup_nor_terminal_control(two_runs, tmp_path, capsys):
    """Architectures of the torch-code space are LLM-written text: shown as is, never obeyed."""
    hostile = "[bold red]x[/bold red]\x1b[2J\x07 net"
    odd = write_run(tmp_path / "odd", [1.0, 2.0], archs=[hostile])
    assert main([str(two_runs[0]), str(odd), "--output", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "[bold red]x[/bold red]" in out
    assert "\x1b" not in out and "\x07" not in out


def test_secrets_never_reach_the_table_or_the_json(two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RZNAS_TEST_API_KEY", "s3cretvalue-from-env-123")
    leaky = write_run(tmp_path / "leaky", [1.0, 2.0],
                      ray_address="ray://user:s3cretvalue-from-env-123@host:10001",
                      truth="/data/sk-abcdefghijklmnopqrstuvwxyz012345.csv")
    argv = [str(two_runs[0]), str(leaky), "--output", str(tmp_path / "c.png")]
    assert main(argv) == 0
    table = capsys.readouterr().out
    data = run_json(capsys, *argv)
    for text in (table, json.dumps(data)):
        assert "s3cretvalue" not in text and "sk-abcdefghij" not in text
        assert "[REDACTED]" in text


def damaged(name: str, content: bytes):
    """Return a maker of a finished run whose ``name`` file holds ``content``."""
    def make(tmp_path: Path) -> Path:
        run = write_run(tmp_path / "damaged", [1.0, 2.0])
        (run / name).write_bytes(content)
        return run
    return make


def empty_dir(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def a_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("hi")
    return tmp_path / "notes.txt"


@pytest.mark.parametrize(("make_second", "expected"), [
    (lambda tmp: tmp / "missing", "does not exist"),
    (a_file, "is a file, not a run directory"),
    (empty_dir, "is not a run directory"),
    (damaged("config.json", b'{"space": "nb201", '), "config.json is not readable JSON"),
    (damaged("summary.json", b"[1, 2]"), "summary.json holds a JSON list, not an object"),
    (damaged("lineage.json", b"{forked"), "lineage.json is not readable JSON"),
    (damaged("summary.json", b"\xff\xfe\x00garbage"), "cannot read"),
])
def test_bad_run_directories_give_one_line_and_exit_2(two_runs, tmp_path, capsys, make_second,
                                                      expected):
    second = make_second(tmp_path)
    assert main([str(two_runs[0]), str(second), "--output", str(tmp_path / "c.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert str(second) in lines[0]
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    ([], "at least two run directories"),
    (["SAME"], "is named twice"),
    (["OTHER", "--output", "plot.pdf"], "must name a .png file"),
    (["OTHER", "--output", "nowhere/plot.png"], "does not exist"),
])
def test_usage_mistakes_give_one_line_and_exit_2(two_runs, tmp_path, monkeypatch, capsys, extra,
                                                 expected):
    monkeypatch.chdir(tmp_path)
    first, other = map(str, two_runs)
    argv = [first, *(other if a == "OTHER" else first if a == "SAME" else a for a in extra)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("error: ")
    assert expected in lines[0], lines


def test_unknown_flag_is_one_line_exit_2(two_runs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, two_runs), "--colour"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--colour" in lines[0]


def test_output_folder_gets_compare_png(two_runs, tmp_path, capsys):
    folder = tmp_path / "plots"
    folder.mkdir()
    assert run_json(capsys, *map(str, two_runs), "--output", str(folder))["png"] == str(
        folder / "compare.png")
    assert (folder / "compare.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_command_line_in_a_pipe(two_runs, tmp_path):
    """``python -m graphs.compare`` as a user runs it, output to a pipe (no terminal)."""
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no COLUMNS, no secrets
    done = subprocess.run([sys.executable, "-m", "graphs.compare", *map(str, two_runs),
                           "--output", str(tmp_path / "pipe.png")], cwd=ROOT, env=env_free,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "≠ reflection" in done.stdout and "\x1b" not in done.stdout
    assert done.stdout.rstrip().endswith(f"plot: {tmp_path / 'pipe.png'}")
    reader_gone = subprocess.Popen([sys.executable, "-m", "graphs.compare", *map(str, two_runs),
                                    "--output", str(tmp_path / "gone.png")], cwd=ROOT,
                                   env=env_free, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()  # as `| head` does once it has its lines: every write fails
    assert reader_gone.wait(timeout=120) == 0
    assert reader_gone.stderr.read() == b""
    reader_gone.stderr.close()
    assert (tmp_path / "gone.png").read_bytes().startswith(PNG_MAGIC)
    bad = subprocess.run([sys.executable, "-m", "graphs.compare", str(two_runs[0])], cwd=ROOT,
                         env=env_free, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.splitlines()) == 1


def scripted_model(tmp_path: Path) -> str:
    """A fake model whose Designer cycles over valid nb201 edits and whose Reflector critiques."""
    edges, ops = ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"], ["nor_conv_3x3", "skip_connect",
                                                                    "nor_conv_1x1", "avg_pool_3x3"]
    designer = [json.dumps({"edge": edges[i % 6], "op": ops[(i // 6 + i) % 4],
                            "rationale": f"edit {i}"}) for i in range(40)]
    reflector = [json.dumps({"what_changed": f"change {i}", "why": "more weights",
                             "suggestion": "widen edge 3<-0"}) for i in range(20)]
    return write_script(tmp_path / "script.json", designer, reflector)


@pytest.mark.slow
def test_real_run_and_its_fork_compare(tmp_path, capsys):
    """Runs written by the search itself (scripted models): a run and a fork of it without the
    Reflector; the comparison agrees with their summaries and lineage."""
    from graphs.fork import ForkPoint
    from graphs.runner import RunExtras, run_search

    model = scripted_model(tmp_path)
    config = SearchConfig(space="nb201", proxy="params", iterations=2, population=4,
                          designer_model=model, reflector_model=model, batch_size=8,
                          eval_timeout_s=60, seed=1)
    source, fork = tmp_path / "source", tmp_path / "fork"
    run_search(config, source, resume=False, trace_mode="quiet")
    forked = SearchConfig.from_dict({**config.to_dict(), "reflection": False})
    run_search(forked, fork, resume=False, trace_mode="quiet",
               extras=RunExtras(fork=ForkPoint(source, 1)))
    capsys.readouterr()  # the runs' own notices
    data = run_json(capsys, str(source), str(fork), "--output", str(tmp_path / "c.png"))
    differing = {d["setting"]: d["values"] for d in data["differing_settings"]}
    assert differing["reflection"] == {"source": True, "fork": False}
    for run, run_dir in zip(data["runs"], (source, fork)):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert run["status"] == "finished"
        for key in ("iterations", "evaluations", "invalid_proposals", "llm_calls", "tokens"):
            assert run[key] == summary[key], key
        assert run["best"]["score"] == summary["best"]["score"]
        assert [r["iteration"] for r in run["progress"]] == list(range(summary["iterations"] + 1))
    source_run, fork_run = data["runs"]
    assert fork_run["forked_from"]["iteration"] == 1
    assert Path(fork_run["forked_from"]["run_dir"]).name == "source"
    assert [Path(f["run_dir"]).name for f in source_run["forks"]] == ["fork"]
    assert fork_run["prompts"]["reflector"] is None
    assert main([str(source), str(fork), "--output", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert table_line(out, "forked from").split()[-2:] == ["—", "source@1"]
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
