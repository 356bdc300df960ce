"""``python -m graphs.search --replay BUNDLE --output DIR``: re-run a packed run offline.

Real searches (nb201, ``--proxy params``, scripted fake models) are packed with
``python -m graphs.bundle`` and replayed through the CLI: a plain run, a fork and an interactive
run reproduce their summaries; a changed search reports the first divergent step.

Run: .venv/bin/python -m pytest -q tests/test_replay.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from graphs import bundle, nodes
from graphs.cli import main
from tests.search_helpers import read_jsonl, repeating_script

pytestmark = pytest.mark.slow
WIDE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SAME = ("best", "evaluations", "invalid_proposals", "fallbacks", "iterations", "progress", "pareto")


def _search(model: str, run_dir: Path, *extra: str) -> dict:
    argv = ["--designer-model", model, "--reflector-model", model, "--proxy", "params",
            "--population", "4", "--batch-size", "8", "--seed", "3", "--iterations", "3",
            "--output", str(run_dir), "--quiet", *extra]
    assert main(argv) == 0
    return json.loads((run_dir / "summary.json").read_text())


def _pack_and_replay(run_dir: Path, tmp_path: Path, name: str) -> tuple[int, Path]:
    packed = bundle.pack(run_dir, tmp_path / f"{name}.tar.gz")
    out = tmp_path / f"{name}-replay"
    return main(["--replay", str(packed), "--output", str(out), "--quiet"]), out


@pytest.fixture()
def model(tmp_path) -> str:
    return repeating_script(tmp_path / "script.json", 0.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict, Path]:
    """One finished run (its fake script deleted afterwards), its summary and its bundle."""
    root = tmp_path_factory.mktemp("base")
    script = root / "script.json"
    summary = _search(repeating_script(script, 0.0), root / "run")
    script.unlink()  # offline: a replay must not need the script (or any model) any more
    return root / "run", summary, bundle.pack(root / "run", root / "run.tar.gz")


def test_a_run_replays_exactly_offline(tmp_path, base, capsys):
    run_dir, original, packed = base
    out = tmp_path / "run-replay"
    code = main(["--replay", str(packed), "--output", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    replayed = json.loads((out / "summary.json").read_text())
    assert {k: replayed[k] for k in SAME} == {k: original[k] for k in SAME}
    assert replayed["replayed_from"].endswith("run.tar.gz")
    verdict = json.loads((out / "replay.json").read_text())
    assert verdict["reproduced"] and verdict["llm_cache_misses"] == 0
    assert "replay reproduced" in capsys.readouterr().out
    calls = [e for e in read_jsonl(out / "events.jsonl") if e["event"] == "llm_call"]
    assert calls and all(e["cached"] for e in calls)


def test_a_fork_replays_from_its_fork_point(tmp_path, model, capsys):
    _search(model, tmp_path / "run")
    fork = tmp_path / "fork"
    assert main(["--fork", f"{tmp_path / 'run'}@1", "--no-reflection", "--output", str(fork),
                 "--quiet"]) == 0
    assert (fork / "fork_state.json").is_file()
    original = json.loads((fork / "summary.json").read_text())
    code, out = _pack_and_replay(fork, tmp_path, "fork")
    assert code == 0, capsys.readouterr().err
    replayed = json.loads((out / "summary.json").read_text())
    assert {k: replayed[k] for k in SAME} == {k: original[k] for k in SAME}
    assert replayed["forked_from"] == original["forked_from"]


def test_an_interactive_run_replays_the_human_answers(tmp_path, model, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"h more convolutions\ne {WIDE}\n\n"))
    original = _search(model, tmp_path / "run", "--interactive")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # nobody at the keyboard now
    code, out = _pack_and_replay(tmp_path / "run", tmp_path, "run")
    assert code == 0, capsys.readouterr().err
    replayed = json.loads((out / "summary.json").read_text())
    assert replayed["best"]["arch"] == original["best"]["arch"] == WIDE
    steers = [(e["action"], e["text"]) for e in read_jsonl(out / "events.jsonl")
              if e["event"] == "human_steer"]
    assert steers[:2] == [("hint", "more convolutions"), ("edit", WIDE)]


def test_a_changed_search_reports_the_first_divergent_step(tmp_path, base, monkeypatch, capsys):
    packed = base[2]
    real_rng = nodes._rng

    def other_parents(config, *parts):  # as if the parent choice had changed in the code
        return real_rng(config, *parts, "changed") if parts[0] == "parent" else real_rng(config, *parts)

    monkeypatch.setattr("graphs.nodes._rng", other_parents)
    out = tmp_path / "replay"
    assert main(["--replay", str(packed), "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("replay diverged: iteration ") and err.count("\n") == 1
    verdict = json.loads((out / "replay.json").read_text())
    assert verdict["reproduced"] is False and verdict["first_divergence"] in err


def test_replay_mistakes_are_one_line(tmp_path, base, capsys):
    run_dir, _, packed = base
    cases = [
        (["--replay", str(packed)], "--output"),
        (["--replay", str(packed), "--output", str(tmp_path / "o"), "--iterations", "9"],
         "drop: iterations"),
        (["--replay", str(tmp_path / "missing.tar.gz"), "--output", str(tmp_path / "o")],
         "does not exist"),
        (["--replay", str(packed), "--output", str(run_dir)], "already holds a run"),
        (["--replay", str(packed), "--resume", str(run_dir)], "exclude each other"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
