"""benchmarks/prompt_replay.py: recorded Designer requests, replayed with several prompts."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest

from agents.designer import DesignRequest
from agents.models import load_chat_model
from graphs.cli import main as search_main
from graphs.runner import build_designer, load_run_config
from prompts import load_prompt
from tests.search_helpers import ROOT, read_jsonl, repeating_script, write_script
from tools.proxies import get_proxy
from tools.spaces import get_space

sys.path.insert(0, str(ROOT / "benchmarks"))
import prompt_replay  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 3-iteration nb201 search by a fake model that always asks for edge 3<-0 = nor_conv_3x3."""
    tmp = tmp_path_factory.mktemp("replay")
    model = repeating_script(tmp / "script.json", 0.0)
    run = tmp / "run"
    assert search_main(["--designer-model", model, "--reflector-model", model, "--proxy", "params",
                        "--population", "4", "--iterations", "3", "--batch-size", "8",
                        "--seed", "1", "--output", str(run), "--quiet"]) == 0
    return run


def test_the_search_records_requests_that_render_the_messages_it_sent(run_dir):
    config = load_run_config(run_dir)
    space, proxy = get_space(config.space), get_proxy(config.proxy)
    model = load_chat_model(config.designer_model)
    rows = [r for r in read_jsonl(run_dir / "messages.jsonl") if r["role"] == "designer"]
    assert rows and all("request" in r for r in rows)
    assert all(r["role"] != "reflector" or "request" not in r
               for r in read_jsonl(run_dir / "messages.jsonl"))
    assert not any("request" in e for e in read_jsonl(run_dir / "events.jsonl"))
    for row in rows:
        designer = build_designer(config, model, space, proxy, load_prompt(row["prompt_id"]))
        assert designer.messages(DesignRequest(**row["request"])) == row["messages"]


def _copy_run(run_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "checkpoints.sqlite", "events.jsonl", "messages.jsonl"):
        (target / name).write_bytes((run_dir / name).read_bytes())
    return target


def test_replay_asks_every_prompt_the_same_steps(run_dir, tmp_path, capsys):
    killed = _copy_run(run_dir, tmp_path / "killed")
    with (killed / "messages.jsonl").open("a") as f:
        f.write('{"role": "designer", "attempt": 1, "iter')  # a line cut by a kill
    # Same answer for every call, so both prompts get the same child at every step; edge 3<-0
    # set to the costliest op raises the params count whenever the edit is accepted.
    model = write_script(tmp_path / "replay.json",
                         {"replies": [json.dumps({"edge": "3<-0", "op": "nor_conv_3x3",
                                                  "rationale": "more weights"})], "repeat": True},
                         {"replies": ["{}"], "repeat": True})
    code = prompt_replay.main([str(killed), "--prompts", "designer@v5,designer@v6",
                               "--model", model, "--json"])
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    steps = sum(r["role"] == "designer" and r["attempt"] == 1
                for r in read_jsonl(run_dir / "messages.jsonl"))
    assert figures["steps"] == steps == 3
    v5, v6 = figures["prompts"]["designer@v5"], figures["prompts"]["designer@v6"]
    assert v5["steps"] == v6["steps"] == 3
    assert 1 <= v5["accepted"] == v6["accepted"] == v5["better_than_parent"]
    assert v5["mean_score_change"] > 0 and v5["mean_accuracy_change"] is None
    assert figures["same_child"] == {"designer@v5 / designer@v6": v5["accepted"]}
    assert "(FAKE)" in figures["model"] or "fake" in figures["model"]


def test_replay_of_a_run_without_requests_says_so(run_dir, tmp_path, capsys):
    old = _copy_run(run_dir, tmp_path / "old")
    rows = read_jsonl(run_dir / "messages.jsonl")
    (old / "messages.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "request"}) + "\n" for r in rows))
    assert prompt_replay.main([str(old), "--prompts", "designer@v6", "--model", "fake:x"]) == 2
    err = capsys.readouterr().err
    assert "does not record the Designer's requests" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, words", [
    (["--prompts", "designer@v6"], "not a run directory"),
    (["--prompts", "designer@v99"], "designer@v99"),
    (["--prompts", ","], "at least one prompt"),
])
def test_replay_usage_errors_are_one_line(run_dir, tmp_path, capsys, argv, words):
    target = tmp_path / "nothing" if words == "not a run directory" else run_dir
    with pytest.raises(SystemExit) if words == "at least one prompt" else nullcontext():
        code = prompt_replay.main([str(target), *argv, "--model", "fake:x"])
        assert code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
