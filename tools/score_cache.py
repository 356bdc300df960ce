"""SQLite cache of evaluation results, so a repeated, isomorphic or resumed candidate costs nothing.

Three tables, all keyed on what changes the numbers:

- ``rejections``: architectures the parent refused before building (invalid or forbidden), by
  space and the sha256 of the raw string;
- ``candidates``: parameter and FLOP counts, or a build error, by space, canonical architecture,
  dataset, class count, resolution and device type. Budgets are not part of the key: an
  over-budget verdict is recomputed from the cached counts against the current budget;
- ``scores``: one row per proxy (value, or a non-finite failure) with the candidate key plus proxy
  name and version, seed and batch size, so adding a proxy later only computes the new one.

Only deterministic outcomes are stored; timeouts, memory blow-ups and crashes are retried. The
file runs in WAL mode, so several processes (parallel searches, a resumed run) can share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA_NAME = "rznas-score-cache"
SCHEMA_VERSION = 1
#: Failure kinds worth remembering: the same input always fails the same way.
CACHEABLE_FAILURES = frozenset(
    {"invalid_architecture", "forbidden", "build_error", "non_finite", "over_budget"}
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (
    space TEXT NOT NULL, arch_sha TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (space, arch_sha));
CREATE TABLE IF NOT EXISTS candidates (
    space TEXT NOT NULL, arch_sha TEXT NOT NULL, dataset TEXT NOT NULL,
    num_classes INTEGER NOT NULL,
    resolution INTEGER NOT NULL, device TEXT NOT NULL, canonical TEXT NOT NULL, params INTEGER,
    flops INTEGER, error_kind TEXT, error_message TEXT, created REAL NOT NULL,
    PRIMARY KEY (space, arch_sha, dataset, num_classes, resolution, device));
CREATE TABLE IF NOT EXISTS scores (
    space TEXT NOT NULL, arch_sha TEXT NOT NULL, dataset TEXT NOT NULL,
    num_classes INTEGER NOT NULL,
    resolution INTEGER NOT NULL, device TEXT NOT NULL, proxy TEXT NOT NULL,
    proxy_version INTEGER NOT NULL, seed INTEGER NOT NULL, batch_size INTEGER NOT NULL,
    value REAL, error_kind TEXT, error_message TEXT, seconds REAL, created REAL NOT NULL,
    PRIMARY KEY (space, arch_sha, dataset, num_classes, resolution, device, proxy, proxy_version,
                 seed, batch_size));
"""


class ScoreCacheError(RuntimeError):
    """The cache file cannot be used (not SQLite, another program's database, another version)."""


@dataclass(frozen=True)
class CacheContext:
    """Everything besides the architecture and the proxy that changes a score."""

    space: str  # name plus options, e.g. 'nb201{"channels": 16}'
    dataset: str
    num_classes: int
    resolution: int
    device: str  # device type: cpu or cuda
    seed: int
    batch_size: int

    def candidate_key(self, canonical: str) -> tuple:
        """Return the primary key of the candidate row for ``canonical``."""
        return (
            self.space,
            _sha(canonical),
            self.dataset,
            self.num_classes,
            self.resolution,
            self.device,
        )


@dataclass(frozen=True)
class CachedCandidate:
    """A cached ``candidates`` row."""

    params: int | None
    flops: int | None
    error_kind: str | None
    error_message: str | None


@dataclass(frozen=True)
class CachedScore:
    """A cached ``scores`` row: a value, or a deterministic failure."""

    value: float | None
    error_kind: str | None
    error_message: str | None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ScoreCache:
    """A score cache in ``path`` (created if missing), or in memory when ``path`` is None."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        target = ":memory:"
        if self.path is not None:
            if self.path.is_dir():
                raise ScoreCacheError(f"score cache {self.path} is a directory; pass a file path")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        try:
            self._db = sqlite3.connect(
                target, timeout=30.0, check_same_thread=False, isolation_level=None
            )
            self._open()
        except sqlite3.DatabaseError as exc:
            raise ScoreCacheError(
                f"score cache {self.path} is not a usable SQLite file ({exc}); delete it or "
                "pass another --cache path"
            ) from None

    def _open(self) -> None:
        db = self._db
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise ScoreCacheError(
                f"{self.path} is an SQLite database of another program (tables: "
                f"{', '.join(sorted(tables))}); delete it or pass another --cache path"
            )
        if "meta" in tables:
            meta = dict(db.execute("SELECT key, value FROM meta"))
            if meta.get("schema") != SCHEMA_NAME:
                raise ScoreCacheError(
                    f"{self.path} is not an RZ-NAS score cache; delete it or "
                    "pass another --cache path"
                )
            if meta.get("version") != str(SCHEMA_VERSION):
                raise ScoreCacheError(
                    f"score cache {self.path} has format version {meta.get('version')}, this "
                    f"RZ-NAS reads version {SCHEMA_VERSION}; delete it (it only saves time)"
                )
            return
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('version', ?)",
                (SCHEMA_NAME, str(SCHEMA_VERSION)),
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
        # busy_timeout instead of failing half-way through.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise ScoreCacheError(
                f"reading score cache {self.path or ':memory:'} failed: {exc}"
            ) from None

    def _write(self, sql: str, rows: list[tuple]) -> None:
        if not rows:
            return
        try:
            with self._lock, self._transaction():
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise ScoreCacheError(
                f"writing score cache {self.path or ':memory:'} failed: {exc}"
            ) from None

    # --- rejections -----------------------------------------------------------------------
    def get_rejection(self, space: str, arch: str) -> tuple[str, str] | None:
        """Return ``(kind, message)`` for an architecture string refused before, else None."""
        rows = self._query(
            "SELECT kind, message FROM rejections WHERE space=? AND arch_sha=?", (space, _sha(arch))
        )
        return rows[0] if rows else None

    def put_rejection(self, space: str, arch: str, kind: str, message: str) -> None:
        """Remember that ``arch`` was refused with ``kind`` (invalid_architecture or forbidden)."""
        self._write(
            "INSERT OR REPLACE INTO rejections VALUES (?, ?, ?, ?, ?)",
            [(space, _sha(arch), kind, message, time.time())],
        )

    # --- candidates -----------------------------------------------------------------------
    def get_candidate(self, ctx: CacheContext, canonical: str) -> CachedCandidate | None:
        """Return the cached counts or build error of ``canonical``, else None."""
        rows = self._query(
            "SELECT params, flops, error_kind, error_message FROM candidates WHERE space=? AND "
            "arch_sha=? AND dataset=? AND num_classes=? AND resolution=? AND device=?",
            ctx.candidate_key(canonical),
        )
        return CachedCandidate(*rows[0]) if rows else None

    def put_candidate(
        self,
        ctx: CacheContext,
        canonical: str,
        params: int | None,
        flops: int | None,
        error: tuple[str, str] | None = None,
    ) -> None:
        """Store counts (either may be None when unknown) or a build error for ``canonical``."""
        kind, message = error if error else (None, None)
        self._write(
            "INSERT OR REPLACE INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*ctx.candidate_key(canonical), canonical, params, flops, kind, message, time.time())],
        )

    # --- scores ---------------------------------------------------------------------------
    def get_scores(
        self, ctx: CacheContext, canonical: str, proxies: dict[str, int]
    ) -> dict[str, CachedScore]:
        """Return the cached rows for ``proxies`` (name -> version) that exist."""
        out = {}
        key = ctx.candidate_key(canonical)
        for name, version in proxies.items():
            rows = self._query(
                "SELECT value, error_kind, error_message FROM scores WHERE space=? AND arch_sha=? "
                "AND dataset=? AND num_classes=? AND resolution=? AND device=? AND proxy=? AND "
                "proxy_version=? AND seed=? AND batch_size=?",
                (*key, name, version, ctx.seed, ctx.batch_size),
            )
            if rows:
                out[name] = CachedScore(*rows[0])
        return out

    def put_scores(
        self,
        ctx: CacheContext,
        canonical: str,
        rows: dict[str, tuple[int, CachedScore]],
        seconds: float | None = None,
    ) -> None:
        """Store proxy outcomes: name -> (proxy version, value or deterministic failure)."""
        key = ctx.candidate_key(canonical)
        self._write(
            "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    *key,
                    name,
                    version,
                    ctx.seed,
                    ctx.batch_size,
                    s.value,
                    s.error_kind,
                    s.error_message,
                    seconds,
                    time.time(),
                )
                for name, (version, s) in rows.items()
            ],
        )

    def counts(self) -> dict[str, int]:
        """Return the number of rows per table (for reports and tests)."""
        return {
            t: self._query(f"SELECT COUNT(*) FROM {t}", ())[0][0]  # noqa: S608 - fixed names
            for t in ("rejections", "candidates", "scores")
        }

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
