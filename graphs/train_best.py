"""``--train-best EPOCHS --data DIR``: train the search's best architecture once the search ends.

Training runs as ``python -m tools.train`` in a child process rather than in the search process:
a torch-code candidate is LLM-written code, and the trainer confines the process that builds it
(Landlock: writes only in the training folder), which must not be the process that still has to
write the run's reports. The child writes to the same terminal; Ctrl-C and SIGTERM reach it
through this process, and the trainer's checkpoint of the last finished epoch is resumed by
``--resume RUN_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from graphs.config import SearchConfig

#: Datasets the trainer reads (the CIFAR python batches).
TRAINABLE_DATASETS = ("cifar10", "cifar100")


class TrainBestError(RuntimeError):
    """Training the best architecture failed; the message says why and how to retry."""


def check_train_request(config: SearchConfig) -> str | None:
    """Return what is wrong with ``--train-best``/``--data`` (checked before the search), or None."""
    if config.train_best is None:
        return "--data is only used with --train-best EPOCHS" if config.train_data else None
    if isinstance(config.train_best, bool) or not isinstance(config.train_best, int) \
            or config.train_best < 1:
        return "--train-best takes a number of epochs, 1 or more"
    if config.dataset not in TRAINABLE_DATASETS:
        return (f"--train-best trains on CIFAR-10/100 only, not {config.dataset}; "
                "search with --dataset cifar10 or cifar100")
    if not config.train_data:
        return ("--train-best needs --data DIR, the folder holding cifar-10-batches-py/ or "
                "cifar-100-python/")
    from tools.cifar import DataError, find_batch_folder, get_layout

    try:
        find_batch_folder(Path(config.train_data), get_layout(config.dataset))
    except DataError as exc:
        return f"--data: {exc}"
    return None


def _run_forwarding_signals(command: list[str], sink: Any, quiet: bool) -> int:
    """Run the trainer; pass Ctrl-C and SIGTERM on to it, once, and wait for it to stop.

    The child gets its own session, so a terminal's Ctrl-C reaches only this process, which
    forwards it: the trainer sees exactly one signal and ends its epoch bookkeeping cleanly,
    and a SIGTERM to the search never leaves an orphaned trainer writing into the run.
    """
    child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT if quiet else None,
                             start_new_session=True)

    def forward(signum: int, _frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def training_dir(run_dir: Path, arch: str, epochs: int) -> Path:
    """One folder per (architecture, epochs): a resumed search that finds a new best trains it."""
    digest = hashlib.sha256(arch.encode()).hexdigest()[:10]
    return run_dir / f"train-{epochs}ep-{digest}"


def train_best(config: SearchConfig, run_dir: Path, arch: str, *, plain: bool,
               quiet: bool) -> dict[str, Any]:
    """Train ``arch`` as configured and return the summary's ``trained`` entry.

    A folder whose ``metrics.json`` exists is reused as is; one holding a checkpoint is resumed.

    Raises:
        KeyboardInterrupt: the training was interrupted (its checkpoint stays for ``--resume``).
        TrainBestError: the trainer failed; the message names its log or exit status.
    """
    output = training_dir(run_dir, arch, config.train_best)
    metrics_path = output / "metrics.json"
    if not metrics_path.is_file():
        arch_file = run_dir / "best_arch.txt"
        arch_file.write_text(arch)  # torch-code sources do not fit on a command line
        command = [sys.executable, "-m", "tools.train", "--space", config.space,
                   "--arch", f"@{arch_file}", "--data", str(config.train_data),
                   "--dataset", config.dataset, "--epochs", str(config.train_best),
                   "--device", config.device, "--seed", str(config.seed), "--output", str(output)]
        if (output / "checkpoint.pt").is_file():
            command.append("--resume")
        if plain or quiet:
            command.append("--plain")
        log = output.with_suffix(".log")
        with open(log, "ab") if quiet else nullcontext() as sink:
            code = _run_forwarding_signals(command, sink, quiet)
        if code == 130:
            raise KeyboardInterrupt
        if code != 0 or not metrics_path.is_file():
            where = f" (log: {log})" if quiet else ""
            raise TrainBestError(f"training the best architecture failed with exit status {code}"
                                 f"{where}; fix the cause and run python -m graphs.search "
                                 f"--resume {run_dir}")
    metrics = json.loads(metrics_path.read_text())
    return {
        "epochs": metrics.get("epochs"),
        "dataset": metrics.get("dataset", config.dataset),
        "test_accuracy": metrics.get("test_accuracy"),
        "params": metrics.get("params"),
        "flops": metrics.get("flops"),
        "wall_time_s": metrics.get("wall_time_s"),
        "device": metrics.get("device"),
        "output": str(output),
    }

