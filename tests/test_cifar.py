"""tools/cifar.py: the CIFAR python-batch format, the restricted unpickler and the augmentation.

The tiny datasets are written in exactly the official layout; one batch is also assembled by hand
the way Python 2 pickled the real files (numpy.core names, BINSTRING data), so the loader is
checked against the real format, not only against what it writes itself.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.cifar import (
    CIFAR10_URL,
    CIFAR100_URL,
    LAYOUTS,
    Augmenter,
    CifarUnpickler,
    DataError,
    load_batch,
    load_cifar,
    write_tiny_cifar,
)


@pytest.fixture(scope="module")
def tiny10(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("c10")
    write_tiny_cifar(root, "cifar10", train_per_class=6, test_per_class=2, seed=1)
    return root


@pytest.fixture(scope="module")
def tiny100(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("c100")
    write_tiny_cifar(root, "cifar100", train_per_class=2, test_per_class=1, seed=2)
    return root


def _short_string(data: bytes) -> bytes:
    return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING: a Python 2 str


def python2_batch(images: np.ndarray, labels: list[int], label_key: bytes = b"labels") -> bytes:
    """A batch pickled as Python 2's cPickle (protocol 2) pickled the official files."""
    raw = images.tobytes()
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" b"cnumpy\nndarray\n" b"K\x00\x85"
             + _short_string(b"b") + b"\x87R"
             + b"(K\x01" + b"M" + struct.pack("<H", images.shape[0])
             + b"M" + struct.pack("<H", images.shape[1]) + b"\x86"
             + b"cnumpy\ndtype\n" + _short_string(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
             + b"\x89" + b"T" + struct.pack("<I", len(raw)) + raw + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([c]) for c in labels) + b"e"
    return (b"\x80\x02}(" + _short_string(b"batch_label") + _short_string(b"training batch 1")
            + _short_string(b"data") + array + _short_string(label_key) + label_list + b"u.")


class Hostile:
    """Unpickling this calls ``func(*args)`` - if the loader lets it."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile_payloads(marker: Path) -> dict[str, Hostile]:
    """Pickled calls that would each create ``marker``."""
    return {
        "system": Hostile(os.system, f"touch {marker}"),
        "eval": Hostile(eval, f"open({str(marker)!r}, 'w')"),
        "Popen": Hostile(subprocess.Popen, ["touch", str(marker)]),
    }


# -- format and loading ---------------------------------------------------------------------------


def test_tiny_cifar10_has_the_official_layout_and_keys(tiny10: Path) -> None:
    folder = tiny10 / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    with open(folder / "data_batch_1", "rb") as f:  # what every CIFAR tutorial does
        batch = pickle.load(f, encoding="bytes")
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= set(batch)
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    assert isinstance(batch[b"labels"], list) and len(batch[b"labels"]) == len(batch[b"data"])


def test_tiny_cifar100_uses_fine_labels(tiny100: Path) -> None:
    folder = tiny100 / "cifar-100-python"
    assert sorted(p.name for p in folder.iterdir()) == ["test", "train"]
    with open(folder / "train", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert b"fine_labels" in batch and b"coarse_labels" in batch and b"labels" not in batch
    assert sorted(set(batch[b"fine_labels"])) == list(range(100))


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_load_cifar10_from_the_parent_or_the_batch_folder(tiny10: Path, sub: str) -> None:
    data = load_cifar(tiny10 / sub, "cifar10")
    assert data.num_classes == 10 and data.name == "cifar10"
    assert data.train_images.shape == (60, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (20, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64
    assert sorted(data.train_labels.unique().tolist()) == list(range(10))


def test_load_cifar100(tiny100: Path) -> None:
    data = load_cifar(tiny100, "cifar100")
    assert data.num_classes == 100
    assert len(data.train_labels) == 200 and len(data.test_labels) == 100
    assert data.mean == LAYOUTS["cifar100"].mean != LAYOUTS["cifar10"].mean  # its own statistics


def test_a_python2_batch_of_the_real_format_loads(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    path = tmp_path / "data_batch_1"
    path.write_bytes(python2_batch(images, [0, 9, 4]))
    loaded, labels = load_batch(path, b"labels", 10)
    assert loaded.shape == (3, 3, 32, 32) and labels.tolist() == [0, 9, 4]
    assert np.array_equal(loaded.reshape(3, -1), images)


def test_the_synthetic_classes_differ(tiny10: Path) -> None:
    data = load_cifar(tiny10, "cifar10")
    means = torch.stack([data.train_images[data.train_labels == c].float().mean(0)
                         for c in range(10)])
    gaps = torch.cdist(means.flatten(1), means.flatten(1))
    assert gaps[~torch.eye(10, dtype=torch.bool)].min() > 100  # every pair of classes apart


def test_write_tiny_cifar_is_deterministic(tmp_path: Path) -> None:
    a = write_tiny_cifar(tmp_path / "a", "cifar10", 2, 1, seed=5)
    b = write_tiny_cifar(tmp_path / "b", "cifar10", 2, 1, seed=5)
    assert (a / "test_batch").read_bytes() == (b / "test_batch").read_bytes()


# -- hostile and broken files ---------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["system", "eval", "Popen"])
def test_hostile_pickles_are_refused_before_anything_runs(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "marker"
    folder = write_tiny_cifar(tmp_path, "cifar10", 1, 1)
    (folder / "data_batch_2").write_bytes(pickle.dumps(hostile_payloads(marker)[payload]))
    with pytest.raises(DataError) as info:
        load_cifar(tmp_path, "cifar10")
    message = str(info.value)
    assert "refusing" in message and f".{payload}," in message and "data_batch_2" in message
    assert "\n" not in message
    assert not marker.exists()


def test_only_array_globals_are_allowed() -> None:
    unpickler = CifarUnpickler.__new__(CifarUnpickler)
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray
    assert callable(unpickler.find_class("numpy.core.multiarray", "_reconstruct"))
    for module, name in [("numpy", "load"), ("numpy.lib.npyio", "load"), ("posix", "system"),
                         ("builtins", "getattr"), ("torch", "load"), ("numpy", "frombuffer")]:
        with pytest.raises(DataError, match="refusing"):
            unpickler.find_class(module, name)


@pytest.mark.parametrize("layout, fragments", [
    ("missing", ["does not exist", "cifar-10-batches-py/{data_batch_1..data_batch_5,test_batch}",
                 CIFAR10_URL]),
    ("empty", ["an empty folder", CIFAR10_URL]),
    ("wrong-files", ["notes.txt", "images/", "expected"]),
    ("incomplete", ["missing data_batch_3", CIFAR10_URL]),
    ("other-dataset", ["cifar-100-python/", "--dataset cifar100"]),
])
def test_folder_mistakes_say_what_was_expected_and_found(tmp_path: Path, layout: str,
                                                         fragments: list[str]) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "wrong-files":
        (root / "notes.txt").write_text("x")
        (root / "images").mkdir()
    elif layout == "incomplete":
        (write_tiny_cifar(root, "cifar10", 1, 1) / "data_batch_3").unlink()
    elif layout == "other-dataset":
        write_tiny_cifar(root, "cifar100", 1, 1)
    with pytest.raises(DataError) as info:
        load_cifar(root, "cifar10")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_cifar100_error_names_its_own_archive(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-100-python/{train,test}") as info:
        load_cifar(tmp_path, "cifar100")
    assert CIFAR100_URL in str(info.value)


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: b"this is not a pickle", "not a CIFAR python batch"),
    (lambda d: d[: len(d) // 2], "not a CIFAR python batch"),
    (lambda d: pickle.dumps([1, 2, 3]), "holds a list"),
    (lambda d: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}),
     "must be a uint8 array of shape (N, 3072)"),
    (lambda d: pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
     "must be a uint8 array"),
    (lambda d: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
     "2 images but 1 labels"),
    (lambda d: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
     "labels must lie in 0..9"),
    (lambda d: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}),
     "lacks the key(s) labels"),
])
def test_malformed_batches_are_data_errors(tmp_path: Path, damage, fragment: str) -> None:
    folder = write_tiny_cifar(tmp_path, "cifar10", 1, 1)
    path = folder / "test_batch"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as info:
        load_cifar(tmp_path, "cifar10")
    assert fragment in str(info.value) and "test_batch" in str(info.value)
    assert "\n" not in str(info.value)


# -- augmentation ---------------------------------------------------------------------------------


def _images(batch: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(3))


def test_normalize_uses_the_channel_statistics() -> None:
    aug = Augmenter((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    out = aug.normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 3.0, 1.0]))


def test_every_training_crop_is_a_window_of_the_padded_image() -> None:
    images = _images()
    aug = Augmenter((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), generator=torch.Generator().manual_seed(0))
    out = aug.train(images)
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    padded = torch.nn.functional.pad(images.float() / 255, (4, 4, 4, 4))
    offsets_seen, flips_seen = set(), set()
    for i in range(8):
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(2) if flip else w)(
                       padded[i, :, dy:dy + 32, dx:dx + 32]))]
        assert matches, f"image {i} is not a (flipped) window of its padded source"
        offsets_seen.add(matches[0][:2])
        flips_seen.add(matches[0][2])
    assert len(offsets_seen) > 1 and flips_seen == {False, True}


def test_cutout_zeroes_one_square_of_at_most_16_pixels() -> None:
    aug = Augmenter((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), cutout=16, padding=0,
                    generator=torch.Generator().manual_seed(1))
    images = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8)
    out = aug.train(images)
    for i in range(16):
        holes = (out[i] == 0).all(0)
        rows, cols = holes.any(1).nonzero().flatten(), holes.any(0).nonzero().flatten()
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16  # clipped at the border at worst
        assert holes.sum() == len(rows) * len(cols)  # one rectangle
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all()
        assert (out[i][:, ~holes] > 0).all()


def test_augmentation_is_reproducible_from_the_generator_state() -> None:
    generator = torch.Generator().manual_seed(7)
    aug = Augmenter((0.4, 0.4, 0.4), (0.2, 0.2, 0.2), cutout=16, generator=generator)
    state = generator.get_state()
    first = aug.train(_images())
    generator.set_state(state)
    assert torch.equal(first, aug.train(_images()))
    assert not torch.equal(first, aug.train(_images()))
