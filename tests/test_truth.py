"""Tests for the ground-truth loader (synthetic files, plus the real data when present)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tools.spaces import ArchitectureError
from tools.truth import (
    ENV_VAR,
    GroundTruth,
    TruthError,
    arch_to_naslib_key,
    load_truth,
    naslib_key_to_arch,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
A = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
    "|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
)
B = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
HEADER = (
    "index,arch_str,cifar10_test_acc,cifar100_test_acc,imagenet16_120_test_acc,"
    "cifar10_valid_acc,cifar10_valid_split_test_acc,isomorphism_key"
)


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    path = tmp_path / "truth.csv"
    path.write_text(
        f"{HEADER}\n0,{A},94.37,73.2,46.1,91.61,91.52,keyA\n1,{B},10.0,1.0,0.83,10.0,10.0,#+#+#\n"
    )
    return path


@pytest.fixture
def naslib_json(tmp_path: Path) -> Path:
    record = {
        "val_accuracy": 88.5,
        "params": {"score": 1.2, "time": 0.1},
        "nwot": {"score": 400.0, "time": 0.5},
    }
    data = {
        "cifar10": {"(0, 2, 3, 2, 3, 1)": {"idx": "1", "arch": "x", **record}},
        "ImageNet16-120": {"(1, 1, 1, 1, 1, 1)": {**record, "val_accuracy": 1.0}},
    }
    path = tmp_path / "zc.json"
    path.write_text(json.dumps(data))
    return path


def test_csv_query_accepts_any_spelling(small_csv):
    truth = load_truth(small_csv)
    assert isinstance(truth, GroundTruth)
    assert len(truth) == 2
    assert truth.metrics == [
        "cifar10_test_acc",
        "cifar100_test_acc",
        "imagenet16_120_test_acc",
        "cifar10_valid_acc",
        "cifar10_valid_split_test_acc",
    ]
    assert truth.query(A) == 91.61  # default metric: CIFAR-10 validation accuracy
    assert truth.query(f"  {A.strip('|')} \n", "cifar10_test_acc") == 94.37
    assert truth.query(A.replace("|+|", " | + | "), "imagenet16_120_test_acc") == 46.1
    assert truth.isomorphism_key(B) == "#+#+#"
    assert A in truth and "garbage" not in truth


def test_query_unknown_cell_metric_and_bad_string(small_csv):
    truth = load_truth(small_csv)
    other = B.replace("none~2", "skip_connect~2")
    assert truth.query(other) is None
    with pytest.raises(TruthError, match="no metric 'top1'.*cifar10_test_acc"):
        truth.query(A, "top1")
    with pytest.raises(ArchitectureError, match="unknown operation"):
        truth.query(A.replace("skip_connect", "skip"))
    with pytest.raises(TruthError, match="only NASLib"):
        truth.reference_scores("cifar10")


def test_path_from_environment_and_none(small_csv, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(small_csv))
    assert len(load_truth(None)) == 2
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(TruthError, match=f"pass a path.*{ENV_VAR}"):
        load_truth(None)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "file is empty"),
        (b"  \n\n", "file is empty"),
        (b"foo,bar\n1,2\n", "no 'arch_str' column"),
        (b"index,arch_str,isomorphism_key\n0,|none~0|,x\n", "no metric columns"),
        (bytes(range(256)) * 4, "not UTF-8"),
        (b"arch_str,acc\n\x00\x01\x02,3\n", "NUL bytes"),
        (f"arch_str,acc\n{A},abc\n".encode(), "line 2: column 'acc' holds 'abc', not a number"),
        (f"arch_str,acc\n{A},1\n{A},2\n".encode(), "line 3: duplicate row"),
        (
            b"arch_str,acc\n|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n",
            "line 2: bad arch_str",
        ),
        (f"arch_str,acc\n{A},1,2\n".encode(), "line 2: 3 fields, header has 2"),
        (b"arch_str,acc\n", "no data rows"),
        (b"{not json", "invalid JSON"),
        (b'{"cifar10": {"(9, 9)": {"val_accuracy": 1}}}', "not a NASLib NB201 key"),
        (b'{"cifar10": [1, 2]}', "not a {dataset: {cell: record}} mapping"),
    ],
)
def test_bad_files_raise_truth_error_naming_file_and_format(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(TruthError) as info:
        load_truth(path)
    message = str(info.value)
    assert fragment in message, message
    assert str(path) in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TruthError, match="not found.*arch_str"):
        load_truth(tmp_path / "nope.csv")
    with pytest.raises(TruthError, match="not a regular file"):
        load_truth(tmp_path)
    assert issubclass(TruthError, ValueError)


def test_naslib_json_metrics_and_reference_scores(naslib_json):
    truth = load_truth(naslib_json)
    assert truth.source == "naslib-json"
    assert truth.metrics == ["cifar10_val_acc", "imagenet16_120_val_acc"]
    arch = naslib_key_to_arch("(0, 2, 3, 2, 3, 1)")
    assert (
        arch
        == "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|none~2|"
    )
    assert truth.query(arch) == 88.5
    assert truth.query(arch, "imagenet16_120_val_acc") is None
    assert truth.query(B, "imagenet16_120_val_acc") == 1.0
    scores = truth.reference_scores("cifar10")
    assert scores == {arch: {"params": 1.2, "nwot": 400.0}}
    assert truth.reference_scores("imagenet16-120")[B]["nwot"] == 400.0
    with pytest.raises(TruthError, match="available: cifar10, ImageNet16-120"):
        truth.reference_scores("cifar100")


def test_naslib_key_round_trip():
    for key in ("(0, 2, 3, 2, 3, 1)", "(4, 0, 4, 1, 2, 0)", "(1, 1, 1, 1, 1, 1)"):
        assert arch_to_naslib_key(naslib_key_to_arch(key)) == key


@pytest.mark.skipif(not (DATA / "nb201.csv").exists(), reason="needs ../shared/data/nb201.csv")
def test_real_nb201_csv():
    start = time.perf_counter()
    truth = load_truth(DATA / "nb201.csv")
    elapsed = time.perf_counter() - start
    assert len(truth) == 15625
    best_arch, best = max(truth.items("cifar10_test_acc"), key=lambda item: item[1])
    assert truth.archs().index(best_arch) == 6111
    assert round(best, 2) == 94.37
    assert round(truth.query(best_arch, "cifar10_valid_acc"), 2) == 91.61
    assert elapsed < 3.0  # well under 1 s on an idle core; slack for shared CI machines


@pytest.mark.skipif(
    not (DATA / "naslib_zc_nb201_sample.json").exists(), reason="needs ../shared/data NASLib sample"
)
def test_real_naslib_sample():
    truth = load_truth(DATA / "naslib_zc_nb201_sample.json")
    scores = truth.reference_scores("cifar10")
    assert 700 < len(scores) < 750
    some = next(iter(scores.values()))
    assert {"nwot", "synflow", "params", "flops", "jacov", "snip"} <= set(some)
