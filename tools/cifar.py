"""CIFAR-10/100 from the official python batches, without torchvision and without downloading.

:func:`load_cifar` reads ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` or
``cifar-100-python/{train,test}`` from a folder the user names (its parent or the batch folder
itself). The batches are pickles, and a pickle is a program: :class:`CifarUnpickler` allows only
the numpy globals that rebuild an array and refuses every other one, so a hostile file cannot run
code. :func:`write_tiny_cifar` writes a small learnable dataset in exactly that format (tests,
demos). The augmentation (:class:`Augmenter`) works batch-wise on tensors: random crop 32 with
4-pixel padding, horizontal flip, per-channel normalisation, optional cutout.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
IMAGE_BYTES = 3 * 32 * 32
#: The largest batch file accepted: the real ones are 31 MB (CIFAR-10) and 155 MB (CIFAR-100 train).
MAX_BATCH_BYTES = 512 << 20


@dataclass(frozen=True)
class CifarLayout:
    """Where one dataset's batches live and what they hold."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes
    num_classes: int
    url: str
    #: Per-channel mean and standard deviation of the training images (pixel values in [0, 1]).
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file)

    def expected(self, where: Path) -> str:
        """The layout in words, e.g. ``DIR/cifar-100-python/{train,test}``."""
        if len(self.train_files) > 1:
            names = f"{self.train_files[0]}..{self.train_files[-1]},{self.test_file}"
        else:
            names = ",".join(self.files)
        return f"{where}/{self.folder}/{{{names}}}"


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch", b"labels", 10, CIFAR10_URL,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        "cifar100", "cifar-100-python", ("train",), "test", b"fine_labels", 100, CIFAR100_URL,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
}


class DataError(ValueError):
    """The data folder is missing, laid out wrongly or holds a file that is not a CIFAR batch.

    The message is one line: what was expected, what was found, and how to get the data.
    """


def get_layout(dataset: str) -> CifarLayout:
    """Return the layout of ``cifar10`` or ``cifar100`` (case-insensitive), or raise DataError."""
    layout = LAYOUTS.get(dataset.lower().replace("-", ""))
    if layout is None:
        raise DataError(f"unknown dataset {dataset!r}; choose cifar10 or cifar100")
    return layout


def _array_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch needs: ndarray reconstruction and dtype."""
    try:
        from numpy._core import multiarray  # numpy >= 2 (and the 1.26 forward-compat alias)
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray  # type: ignore[no-redef]
    return {
        # numpy 1.x and Python 2 pickles name numpy.core; numpy 2 pickles name numpy._core.
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, dicts, lists, bytes and numbers, and nothing else.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
    :class:`DataError` before it is looked up, so nothing in the file is ever called.
    """

    _allowed = _array_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise DataError(
                f"refusing to load this pickle: it asks for {module}.{name}, which a CIFAR batch "
                "never contains (a pickle can run code; only numpy arrays are allowed)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refusing to load this pickle: it uses persistent ids, which a CIFAR "
                        "batch never contains")


def load_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file; return images (N, 3, 32, 32) uint8 and labels (N,) int64.

    Raises DataError naming the file and the problem when it is not a CIFAR batch.
    """
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise DataError(f"{path} is {size / 2**20:.0f} MB, larger than any CIFAR batch; "
                        "is this the right folder?")
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the official files were written by Python 2, keys are bytes.
            batch = CifarUnpickler(f, encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a CIFAR batch"
        raise DataError(f"{path} is not a CIFAR python batch ({type(exc).__name__}: "
                        f"{str(exc)[:120]}); re-extract the archive") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not the dict of a CIFAR batch; "
                        "re-extract the archive")
    missing = [k.decode() for k in (b"data", label_key) if k not in batch]
    if missing:
        found = ", ".join(sorted(str(k) for k in batch)[:8]) or "nothing"
        raise DataError(f"{path} lacks the key(s) {', '.join(missing)} (found: {found}); "
                        "is it a batch of the other CIFAR dataset?")
    data, labels = batch[b"data"], batch[label_key]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == IMAGE_BYTES):
        shape = getattr(data, "shape", None)
        kind = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, {IMAGE_BYTES}), "
                        f"found {kind} {shape}; re-extract the archive")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: the labels are not integers; re-extract the archive") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels; "
                        "re-extract the archive")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}, found "
                        f"{labels.min()}..{labels.max()}; is it the other CIFAR dataset?")
    return data.reshape(-1, 3, 32, 32), labels


def find_batch_folder(root: Path, layout: CifarLayout) -> Path:
    """Return the folder holding ``layout``'s batch files: ``root/<folder>`` or ``root`` itself."""
    root = Path(root).expanduser()
    get = (f"download {layout.url} and extract it into {root} "
           f"(tar -xzf {layout.url.rsplit('/', 1)[-1]} -C {root})")
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"no {layout.name} data: {root} {what}; expected the folder "
                        f"{layout.expected(root)}; {get}")
    for folder in (root / layout.folder, root):
        if folder.is_dir() and any((folder / name).is_file() for name in layout.files):
            missing = [name for name in layout.files if not (folder / name).is_file()]
            if missing:
                raise DataError(f"incomplete {layout.name} data in {folder}: missing "
                                f"{', '.join(missing)} (expected {layout.expected(root)}); {get}")
            return folder
    other = next((o for o in LAYOUTS.values() if o is not layout and (
        (root / o.folder).is_dir()
        or ((root / o.test_file).is_file() and (root / o.train_files[0]).is_file()))), None)
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    except OSError as exc:
        raise DataError(f"cannot read {root}: {exc.strerror}") from None
    found = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
    found = found or "an empty folder"
    hint = f" (that is {other.name}: pass --dataset {other.name})" if other else ""
    raise DataError(f"no {layout.name} data in {root}: expected {layout.expected(root)}; "
                    f"found {found}{hint}; {get}")


@dataclass
class CifarData:
    """A loaded dataset: uint8 images (N, 3, 32, 32) and int64 labels, train and test."""

    name: str
    num_classes: int
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    folder: Path


def load_cifar(root: str | Path, dataset: str) -> CifarData:
    """Load ``cifar10`` or ``cifar100`` from ``root`` (the parent folder or the batch folder).

    Raises DataError (one line: expected layout, what was found, where to get the data).
    """
    layout = get_layout(dataset)
    folder = find_batch_folder(Path(root), layout)
    parts = [load_batch(folder / name, layout.label_key, layout.num_classes)
             for name in layout.files]
    train = parts[:-1]
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    test_images, test_labels = parts[-1]
    if len(train_labels) < 2 or len(test_labels) < 1:
        raise DataError(f"{folder} holds {len(train_labels)} training and {len(test_labels)} "
                        "test images; training needs at least 2 and 1")
    return CifarData(
        layout.name, layout.num_classes,
        torch.from_numpy(train_images), torch.from_numpy(train_labels),
        torch.from_numpy(np.ascontiguousarray(test_images)), torch.from_numpy(test_labels),
        layout.mean, layout.std, folder,
    )


def write_tiny_cifar(directory: str | Path, dataset: str = "cifar10", train_per_class: int = 10,
                     test_per_class: int = 4, seed: int = 0) -> Path:
    """Write a small learnable dataset in the official python-batch layout; return its folder.

    Each class has its own colour and stripe pattern (orientation and frequency), plus noise, so a
    small network's loss falls within an epoch or two. ``directory`` is the parent: the batches go
    to ``directory/cifar-10-batches-py/`` or ``directory/cifar-100-python/``.
    """
    layout = get_layout(dataset)
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError("train_per_class and test_per_class must be at least 1")
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(layout.num_classes, 3))
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)

    def images_of(label: int, count: int) -> np.ndarray:
        angle = np.pi * (label % 8) / 8
        frequency = 2 * np.pi * (1 + label % 3) / 16
        stripes = np.sin(frequency * (np.cos(angle) * xx + np.sin(angle) * yy))
        base = colours[label][:, None, None] + 35 * stripes[None]
        noisy = base[None] + rng.normal(0, 18, size=(count, 3, 32, 32))
        return np.clip(noisy, 0, 255).astype(np.uint8).reshape(count, IMAGE_BYTES)

    def split(per_class: int) -> tuple[np.ndarray, list[int]]:
        labels = np.repeat(np.arange(layout.num_classes), per_class)
        rng.shuffle(labels)
        data = np.concatenate([images_of(int(c), 1) for c in labels])
        return data, [int(c) for c in labels]

    folder = Path(directory) / layout.folder
    folder.mkdir(parents=True, exist_ok=True)
    train_data, train_labels = split(train_per_class)
    chunks = np.array_split(np.arange(len(train_labels)), len(layout.train_files))
    batches = [(name, train_data[idx], [train_labels[i] for i in idx])
               for name, idx in zip(layout.train_files, chunks)]
    batches.append((layout.test_file, *split(test_per_class)))
    for name, data, labels in batches:
        batch: dict[bytes, Any] = {
            b"batch_label": f"tiny {layout.name} {name}".encode(),
            b"data": np.ascontiguousarray(data),
            layout.label_key: labels,
            b"filenames": [f"tiny_{i:05d}.png".encode() for i in range(len(labels))],
        }
        if layout.name == "cifar100":
            batch[b"coarse_labels"] = [c // 5 for c in labels]
        # Protocol 4 pickles bytes natively; protocol 2 from Python 3 would need _codecs.encode.
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    return folder


class Augmenter:
    """Batch-wise CIFAR preprocessing on tensors (no torchvision, no per-image Python loop).

    Training: pad 4 and crop 32 at a random offset, flip horizontally with probability 1/2,
    normalise per channel, then (``cutout > 0``) zero a ``cutout`` x ``cutout`` square at a random
    centre, clipped at the border (DeVries & Taylor; the DARTS recipe). Random draws come from the
    CPU ``generator`` so a checkpoint can store and restore them exactly, whatever the device.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], *, cutout: int = 0,
                 padding: int = 4, generator: torch.Generator | None = None) -> None:
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.cutout = cutout
        self.padding = padding
        self.generator = generator

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 normalised with the dataset's mean and std."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float().div_(255) - mean) / std

    def train(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a uint8 batch (B, 3, 32, 32) on its device; return float32 of the same shape."""
        batch, _, height, width = images.shape
        device, pad = images.device, self.padding
        gen = self.generator
        rows = torch.randint(0, 2 * pad + 1, (batch,), generator=gen)
        cols = torch.randint(0, 2 * pad + 1, (batch,), generator=gen)
        flips = torch.rand(batch, generator=gen) < 0.5
        x = images.float().div_(255)
        if pad:
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            row_index = (rows[:, None] + torch.arange(height)).to(device)  # (B, H)
            col_index = (cols[:, None] + torch.arange(width)).to(device)  # (B, W)
            col_index = torch.where(flips[:, None].to(device), col_index.flip(1), col_index)
            x = x[torch.arange(batch, device=device)[:, None, None, None],
                  torch.arange(3, device=device)[None, :, None, None],
                  row_index[:, None, :, None], col_index[:, None, None, :]]
        else:
            x = torch.where(flips.to(device)[:, None, None, None], x.flip(3), x)
        x = (x - self.mean.to(device)) / self.std.to(device)
        if self.cutout:
            centre_y = torch.randint(0, height, (batch,), generator=gen).to(device)
            centre_x = torch.randint(0, width, (batch,), generator=gen).to(device)
            half = self.cutout // 2
            ys = torch.arange(height, device=device)[None, :]
            xs = torch.arange(width, device=device)[None, :]
            in_rows = (ys >= centre_y[:, None] - half) & (ys < centre_y[:, None] + half)
            in_cols = (xs >= centre_x[:, None] - half) & (xs < centre_x[:, None] + half)
            hole = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
            x = x.masked_fill(hole[:, None], 0.0)
        return x
