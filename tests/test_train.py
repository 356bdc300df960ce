"""``python -m tools.train``: final training on tiny CIFAR-format data, resume, user mistakes.

The networks are tiny (``--channels``/``--layers``) and the datasets a few hundred synthetic
images written in the official python-batch layout, so every run takes about a second. Runs that
must be separate processes (torch-code, which confines its process with Landlock; the SIGKILL and
Ctrl-C cases) use subprocesses; the rest drive ``main()`` in-process.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import pickle
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tools.cifar import write_tiny_cifar
from tools.spaces import space_names
from tools.spaces.torch_code import render_template
from tools.train import TrainConfig, main, train

ROOT = Path(__file__).resolve().parents[1]
NB201 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
         "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
OTHER_NB201 = ("|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+"
               "|nor_conv_3x3~0|none~1|avg_pool_3x3~2|")
ZEN = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"
QUICK = ["--threads", "1", "--plain", "--batch-size", "32"]
NB201_TINY = ["--space", "nb201", "--arch", NB201, "--channels", "4", "--layers", "1"]
METRIC_KEYS = {
    "space", "arch", "dataset", "epochs", "test_accuracy", "best_test_accuracy", "best_epoch",
    "train_loss", "train_accuracy", "test_accuracy_per_epoch", "params", "flops", "wall_time_s",
    "device", "images_per_s", "recipe", "history", "confinement",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A tiny CIFAR-10 (20 images per class) and CIFAR-100 (3 per class), official layouts."""
    root = tmp_path_factory.mktemp("data")
    write_tiny_cifar(root / "c10", "cifar10", train_per_class=20, test_per_class=5, seed=0)
    write_tiny_cifar(root / "c100", "cifar100", train_per_class=3, test_per_class=1, seed=0)
    return {"cifar10": root / "c10", "cifar100": root / "c100"}


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; argparse's own errors arrive as SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(capsys, argv: list[str], *fragments: str) -> str:
    """Exit 2, one stderr line starting ``error:`` that names the problem, no traceback."""
    code, out, err = run_main(capsys, argv)
    lines = err.strip().splitlines()
    assert code == 2, (argv, code, err, out[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_trained(output: Path, epochs: int, space: str, dataset: str) -> dict:
    """metrics.json complete and consistent, the loss fell, the learning curve is a PNG."""
    metrics = json.loads((output / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics), METRIC_KEYS - set(metrics)
    assert (metrics["space"], metrics["dataset"], metrics["epochs"]) == (space, dataset, epochs)
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, epochs + 1))
    assert len(metrics["train_loss"]) == len(metrics["train_accuracy"]) == epochs
    if epochs > 1:
        assert metrics["train_loss"][-1] < metrics["train_loss"][0], metrics["train_loss"]
    assert metrics["test_accuracy"] == metrics["history"][-1]["test_accuracy"]
    assert metrics["best_test_accuracy"] == max(metrics["test_accuracy_per_epoch"])
    assert metrics["params"] > 0 and metrics["flops"] > 0 and metrics["images_per_s"] > 0
    assert metrics["wall_time_s"] > 0 and metrics["recipe"]["epochs"] == epochs
    png = (output / "learning_curve.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5_000
    assert (output / "checkpoint.pt").is_file()
    return metrics


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none); x86_64 and arm64 syscall numbers."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(0, libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


def start_cli(argv: list[str], log: Path) -> subprocess.Popen:
    # A suite started in the background by a script (`... &` without job control) inherits
    # SIGINT ignored, and Python keeps it so; the CLI would then never see the test's Ctrl-C.
    # A user's Ctrl-C reaches a CLI started from a terminal, so the child starts as such.
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "tools.train", *argv], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll until ``path`` exists; fail if the process ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited {proc.returncode} first:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def processes():
    """Subprocesses a test started; a failing test leaves none running."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A finished one-epoch nb201 run, copied by the tests that need a checkpoint."""
    output = tmp_path_factory.mktemp("finished") / "run"
    argv = [*NB201_TINY, "--data", str(data["cifar10"]), "--epochs", "1", "--output", str(output),
            *QUICK]
    assert main(argv) == 0
    return output


# -- training each space --------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_nb201_trains_two_epochs(capsys, data, tmp_path: Path, dataset: str) -> None:
    output = tmp_path / "run"
    code, out, err = run_main(capsys, [*NB201_TINY, "--dataset", dataset, "--data",
                                       str(data[dataset]), "--epochs", "2", "--output",
                                       str(output), *QUICK])
    assert code == 0, err
    metrics = assert_trained(output, 2, "nb201", dataset)
    assert metrics["recipe"]["channels"] == 4 and metrics["recipe"]["layers"] == 1
    assert metrics["recipe"]["weight_decay"] == 5e-4 and metrics["recipe"]["lr"] == 0.1
    # Not a terminal: plain lines, the device and the network's size first, one line per epoch.
    assert "\x1b[" not in out
    assert "device: cpu (1 thread)" in out and "M params" in out and "FLOPs" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == [
        "1/2", "2/2"]
    assert "img/s" in out and "ETA" in out


def test_zen_macro_trains_through_the_function_with_a_progress_bar(data, tmp_path: Path) -> None:
    from rich.console import Console

    seen: list[dict] = []
    terminal = Console(file=io.StringIO(), force_terminal=True, width=160)
    config = TrainConfig(space="zen-macro", arch=ZEN, data=data["cifar10"], epochs=2,
                         batch_size=16, threads=1, output=tmp_path / "run")
    metrics = train(config, console=terminal, on_epoch=seen.append)
    assert [e["epoch"] for e in seen] == [1, 2]
    shown = terminal.file.getvalue()
    assert "\x1b[" in shown and "10/13" in shown  # the live bar: 200 images, 13 batches
    assert "img/s" in shown and "ETA" in shown
    assert metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert_trained(tmp_path / "run", 2, "zen-macro", "cifar10")


def test_darts_trains_with_drop_path_and_the_auxiliary_head(capsys, data, tmp_path: Path) -> None:
    if "darts" not in space_names():
        pytest.skip("the darts search space is not registered in this checkout yet")
    from tools.spaces import get_space

    arch = get_space("darts").sample(random.Random(0))
    output = tmp_path / "run"
    code, out, err = run_main(capsys, ["--space", "darts", "--arch", arch, "--channels", "4",
                                       "--layers", "3", "--data", str(data["cifar10"]),
                                       "--epochs", "2", "--output", str(output), *QUICK])
    assert code == 0, err
    metrics = assert_trained(output, 2, "darts", "cifar10")
    recipe = metrics["recipe"]
    assert (recipe["auxiliary_weight"], recipe["drop_path"], recipe["grad_clip"]) == (0.4, 0.2, 5)
    assert recipe["cutout"] and recipe["weight_decay"] == 3e-4 and recipe["lr"] == 0.025
    assert [h["drop_path_prob"] for h in metrics["history"]] == [0.0, 0.1]  # 0.2 * epoch / 2
    assert metrics["params_with_aux"] > metrics["params"]  # the head is left out of "params"
    assert "auxiliary head" in out


@pytest.mark.slow
def test_torch_code_trains_in_a_confined_process(data, tmp_path: Path) -> None:
    source = tmp_path / "net.py"
    source.write_text(render_template("plain", widths=(8, 8, 16), depths=(1, 1, 1)))
    output = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "tools.train", "--space", "torch-code", "--arch", f"@{source}",
         "--data", str(data["cifar10"]), "--epochs", "2", "--output", str(output), *QUICK],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = assert_trained(output, 2, "torch-code", "cifar10")
    line = next(x for x in result.stdout.splitlines() if x.startswith("confinement: "))
    if landlock_abi() >= 1:
        assert line.startswith("confinement: Landlock active") and str(output) in line
        assert metrics["confinement"].startswith("Landlock active")
    else:
        assert "not available" in line


@pytest.mark.slow
def test_confinement_refuses_reads_and_writes_outside(data, tmp_path: Path) -> None:
    if landlock_abi() < 1:
        pytest.skip("this kernel has no Landlock")
    output, secret = tmp_path / "out", tmp_path / "secret.txt"
    output.mkdir()
    secret.write_text("API key")
    script = (
        "import os, sys, torch\n"
        "from pathlib import Path\n"
        "from tools.train import confine\n"
        "out, data, secret = map(Path, sys.argv[1:4])\n"
        "from tools.train import drop_secret_env\n"
        "dropped = drop_secret_env()\n"
        "print('key dropped', 'OPENAI_API_KEY' in dropped, 'OPENAI_API_KEY' in os.environ)\n"
        "print('confined', confine(out, data))\n"
        "(out / 'inside.txt').write_text('ok')\n"
        "print('data readable', any(data.rglob('test_batch')))\n"
        "attempts = {\n"
        "    'write outside': lambda: (out.parent / 'escape.txt').write_text('x'),\n"
        "    'torch.save outside': lambda: torch.save(torch.zeros(1), out.parent / 't.pt'),\n"
        "    'read outside': lambda: secret.read_text(),\n"
        "    'read /etc/passwd': lambda: open('/etc/passwd').read(),\n"
        "}\n"
        "for what, attempt in attempts.items():\n"
        "    try:\n"
        "        attempt()\n"
        "        print(what, 'ALLOWED')\n"
        "    except Exception as exc:\n"
        "        print(what, 'refused', type(exc).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(output), str(data["cifar10"]),
                             str(secret)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OPENAI_API_KEY": "sk-test-not-real"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[:3] == ["key dropped True False", "confined True", "data readable True"], (
        result.stdout)
    assert all(" refused " in line for line in lines[3:]) and len(lines) == 7, result.stdout
    assert (output / "inside.txt").exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "t.pt").exists()


# -- checkpoints, kill and resume -----------------------------------------------------------------


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_same_run(capsys, data, tmp_path: Path,
                                                     processes) -> None:
    common = [*NB201_TINY, "--data", str(data["cifar10"]), "--epochs", "5", "--threads", "1",
              "--plain", "--batch-size", "16"]
    killed, log = tmp_path / "killed", tmp_path / "killed.log"
    processes.append(start_cli([*common, "--output", str(killed)], log))
    wait_for(killed / "checkpoint.pt", processes[0], log)
    processes[0].kill()
    assert processes[0].wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    saved = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert 1 <= saved["epoch"] < 5 and len(saved["history"]) == saved["epoch"]
    assert not (killed / "metrics.json").exists()

    code, out, err = run_main(capsys, [*common, "--output", str(killed), "--resume"])
    assert code == 0, err
    assert f"resuming after epoch {saved['epoch']} of 5" in out
    metrics = assert_trained(killed, 5, "nb201", "cifar10")
    assert metrics["history"][: saved["epoch"]] == saved["history"]  # earlier epochs kept as-is

    # Model, optimizer, schedule and every random stream were restored: same as never stopping.
    code, _, err = run_main(capsys, [*common, "--output", str(tmp_path / "straight")])
    assert code == 0, err
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    for resumed, uninterrupted in zip(metrics["history"], straight["history"], strict=True):
        for key in ("lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_epoch_and_says_how_to_resume(data, tmp_path: Path,
                                                           processes) -> None:
    output, log = tmp_path / "run", tmp_path / "run.log"
    processes.append(start_cli([*NB201_TINY, "--data", str(data["cifar10"]), "--epochs", "8",
                                "--output", str(output), "--threads", "1", "--plain",
                                "--batch-size", "16"], log))
    wait_for(output / "checkpoint.pt", processes[0], log)
    processes[0].send_signal(signal.SIGINT)
    assert processes[0].wait(timeout=60) == 130
    text = log.read_text()
    assert "Traceback" not in text
    line = next(x for x in text.splitlines() if x.startswith("interrupted: "))
    epochs = torch.load(output / "checkpoint.pt", weights_only=True)["epoch"]
    assert f"holds {epochs} of 8 epochs" in line and line.endswith("--resume")
    assert "python -m tools.train " in line and f"--output {output}" in line


def test_a_finished_run_resumes_to_nothing(capsys, data, finished: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    shutil.copytree(finished, output)
    code, out, err = run_main(capsys, [*NB201_TINY, "--data", str(data["cifar10"]),
                                       "--output", str(output), "--resume", *QUICK])
    assert code == 0, err
    assert "nothing to train" in out
    assert_trained(output, 1, "nb201", "cifar10")


# -- user mistakes: one line, exit 2, no traceback ------------------------------------------------


def test_data_mistakes(capsys, data, tmp_path: Path) -> None:
    base = [*NB201_TINY, "--epochs", "1", *QUICK]
    assert_usage_error(capsys, [*base, "--data", str(tmp_path / "missing"), "--output",
                                str(tmp_path / "o1")], "does not exist",
                       "cifar-10-batches-py/{data_batch_1..data_batch_5,test_batch}",
                       "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    assert not (tmp_path / "o1").exists()  # nothing created for a run that cannot start
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "cifar10.zip").write_bytes(b"PK")
    assert_usage_error(capsys, [*base, "--data", str(tmp_path / "wrong"), "--output",
                                str(tmp_path / "o2")], "found cifar10.zip", "extract it into")
    assert_usage_error(capsys, [*base, "--data", str(data["cifar10"]), "--dataset", "cifar100",
                                "--output", str(tmp_path / "o3")], "--dataset cifar10",
                       "cifar-100-python.tar.gz")
    assert_usage_error(capsys, [*base, "--data", str(data["cifar10"]), "--dataset", "svhn",
                                "--output", str(tmp_path / "o4")], "cifar10 or cifar100")


def test_a_malformed_batch_is_a_usage_error(capsys, tmp_path: Path) -> None:
    folder = write_tiny_cifar(tmp_path / "data", "cifar10", 1, 1)
    (folder / "data_batch_4").write_bytes(b"\x80\x04garbage")
    assert_usage_error(capsys, [*NB201_TINY, "--data", str(tmp_path / "data"), "--output",
                                str(tmp_path / "run"), *QUICK], "data_batch_4",
                       "not a CIFAR python batch")


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_data_pickle_is_refused(capsys, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = write_tiny_cifar(tmp_path / "data", "cifar10", 1, 1)
    (folder / "test_batch").write_bytes(pickle.dumps(_Hostile(marker)))
    assert_usage_error(capsys, [*NB201_TINY, "--data", str(tmp_path / "data"), "--output",
                                str(tmp_path / "run"), *QUICK], "refusing", "system")
    assert not marker.exists()


def test_a_hostile_checkpoint_is_refused(capsys, data, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    output = tmp_path / "run"
    output.mkdir()
    (output / "checkpoint.pt").write_bytes(pickle.dumps(_Hostile(marker)))
    assert_usage_error(capsys, [*NB201_TINY, "--data", str(data["cifar10"]), "--output",
                                str(output), "--resume", *QUICK], "cannot load",
                       "training checkpoint")
    assert not marker.exists()
    torch.save({"model": {}}, output / "checkpoint.pt")  # a torch file, but not ours
    assert_usage_error(capsys, [*NB201_TINY, "--data", str(data["cifar10"]), "--output",
                                str(output), "--resume", *QUICK], "not a python -m tools.train")


@pytest.mark.parametrize("argv, fragments", [
    (["--space", "nb201", "--arch", "|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
     ["not a valid nb201 architecture", "conv_9x9"]),
    (["--space", "nb201", "--arch", "@/no/such/file.txt"], ["cannot read /no/such/file.txt"]),
    (["--space", "zen-macro", "--arch", ZEN, "--channels", "8"],
     ["--channels applies to the darts and nb201"]),
    (["--space", "nb201", "--arch", NB201, "--epochs", "0"], ["--epochs must be at least 1"]),
    (["--space", "nb201", "--arch", NB201, "--momentum", "1.5"], ["--momentum must be in [0, 1)"]),
    (["--space", "nb201", "--arch", NB201, "--drop-path", "0.2", "--channels", "4", "--layers",
      "1"], ["--drop-path needs a network with drop-path"]),
    (["--space", "nb201", "--arch", NB201, "--auxiliary-weight", "0.4", "--channels", "4",
      "--layers", "1"], ["--auxiliary-weight needs a network with an auxiliary head"]),
    (["--space", "nas-bench-301", "--arch", NB201], ["unknown search space", "nb201"]),
    (["--space", "nb201", "--arch", NB201, "--device", "tpu"], ["--device", "auto, cpu or cuda"]),
    (["--space", "nb201", "--arch", NB201, "--resume"], ["--resume needs --output"]),
    (["--space", "nb201", "--arch", NB201, "--epochs", "many"], ["--epochs", "invalid int"]),
    (["--arch", NB201], ["--space"]),
])
def test_flag_and_arch_mistakes(capsys, data, tmp_path: Path, argv: list[str],
                                fragments: list[str]) -> None:
    output = [] if "--resume" in argv else ["--output", str(tmp_path / "run")]
    assert_usage_error(capsys, [*argv, "--data", str(data["cifar10"]), *output, *QUICK],
                       *fragments)


def test_torch_code_that_fails_the_static_check_never_runs(capsys, data, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    source = tmp_path / "net.py"
    source.write_text(f"import os\nos.system('touch {marker}')\n"
                      + render_template("plain", widths=(8, 8, 8)))
    assert_usage_error(capsys, ["--space", "torch-code", "--arch", f"@{source}", "--data",
                                str(data["cifar10"]), "--output", str(tmp_path / "run"), *QUICK],
                       "not a valid torch-code architecture", "os")
    assert not marker.exists()


def test_checkpoint_mistakes(capsys, data, finished: Path, tmp_path: Path) -> None:
    output = tmp_path / "run"
    shutil.copytree(finished, output)
    base = ["--data", str(data["cifar10"]), "--output", str(output), *QUICK]
    before = (output / "checkpoint.pt").read_bytes()
    assert_usage_error(capsys, [*NB201_TINY, *base], "already holds a checkpoint", "--resume",
                       "another --output")
    assert_usage_error(capsys, ["--space", "nb201", "--arch", OTHER_NB201, "--channels", "4",
                                "--layers", "1", *base, "--resume"],
                       "is for arch", NB201, OTHER_NB201, "another --output")
    assert_usage_error(capsys, [*NB201_TINY, *base, "--resume", "--dataset", "cifar100"],
                       "is for dataset cifar10, not cifar100")
    assert_usage_error(capsys, ["--space", "zen-macro", "--arch", ZEN, *base, "--resume"],
                       "is for space nb201, not zen-macro")
    assert_usage_error(capsys, [*NB201_TINY, *base, "--resume", "--lr", "0.5"],
                       "--lr (checkpoint 0.1, given 0.5)")
    assert (output / "checkpoint.pt").read_bytes() == before  # no refusal touched it
    state = torch.load(output / "checkpoint.pt", weights_only=True)
    state["model"] = {"stem.weight": torch.zeros(1)}  # ours in form, another network inside
    torch.save(state, output / "checkpoint.pt")
    assert_usage_error(capsys, [*NB201_TINY, *base, "--resume"],
                       "does not fit this network")
    empty = tmp_path / "empty"
    assert_usage_error(capsys, [*NB201_TINY, "--data", str(data["cifar10"]), "--output",
                                str(empty), "--resume", *QUICK], "no checkpoint at",
                       "start without --resume")


def test_a_diverging_run_fails_with_one_line(capsys, data, tmp_path: Path) -> None:
    code, _, err = run_main(capsys, [*NB201_TINY, "--data", str(data["cifar10"]), "--lr", "1e12",
                                     "--epochs", "2", "--output", str(tmp_path / "run"), *QUICK])
    assert code == 1
    assert err.strip().count("\n") == 0 and "loss became nan in epoch 1" in err
    assert "lower --lr" in err and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_usage_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tools.train", *NB201_TINY, "--data",
                             str(tmp_path / "nothing"), "--output", str(tmp_path / "run")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no cifar10 data")
    assert "Traceback" not in result.stderr + result.stdout
