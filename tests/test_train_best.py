"""``python -m graphs.search --train-best EPOCHS --data DIR``: train the winner after the search."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from graphs.cli import main
from graphs.runner import CONFIG_FILE
from graphs.train_best import training_dir
from tests.test_graph import designer_edits, reflections
from tests.search_helpers import write_script
from tools.cifar import write_tiny_cifar


@pytest.fixture
def model(tmp_path: Path) -> str:
    return write_script(tmp_path / "script.json", designer_edits(40), reflections(10))


def search_args(model: str, run_dir: Path, *extra: str) -> list[str]:
    return ["--designer-model", model, "--reflector-model", model, "--proxy", "params",
            "--iterations", "2", "--population", "3", "--batch-size", "8", "--seed", "3",
            "--quiet", "--output", str(run_dir), *extra]


@pytest.mark.parametrize(("extra", "named"), [
    (["--train-best", "2"], "--data DIR"),
    (["--train-best", "0", "--data", "."], "--train-best"),
    (["--data", "."], "--train-best EPOCHS"),
    (["--train-best", "1", "--data", "NOWHERE"], "cifar-10-batches-py"),
    (["--train-best", "1", "--data", ".", "--dataset", "ImageNet16-120"], "CIFAR-10/100"),
])
def test_bad_train_requests_are_refused_before_the_search(tmp_path, capsys, model, extra, named):
    run_dir = tmp_path / "run"
    argv = [a if a != "NOWHERE" else str(tmp_path / "nowhere") for a in extra]
    assert main(search_args(model, run_dir, *argv)) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and err.count("\n") == 1
    assert not (run_dir / CONFIG_FILE).exists()  # refused before the run started


@pytest.mark.slow  # a fake-model search, then two epochs of the full NB201 network on 100 images
def test_best_is_trained_reported_and_reused_on_resume(tmp_path, model):
    data = tmp_path / "data"
    write_tiny_cifar(data, "cifar10", train_per_class=8, test_per_class=3, seed=1)
    run_dir = tmp_path / "run"
    # The search first, then training added to the finished run by a resume.
    assert main(search_args(model, run_dir)) == 0
    assert main(["--resume", str(run_dir), "--train-best", "2", "--data", str(data), "--quiet"]) == 0

    summary = json.loads((run_dir / "summary.json").read_text())
    trained = summary["trained"]
    folder = training_dir(run_dir, summary["best"]["arch"], 2)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert trained["output"] == str(folder) and trained["epochs"] == metrics["epochs"] == 2
    assert trained["test_accuracy"] == metrics["test_accuracy"]
    assert 0 <= trained["test_accuracy"] <= 100 and trained["params"] == metrics["params"] > 0
    assert metrics["arch"] == summary["best"]["arch"] and metrics["space"] == "nb201"
    assert (folder / "learning_curve.png").is_file()
    assert "trained (2 epochs, cifar10)" in (run_dir / "report.md").read_text()

    # The resume's flags were saved: a plain resume keeps --train-best and reuses the result.
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    assert saved["train_best"] == 2 and saved["train_data"] == str(data)
    stamp = (folder / "metrics.json").stat().st_mtime_ns
    os.utime(run_dir / "summary.json", ns=(0, 0))
    assert main(["--resume", str(run_dir), "--quiet"]) == 0
    assert (folder / "metrics.json").stat().st_mtime_ns == stamp  # not trained again
    assert json.loads((run_dir / "summary.json").read_text())["trained"] == trained


@pytest.mark.slow
def test_a_failed_training_exits_1_and_says_how_to_retry(tmp_path, capsys, model):
    data = tmp_path / "data"
    write_tiny_cifar(data, "cifar10", train_per_class=2, test_per_class=1, seed=1)
    run_dir = tmp_path / "run"
    assert main(search_args(model, run_dir)) == 0
    batch = data / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:50])  # cut after the pre-search check passed
    capsys.readouterr()
    code = main(["--resume", str(run_dir), "--train-best", "1", "--data", str(data), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and f"--resume {run_dir}" in err and "Traceback" not in err
    log = next(run_dir.glob("train-*.log"))
    assert "data_batch_1" in log.read_text()  # the trainer's own message says which file


@pytest.mark.slow  # a fake-model search, then training stopped by SIGTERM after its first epoch
def test_sigterm_during_training_stops_the_trainer_and_keeps_its_checkpoint(tmp_path, model):
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "data"
    write_tiny_cifar(data, "cifar10", train_per_class=2, test_per_class=1, seed=1)
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "graphs.search", *search_args(model, run_dir, "--train-best",
                                                                "500", "--data", str(data))]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    checkpoints: list[Path] = []
    while not checkpoints:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no training checkpoint appeared"
        time.sleep(0.2)
        checkpoints = list(run_dir.glob("train-500ep-*/checkpoint.pt"))
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert f"--resume {run_dir}" in output and "Traceback" not in output
    folder = checkpoints[0].parent
    trainers = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True)
    assert trainers.stdout.strip() == ""  # no orphaned trainer still writing into the run
    assert not (folder / "metrics.json").exists()
    assert "interrupted" in (folder.with_suffix(".log")).read_text()
