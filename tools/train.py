"""Final training of a found architecture on CIFAR-10/100: ``python -m tools.train``.

    python -m tools.train --space nb201 --dataset cifar10 --data ~/data --output runs/nb201 \\
        --arch @best_arch.txt      # or the architecture string itself

The recipe is SGD (momentum 0.9, Nesterov) with a cosine schedule over the epochs, weight decay,
optional label smoothing and cutout; for ``darts`` also drop-path, the auxiliary head and gradient
clipping (the DARTS evaluation recipe). Defaults per space are in :data:`SPACE_DEFAULTS`. Mixed
precision (autocast + GradScaler) is used on CUDA only. Every epoch ends with an atomic checkpoint
(``OUTPUT/checkpoint.pt``) that ``--resume`` continues; at the end ``OUTPUT/metrics.json`` and
``OUTPUT/learning_curve.png`` are written. :func:`train` is the same thing as a function.

``torch-code`` candidates are LLM-written code running in this process: after the static check
and restricted builtins of :func:`tools.spaces.torch_code.build_source`, the process confines
itself with Landlock (CPU only) before building the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import random
import shlex
import signal
import site
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tools.cifar import Augmenter, CifarData, DataError, get_layout, load_cifar
from tools.files import write_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
CURVE = "learning_curve.png"
CHECKPOINT_FORMAT = "rznas-train/1"
CUTOUT_LENGTH = 16
#: Spaces whose architectures are programs, built in this process (confined, see confine()).
CODE_SPACES = ("torch-code",)


class UsageError(ValueError):
    """A mistake in the request (flags, architecture, output folder, checkpoint); exit code 2."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped training; the checkpoint holds ``completed`` epochs."""

    def __init__(self, completed: int, epochs: int, output: Path) -> None:
        super().__init__(f"interrupted after {completed} of {epochs} epochs")
        self.completed, self.epochs, self.output = completed, epochs, output


class TrainingFailed(RuntimeError):
    """Training could not go on (loss not finite, disk full); the last checkpoint stays."""


@dataclass(frozen=True)
class Recipe:
    """Every setting that shapes the result; stored in the checkpoint and compared on resume."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    cutout: bool
    drop_path: float
    auxiliary_weight: float
    label_smoothing: float
    grad_clip: float
    channels: int | None
    layers: int | None
    seed: int


#: Defaults per space. darts: the DARTS paper's evaluation recipe (600 epochs, batch 96, lr 0.025,
#: weight decay 3e-4, cutout, drop-path 0.2, auxiliary weight 0.4, clip 5; C=36, 20 cells).
#: nb201: the NAS-Bench-201 recipe (200 epochs, batch 256, lr 0.1, wd 5e-4; C=16, N=5).
#: zen-macro and torch-code: the architecture fixes its widths; 200 epochs as NB201.
SPACE_DEFAULTS: dict[str, Recipe] = {
    "darts": Recipe(600, 96, 0.025, 0.9, 3e-4, True, 0.2, 0.4, 0.0, 5.0, 36, 20, 0),
    "nb201": Recipe(200, 256, 0.1, 0.9, 5e-4, False, 0.0, 0.0, 0.0, 0.0, 16, 5, 0),
}
OTHER_DEFAULTS = Recipe(200, 128, 0.1, 0.9, 5e-4, False, 0.0, 0.0, 0.0, 0.0, None, None, 0)


@dataclass
class TrainConfig:
    """What to train and how. ``None`` means the space's default (:data:`SPACE_DEFAULTS`).

    ``channels``/``layers``: darts (initial channels C, cells) and nb201 (C, cells per stage N)
    only. ``confine=False`` skips the Landlock confinement of torch-code builds; only callers that
    must keep writing outside ``output`` afterwards should use it (and then better run the CLI in
    a subprocess).
    """

    space: str
    arch: str
    data: Path
    dataset: str = "cifar10"
    output: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    cutout: bool | None = None
    drop_path: float | None = None
    auxiliary_weight: float | None = None
    label_smoothing: float | None = None
    grad_clip: float | None = None
    channels: int | None = None
    layers: int | None = None
    seed: int | None = None
    device: str = "auto"
    threads: int | None = None
    amp: bool = True
    resume: bool = False
    confine: bool = True
    plain: bool = False


#: (lowest, highest, highest included) for each numeric recipe field; the flag is --field-name.
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "epochs": (1, math.inf, True), "batch_size": (2, math.inf, True), "lr": (0, math.inf, True),
    "momentum": (0, 1, False), "weight_decay": (0, math.inf, True),
    "drop_path": (0, 1, False), "auxiliary_weight": (0, math.inf, True),
    "label_smoothing": (0, 1, False), "grad_clip": (0, math.inf, True),
    "channels": (1, 4096, True), "layers": (1, 1000, True),
}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def resolve_recipe(config: TrainConfig) -> Recipe:
    """Fill the space's defaults into ``config``'s unset fields and check every value."""
    defaults = SPACE_DEFAULTS.get(config.space, OTHER_DEFAULTS)
    given = {f.name: getattr(config, f.name) for f in dataclasses.fields(Recipe)
             if getattr(config, f.name) is not None}
    for name in ("channels", "layers"):
        if name in given and getattr(defaults, name) is None:
            raise UsageError(f"{_flag(name)} applies to the darts and nb201 spaces; a "
                             f"{config.space} architecture fixes its own size")
    for name, value in given.items():
        if name in _BOUNDS:
            low, high, closed = _BOUNDS[name]
            if not math.isfinite(value):
                raise UsageError(f"{_flag(name)} must be a finite number, got {value}")
            if not (low <= value and (value <= high if closed else value < high)):
                where = f"at least {low:g}" if high == math.inf else (
                    f"in [{low:g}, {high:g}{']' if closed else ')'}")
                raise UsageError(f"{_flag(name)} must be {where}, got {value}")
    if "lr" in given and given["lr"] == 0:
        raise UsageError("--lr must be greater than 0")
    return dataclasses.replace(defaults, **given)


def space_kwargs(space: str, recipe: Recipe) -> dict[str, Any]:
    """Constructor arguments of the space's network for ``recipe``."""
    if space == "darts":
        return {"channels": recipe.channels, "layers": recipe.layers,
                "auxiliary": recipe.auxiliary_weight > 0}
    if space == "nb201":
        return {"channels": recipe.channels, "cells_per_stage": recipe.layers}
    return {}


def read_arch(text: str) -> str:
    """Return ``text``, or the contents of FILE for ``@FILE`` (torch-code candidates are files)."""
    if not text.startswith("@"):
        return text
    path = Path(text[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UsageError(f"--arch {text}: cannot read {path}: {reason}") from None


def _one_line(text: Any, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _arch_label(arch: str) -> str:
    """A short name for an architecture (torch-code sources are whole programs)."""
    import hashlib

    arch = arch.strip()
    digest = hashlib.sha256(arch.encode()).hexdigest()[:12]
    if "\n" in arch:
        return f"<source, {len(arch.splitlines())} lines, sha256 {digest}>"
    return arch if len(arch) <= 120 else f"{arch[:80]}… (sha256 {digest})"


# -- confinement --------------------------------------------------------------------------------

_confined_to: str | None = None


def confine(output: Path, data_folder: Path | None) -> bool:
    """Confine this process with Landlock: read the Python installation, site dirs, the repository
    and the data; write only under ``output``. Returns False where the kernel lacks Landlock.

    Irreversible for the process and every thread and child it starts afterwards. Everything the
    rest of training opens lazily (matplotlib's fonts, the clock's time zone) is loaded first.
    """
    global _confined_to
    target = os.path.realpath(output)
    if _confined_to is not None:
        if _confined_to != target:
            raise UsageError(f"this process is already confined to {_confined_to}; train into "
                             "that folder or run python -m tools.train in a new process")
        return True
    _preload_for_confinement()
    from tools.sandbox import _landlock

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             *site.getsitepackages(), site.getusersitepackages(), str(REPO_ROOT),
             "/sys/devices/system/cpu", "/proc/cpuinfo", "/dev/urandom"}
    if data_folder is not None:
        roots.add(str(data_folder))
    readable = tuple(sorted({os.path.realpath(r) for r in roots if r and os.path.exists(r)}))
    if not _landlock(target, readable):
        return False
    _confined_to = target
    return True


def drop_secret_env() -> list[str]:
    """Remove secret-looking variables (API keys, tokens) from this process's environment.

    Training needs none of them, and candidate code runs in this process. Returns the names.
    """
    from tools.sandbox import SECRET_ENV

    names = sorted(n for n in os.environ if SECRET_ENV.search(n))
    for name in names:
        del os.environ[name]
    return names


def _preload_for_confinement() -> None:
    """Open now what training opens lazily outside the allowed folders."""
    import tempfile

    from matplotlib import font_manager  # noqa: F401 - builds or reads its font cache now
    from matplotlib.backends import backend_agg  # noqa: F401
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title("x")
    fig.savefig(io.BytesIO(), format="png")  # loads the font files the curve will use
    time.localtime()  # reads /etc/localtime once
    tempfile.gettempdir()  # torch._dynamo (imported by the FLOP counter) asks for it once
    import torch._dynamo  # noqa: F401 - the FLOP counter imports it


# -- the run ------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What one training session works with."""

    config: TrainConfig
    recipe: Recipe
    arch: str
    output: Path
    device: torch.device
    data: CifarData
    model: nn.Module
    params: int
    params_with_aux: int
    flops: float
    confinement: str


def train(config: TrainConfig, console: Any | None = None,
          on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train ``config.arch`` and return the metrics (also written to ``OUTPUT/metrics.json``).

    Args:
        config: what to train; unset recipe fields take the space's defaults.
        console: a ``rich.console.Console`` for progress (default: stdout; a progress bar on a
            terminal, one plain line per epoch elsewhere or with ``config.plain``).
        on_epoch: called with each finished epoch's record (the entries of ``history``).

    Raises:
        UsageError, DataError: a mistake in the request (the CLI exits 2).
        TrainingInterrupted: Ctrl-C; the checkpoint of the last finished epoch is kept.
        TrainingFailed: the loss stopped being finite, or the output stopped taking writes.
    """
    from rich.console import Console

    console = console or Console(highlight=False)
    say = _Printer(console)
    from tools.spaces import ArchitectureError, get_space, space_names

    if config.space not in space_names():
        raise UsageError(f"unknown search space {config.space!r}; choose one of: "
                         f"{', '.join(space_names())}")
    get_layout(config.dataset)  # DataError for an unknown dataset, before any work
    recipe = resolve_recipe(config)
    arch_text = read_arch(config.arch)
    space = get_space(config.space, **space_kwargs(config.space, recipe))
    try:
        arch = space.validate(arch_text)
    except ArchitectureError as exc:
        raise UsageError(f"--arch is not a valid {config.space} architecture: "
                         f"{_one_line(exc)}") from None
    output = Path(config.output) if config.output else default_output(config)
    state = _prepare_output(output, config, arch)
    if state is not None:  # the checkpoint's recipe wins, network size included
        recipe = _recipe_from_checkpoint(state)
        space = get_space(config.space, **space_kwargs(config.space, recipe))
    device = _resolve_device(config.device)
    if config.threads is not None and config.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {config.threads}")
    data = load_cifar(config.data, config.dataset)
    _make_output(output)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        confinement = "not needed (the architecture is parsed, never executed)"
        if config.space in CODE_SPACES:
            confinement = _confine_for_code(config, output, device, data.folder)
        model, params, params_with_aux, flops = _build(space, config.space, arch, recipe, data)
        run = _Run(config, recipe, arch, output, device, data, model, params, params_with_aux,
                   flops, confinement)
        return _fit(run, state, say, on_epoch)
    finally:
        torch.set_num_threads(threads)  # in-process callers keep their own setting


def _confine_for_code(config: TrainConfig, output: Path, device: torch.device,
                      data_folder: Path) -> str:
    """Drop secrets and confine the process before candidate code runs; say what was done."""
    if not config.confine:
        return "off (confine=False)"
    drop_secret_env()
    if device.type != "cpu":
        # As in the sandbox: CUDA drivers open device and /sys files at run time.
        return "off on CUDA (Landlock is applied on the CPU only); static check only"
    if confine(output, data_folder):
        return f"Landlock active: reads Python, the repository and the data; writes only {output}"
    return "not available (kernel without Landlock); static check only"


def default_output(config: TrainConfig) -> Path:
    """``runs/<time>-train-<space>-<dataset>``, unique within the second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-train-{config.space}-{config.dataset}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _resolve_device(name: str) -> torch.device:
    from tools.proxies import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None


def _prepare_output(output: Path, config: TrainConfig, arch: str) -> dict | None:
    """Check ``output`` against ``--resume``; return the checkpoint to resume, or None."""
    path = output / CHECKPOINT
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file; name a folder")
    if not config.resume:
        if path.exists():
            raise UsageError(f"{output} already holds a checkpoint; continue it with --resume, "
                             "or choose another --output")
        return None
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path}; start without --resume "
                         "(or name the --output of the run to continue)")
    state = load_checkpoint(path)
    saved = state["args"]
    mine = {"space": config.space, "arch": arch, "dataset": get_layout(config.dataset).name}
    for key, value in mine.items():
        if saved.get(key) != value:
            shown = _arch_label if key == "arch" else str
            raise UsageError(
                f"the checkpoint in {output} is for {key} {shown(str(saved.get(key)))}, not "
                f"{shown(value)}; resume with the same --space/--arch/--dataset, or choose "
                "another --output")
    saved_recipe = saved.get("recipe") or {}
    changed = [f"{_flag(k)} (checkpoint {saved_recipe.get(k)}, given {getattr(config, k)})"
               for k in saved_recipe
               if getattr(config, k, None) is not None and getattr(config, k) != saved_recipe[k]]
    if changed:
        raise UsageError(f"--resume keeps the checkpoint's recipe; these differ: "
                         f"{'; '.join(changed)} (drop them, or choose another --output)")
    return state


def _make_output(output: Path) -> None:
    """Create ``output`` and prove it takes writes, before any training time is spent."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to --output {output}: {exc.strerror}") from None


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (a checkpoint is a pickle: no code runs)."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable, truncated or unsafe: all "not ours"
        raise UsageError(f"cannot load {path} as a training checkpoint "
                         f"({_one_line(exc, 160)}); choose another --output") from None
    if not (isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT
            and isinstance(state.get("args"), dict)):
        raise UsageError(f"{path} is not a python -m tools.train checkpoint; "
                         "choose another --output")
    return state


def _recipe_from_checkpoint(state: dict) -> Recipe:
    try:
        return Recipe(**state["args"]["recipe"])
    except (KeyError, TypeError):
        raise UsageError("the checkpoint's recipe does not match this version of tools.train; "
                         "choose another --output") from None


def _build(space: Any, space_name: str, arch: str, recipe: Recipe,
           data: CifarData) -> tuple[nn.Module, int, int, float]:
    """Build the network with the recipe's seed; return it with params and FLOPs.

    ``params`` leaves out an auxiliary head (as the DARTS paper counts); FLOPs are forward
    multiply-adds for one 32x32 image, the unit of the ``flops`` proxy and the benchmarks.
    """
    from tools.costs import count_flops, count_params
    from tools.spaces import get_space

    _seed_everything(recipe.seed)
    try:
        model = space.build(arch, data.num_classes)
    except Exception as exc:  # noqa: BLE001 - any failure of the candidate is the arch's fault
        raise UsageError(f"the {space_name} architecture does not build: "
                         f"{type(exc).__name__}: {_one_line(exc, 240)}") from None
    if hasattr(model, "drop_path_prob"):
        model.drop_path_prob = 0.0
    elif recipe.drop_path > 0:
        raise UsageError(f"--drop-path needs a network with drop-path (darts); the {space_name} "
                         "network has none: pass --drop-path 0")
    if recipe.auxiliary_weight > 0 and not hasattr(model, "aux_logits"):
        raise UsageError(f"--auxiliary-weight needs a network with an auxiliary head (darts); "
                         f"the {space_name} network has none: pass --auxiliary-weight 0")
    params_with_aux = count_params(model)
    params = params_with_aux
    if space_name == "darts" and recipe.auxiliary_weight > 0:
        plain = get_space("darts", **{**space_kwargs("darts", recipe), "auxiliary": False})
        params = count_params(plain.build(arch, data.num_classes))
    try:
        flops = count_flops(model, (3, 32, 32)) / 2
        with torch.no_grad():
            model.eval()
            logits = model(torch.zeros(2, 3, 32, 32))
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"the network fails on a batch of 32x32 images: {type(exc).__name__}: "
                         f"{_one_line(exc, 240)}") from None
    if not (isinstance(logits, torch.Tensor) and tuple(logits.shape) == (2, data.num_classes)):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UsageError(f"the network returns {shape} for 2 images, expected (2, "
                         f"{data.num_classes}) logits")
    _seed_everything(recipe.seed)  # the probe above must not shift the training draws
    return model, params, params_with_aux, flops


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class _Printer:
    """Lines on the console: never wrapped, never read as markup (arch strings hold brackets)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def __call__(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def _fit(run: _Run, state: dict | None, say: _Printer,
         on_epoch: Callable[[dict], None] | None) -> dict:
    recipe, device, model, data = run.recipe, run.device, run.model, run.data
    amp = run.config.amp and device.type == "cuda"
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.momentum > 0, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    generator = torch.Generator().manual_seed(recipe.seed)
    history: list[dict] = []
    wall_time = 0.0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            _restore_rng(state["rng"], generator)
            history = list(state["history"])
            wall_time = float(state.get("wall_time_s", 0.0))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise UsageError(f"the checkpoint in {run.output} does not fit this network "
                             f"({type(exc).__name__}: {_one_line(exc, 160)}); choose another "
                             "--output") from None
    start_epoch = len(history)

    _print_header(run, say, amp, start_epoch)
    augmenter = Augmenter(data.mean, data.std, cutout=CUTOUT_LENGTH if recipe.cutout else 0,
                          generator=generator)
    train_images, train_labels = data.train_images, data.train_labels
    test_images, test_labels = data.test_images, data.test_labels
    if device.type == "cuda":  # uint8 CIFAR is 150 MB: keep it on the card, index there
        train_images, train_labels = train_images.to(device), train_labels.to(device)
        test_images, test_labels = test_images.to(device), test_labels.to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    session_epochs: list[float] = []
    progress = None if run.config.plain or not say.console.is_terminal else _progress(say.console)
    try:
        with progress or nullcontext():
            for epoch in range(start_epoch, recipe.epochs):
                tic = time.perf_counter()
                drop_prob = recipe.drop_path * epoch / recipe.epochs
                if hasattr(model, "drop_path_prob"):
                    model.drop_path_prob = drop_prob
                lr = optimizer.param_groups[0]["lr"]
                train_loss, train_acc, rate = _train_epoch(
                    run, model, optimizer, scaler, criterion, augmenter, generator,
                    train_images, train_labels, amp, progress, epoch)
                scheduler.step()
                test_loss, test_acc = _evaluate(model, augmenter, test_images, test_labels,
                                                recipe.batch_size, amp)
                if not math.isfinite(train_loss):
                    kept = f"the checkpoint keeps epoch {epoch}" if epoch else "nothing was saved"
                    raise TrainingFailed(
                        f"the training loss became {train_loss} in epoch {epoch + 1}; lower --lr "
                        f"(now {recipe.lr:g}) or set --grad-clip; {kept}")
                seconds = time.perf_counter() - tic
                record = {"epoch": epoch + 1, "lr": lr, "drop_path_prob": drop_prob,
                          "train_loss": train_loss, "train_accuracy": train_acc,
                          "test_loss": test_loss, "test_accuracy": test_acc,
                          "images_per_s": rate, "seconds": seconds}
                history.append(record)
                wall_time += seconds
                _save_checkpoint(run, model, optimizer, scheduler, scaler, generator, history,
                                 wall_time)
                session_epochs.append(seconds)
                eta = (recipe.epochs - epoch - 1) * sum(session_epochs) / len(session_epochs)
                say(_epoch_line(record, recipe.epochs, eta))
                if on_epoch is not None:
                    on_epoch(dict(record))
    except KeyboardInterrupt:
        raise TrainingInterrupted(len(history), recipe.epochs, run.output) from None
    if start_epoch == recipe.epochs:
        say(f"nothing to train: the checkpoint already holds all {recipe.epochs} epochs")
    metrics = _metrics(run, history, wall_time, amp)
    try:
        write_atomic(run.output / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())
        write_atomic(run.output / CURVE, plot_learning_curve(history, _title(run)))
    except OSError as exc:
        raise TrainingFailed(f"cannot write the results into {run.output}: {exc.strerror}; "
                             "free space and run again with --resume (training is done)") from None
    say(f"done: test accuracy {metrics['test_accuracy']:.2f}% (best "
        f"{metrics['best_test_accuracy']:.2f}% at epoch {metrics['best_epoch']}), "
        f"{_duration(wall_time)}; wrote {run.output / METRICS} and {run.output / CURVE}")
    return metrics


def _progress(console: Any) -> Any:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, transient=True)


def _cpu_label() -> str:
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


def _print_header(run: _Run, say: _Printer, amp: bool, start_epoch: int) -> None:
    r, data, device = run.recipe, run.data, run.device
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)}){', mixed precision' if amp else ''}"
    else:
        where = _cpu_label()
    say(f"train {run.config.space} {_arch_label(run.arch)} on {data.name} "
        f"({len(data.train_labels)} train / {len(data.test_labels)} test images) -> {run.output}")
    size = f"{run.params / 1e6:.3f}M params"
    if run.params_with_aux != run.params:
        size += f" ({run.params_with_aux / 1e6:.3f}M with the auxiliary head)"
    say(f"device: {where}; network: {size}, {run.flops / 1e6:.1f}M FLOPs (multiply-adds, 32x32)")
    extras = [f"cutout {CUTOUT_LENGTH}" if r.cutout else "", f"label smoothing {r.label_smoothing}"
              if r.label_smoothing else "", f"drop-path {r.drop_path}" if r.drop_path else "",
              f"auxiliary weight {r.auxiliary_weight}" if r.auxiliary_weight else "",
              f"grad clip {r.grad_clip}" if r.grad_clip else ""]
    say(f"recipe: {r.epochs} epoch{'s' if r.epochs != 1 else ''}, batch {r.batch_size}, "
        f"SGD lr {r.lr} momentum {r.momentum}"
        f"{' nesterov' if r.momentum else ''}, cosine, weight decay {r.weight_decay}"
        + "".join(f", {e}" for e in extras if e) + f", seed {r.seed}")
    if run.config.space in CODE_SPACES:
        say(f"confinement: {run.confinement}")
    if 0 < start_epoch < r.epochs:
        say(f"resuming after epoch {start_epoch} of {r.epochs}")


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               optimizer: torch.optim.Optimizer, scaler: Any, criterion: nn.Module, *,
               amp: bool = False, auxiliary_weight: float = 0.0,
               grad_clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step: forward (autocast when ``amp``), loss plus the weighted auxiliary loss when
    the network set ``aux_logits``, backward through ``scaler``, optional norm clipping, step.
    Returns the main loss and the logits, detached."""
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        logits = model(x)
        loss = criterion(logits, y)
        aux = getattr(model, "aux_logits", None) if auxiliary_weight > 0 else None
        total = loss + auxiliary_weight * criterion(aux, y) if aux is not None else loss
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def _train_epoch(run: _Run, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                 criterion: nn.Module, augmenter: Augmenter, generator: torch.Generator,
                 images: torch.Tensor, labels: torch.Tensor, amp: bool, progress: Any,
                 epoch: int) -> tuple[float, float, float]:
    """One pass over the shuffled training set; return mean loss, accuracy (%) and images/s."""
    recipe = run.recipe
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    batches = list(order.split(recipe.batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm cannot train on one image
        batches.pop()
    task = progress.add_task(f"epoch {epoch + 1}/{recipe.epochs}", total=len(batches),
                             stats="") if progress else None
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    seen = 0
    tic = time.perf_counter()
    for step, index in enumerate(batches, 1):
        index = index.to(images.device)
        y = labels[index]
        loss, logits = train_step(model, augmenter.train(images[index]), y, optimizer, scaler,
                                  criterion, amp=amp, auxiliary_weight=recipe.auxiliary_weight,
                                  grad_clip=recipe.grad_clip)
        loss_sum += loss.float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if progress is not None and (step % 10 == 0 or step == len(batches)):
            rate = seen / max(time.perf_counter() - tic, 1e-9)
            progress.update(task, completed=step, refresh=True, stats=(
                f"loss {loss_sum.item() / seen:.3f} acc {100 * correct.item() / seen:.1f}% "
                f"{rate:,.0f} img/s"))
    elapsed = time.perf_counter() - tic
    if progress is not None:
        progress.remove_task(task)
    return loss_sum.item() / seen, 100.0 * correct.item() / seen, seen / max(elapsed, 1e-9)


@torch.no_grad()
def _evaluate(model: nn.Module, augmenter: Augmenter, images: torch.Tensor,
              labels: torch.Tensor, batch_size: int, amp: bool) -> tuple[float, float]:
    """Plain cross-entropy and accuracy (%) on the test set, no augmentation."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for start in range(0, len(labels), 2 * batch_size):
        x = augmenter.normalize(images[start:start + 2 * batch_size])
        y = labels[start:start + 2 * batch_size]
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = model(x)
        loss_sum += criterion(logits.float(), y)
        correct += (logits.argmax(1) == y).sum()
    return loss_sum.item() / len(labels), 100.0 * correct.item() / len(labels)


def _epoch_line(record: dict, epochs: int, eta: float) -> str:
    return (f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.4g}  "
            f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2f}%  "
            f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.2f}%  "
            f"{record['images_per_s']:,.0f} img/s  {_duration(record['seconds'])}  "
            f"ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _rng_state(generator: torch.Generator) -> dict:
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "data": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python": [version, list(internal), gauss]}


def _restore_rng(rng: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["data"])
    cuda_states = rng.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def _save_checkpoint(run: _Run, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, scaler: Any, generator: torch.Generator,
                     history: list[dict], wall_time: float) -> None:
    """Write OUTPUT/checkpoint.pt atomically; every non-tensor value is a plain type."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "args": {"space": run.config.space, "arch": run.arch, "dataset": run.data.name,
                 "recipe": dataclasses.asdict(run.recipe)},
        "epoch": len(history),
        "history": history,
        "wall_time_s": wall_time,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": _rng_state(generator),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        write_atomic(run.output / CHECKPOINT, buffer.getvalue())
    except OSError as exc:
        raise TrainingFailed(f"cannot write {run.output / CHECKPOINT}: {exc.strerror}; free "
                             f"space and continue with --resume (the last checkpoint is intact)"
                             ) from None


def _title(run: _Run) -> str:
    return f"{run.config.space} on {run.data.name}: {_arch_label(run.arch)}"


def _metrics(run: _Run, history: list[dict], wall_time: float, amp: bool) -> dict:
    best = max(history, key=lambda h: h["test_accuracy"])
    images = sum(h["images_per_s"] * h["seconds"] for h in history)  # weight by epoch time
    device = run.device
    return {
        "space": run.config.space,
        "arch": run.arch,
        "dataset": run.data.name,
        "epochs": len(history),
        "test_accuracy": history[-1]["test_accuracy"],
        "test_loss": history[-1]["test_loss"],
        "best_test_accuracy": best["test_accuracy"],
        "best_epoch": best["epoch"],
        "train_loss": [h["train_loss"] for h in history],
        "train_accuracy": [h["train_accuracy"] for h in history],
        "test_accuracy_per_epoch": [h["test_accuracy"] for h in history],
        "params": run.params,
        "params_with_aux": run.params_with_aux,
        "flops": run.flops,
        "wall_time_s": wall_time,
        "device": (f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda"
                   else _cpu_label()),
        "mixed_precision": amp,
        "images_per_s": images / max(sum(h["seconds"] for h in history), 1e-9),
        "recipe": {**dataclasses.asdict(run.recipe), "optimizer": "SGD nesterov",
                   "schedule": "cosine",
                   "cutout_length": CUTOUT_LENGTH if run.recipe.cutout else 0},
        "confinement": run.confinement,
        "train_images": len(run.data.train_labels),
        "test_images": len(run.data.test_labels),
        "torch": torch.__version__,
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "history": history,
    }


def plot_learning_curve(history: list[dict], title: str) -> bytes:
    """Return a PNG: train/test loss and train/test accuracy per epoch."""
    from matplotlib.figure import Figure  # the OO API draws with Agg and never opens a display
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.8), dpi=110)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy (%)")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "-o", ms=3, label="train")
        ax.plot(epochs, [h[f"test_{key}"] for h in history], "-s", ms=3, label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title if len(title) <= 90 else title[:89] + "…", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


# -- command line -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, no usage dump
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The flags; recipe defaults are None so that the space's defaults apply."""
    p = _Parser(
        prog="python -m tools.train",
        description="Train a found architecture on CIFAR-10/100 from the python batches "
        "(no download). Defaults follow each space's paper recipe; see README.",
        argument_default=None,
    )
    add = p.add_argument
    add("--space", required=True, help="darts, nb201, zen-macro or torch-code")
    add("--arch", required=True, help="the architecture, or @FILE (torch-code: a source file)")
    add("--data", required=True, type=Path,
        help="folder holding cifar-10-batches-py/ or cifar-100-python/ (or that folder)")
    add("--dataset", default="cifar10", help="cifar10 (default) or cifar100")
    add("--epochs", type=int, help="darts 600 (the DARTS recipe), otherwise 200")
    add("--batch-size", type=int, help="darts 96, nb201 256, otherwise 128")
    add("--lr", type=float, help="initial learning rate: darts 0.025, otherwise 0.1")
    add("--momentum", type=float, help="SGD momentum, Nesterov (default 0.9)")
    add("--weight-decay", type=float, help="darts 3e-4, otherwise 5e-4")
    add("--cutout", action=argparse.BooleanOptionalAction,
        help=f"cutout of {CUTOUT_LENGTH}x{CUTOUT_LENGTH} (darts: on, otherwise off)")
    add("--drop-path", type=float, help="final drop-path probability (darts 0.2; darts only)")
    add("--auxiliary-weight", type=float, help="auxiliary loss weight (darts 0.4, 0 = no "
        "auxiliary head; darts only)")
    add("--label-smoothing", type=float, help="label smoothing (default 0)")
    add("--grad-clip", type=float, help="gradient norm clip (darts 5, otherwise 0 = off)")
    add("--channels", type=int, help="initial channels: darts 36, nb201 16 (small for tests)")
    add("--layers", type=int, help="darts: cells (20); nb201: cells per stage (5)")
    add("--seed", type=int, help="seed (default 0)")
    add("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    add("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add("--no-amp", dest="amp", action="store_false", default=True,
        help="no mixed precision on CUDA")
    add("--output", type=Path, help="run folder (default runs/<time>-train-<space>-<dataset>)")
    add("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    add("--plain", action="store_true", help="one line per epoch, no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def _resume_command(argv: list[str], output: Path) -> str:
    args = [a for a in argv if a != "--resume"]
    if "--output" not in args and not any(a.startswith("--output=") for a in args):
        args += ["--output", str(output)]
    return "python -m tools.train " + shlex.join([*args, "--resume"])


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. 0: trained; 1: training failed; 2: usage or data error; 130: interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.resume and args.output is None:
        print("error: --resume needs --output, the folder of the run to continue", file=sys.stderr)
        return 2
    config = config_from_args(args)
    if config.output is None:
        config.output = default_output(config)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # kill: stop as Ctrl-C does
    try:
        train(config)
    except (UsageError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        if exc.completed == 0:
            print("interrupted before the first epoch finished: nothing was saved; run the same "
                  "command again to start over", file=sys.stderr)
            return 130
        print(f"interrupted: the checkpoint in {exc.output} holds {exc.completed} of {exc.epochs} "
              f"epochs; continue with: {_resume_command(argv, config.output)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started: nothing to keep
        print("interrupted before training started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
