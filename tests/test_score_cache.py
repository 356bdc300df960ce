"""The SQLite score cache: keys, persistence, concurrency and unusable files.

Run: .venv/bin/python -m pytest tests/test_score_cache.py
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tools.score_cache import CacheContext, CachedScore, ScoreCache, ScoreCacheError

ROOT = Path(__file__).resolve().parents[1]
CTX = CacheContext("nb201", "cifar10", 10, 32, "cpu", seed=0, batch_size=64)
ARCH = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"


def test_scores_round_trip_and_every_key_part_matters(tmp_path: Path) -> None:
    cache = ScoreCache(tmp_path / "c.db")
    cache.put_candidate(CTX, ARCH, 1000, 2000)
    cache.put_scores(
        CTX,
        ARCH,
        {
            "synflow": (1, CachedScore(3.5, None, None)),
            "grad_norm": (2, CachedScore(None, "non_finite", "nan")),
        },
    )
    assert cache.get_candidate(CTX, ARCH).params == 1000
    got = cache.get_scores(CTX, ARCH, {"synflow": 1, "grad_norm": 2, "naswot": 1})
    assert got["synflow"].value == 3.5 and got["grad_norm"].error_kind == "non_finite"
    assert "naswot" not in got
    assert cache.get_scores(CTX, ARCH, {"synflow": 2}) == {}  # a new proxy version is a miss
    for change in (
        {"seed": 1},
        {"batch_size": 32},
        {"device": "cuda"},
        {"resolution": 16},
        {"num_classes": 100, "dataset": "cifar100"},
        {"space": 'nb201{"channels": 8}'},
    ):
        other = replace(CTX, **change)
        assert cache.get_scores(other, ARCH, {"synflow": 1}) == {}, change
    assert cache.get_candidate(replace(CTX, seed=1), ARCH) is not None  # counts ignore the seed
    assert cache.get_candidate(CTX, ARCH + " ") is None


def test_rejections_and_build_errors_persist_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.db"  # parent folders are created
    first = ScoreCache(path)
    first.put_rejection("nb201", "junk", "invalid_architecture", "expected 3 node groups")
    first.put_candidate(CTX, ARCH, None, None, ("build_error", "boom"))
    first.close()
    second = ScoreCache(path)
    assert second.get_rejection("nb201", "junk") == (
        "invalid_architecture",
        "expected 3 node groups",
    )
    assert second.get_rejection("torch-code", "junk") is None
    row = second.get_candidate(CTX, ARCH)
    assert (row.error_kind, row.error_message) == ("build_error", "boom")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_in_memory_cache_needs_no_file() -> None:
    cache = ScoreCache(None)
    cache.put_rejection("nb201", "x", "invalid_architecture", "m")
    assert cache.counts() == {"rejections": 1, "candidates": 0, "scores": 0}


WRITER = """
import sys
from tools.score_cache import CacheContext, CachedScore, ScoreCache
ctx = CacheContext("nb201", "cifar10", 10, 32, "cpu", seed=0, batch_size=64)
cache = ScoreCache(sys.argv[1])
for i in range(150):
    cache.put_scores(ctx, f"{sys.argv[2]}-{i}", {"params": (1, CachedScore(float(i), None, None))})
"""


def test_concurrent_writers_in_separate_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ScoreCache(path).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), tag],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            stderr=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    assert ScoreCache(path).counts()["scores"] == 300


def test_corrupt_file_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ScoreCacheError) as info:
        ScoreCache(path)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(ScoreCacheError, match="another program.*users"):
        ScoreCache(path)


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ScoreCache(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='0' WHERE key='version'")
    db.commit()
    db.close()
    with pytest.raises(ScoreCacheError, match="version 0.*delete it"):
        ScoreCache(path)


def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScoreCacheError, match="directory"):
        ScoreCache(tmp_path)
