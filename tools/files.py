"""File writes that a kill cannot cut in half."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step, so a kill mid-write never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (a model or a bundle member can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database consistently, as one self-contained file, with SQLite's backup.

    A plain file copy of a WAL database can miss the pages still in ``-wal``. The copy is built
    beside ``target`` and renamed into place, so a kill never leaves half a database.

    Raises:
        sqlite3.Error: ``source`` is not a readable SQLite database.
    """
    import sqlite3

    tmp = Path(target).with_name(f".{Path(target).name}.tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # no -wal or -shm needed next to it
        finally:
            dst.close()
    finally:
        src.close()
    os.replace(tmp, target)
