"""A persistent cache of LLM replies (SQLite, WAL), so runs replay exactly and never pay twice.

The key is the sha256 of everything that decides a reply: the resolved model name, the role,
the messages, the output schema, temperature, seed and max_tokens. API keys, base-URL
credentials and timings are never part of it, and only the reply text and its token counts are
stored. Several processes may share one file (WAL mode, busy timeout).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

_SCHEMA_VERSION = 1


class LLMCacheError(RuntimeError):
    """The cache file cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class CachedReply:
    """A stored reply: the raw text and the token counts of the call that produced it."""

    text: str
    input_tokens: int
    output_tokens: int


def _schema_json(schema: type[BaseModel] | dict[str, Any] | None) -> Any:
    if schema is None:
        return None
    if isinstance(schema, dict):
        return schema
    return {"name": schema.__name__, "schema": schema.model_json_schema()}


class LLMCache:
    """Reply cache keyed by ``LLMCache.key(...)``; thread-safe, shareable between processes."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the cache at ``path``.

        Raises:
            LLMCacheError: the file exists but is not a usable rznas cache.
        """
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, check_same_thread=False, isolation_level=None
            )
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise LLMCacheError(
                    f"LLM cache {self.path} was written by a newer rznas (format {version}); "
                    "upgrade, point the run at another cache, or run with --no-llm-cache"
                )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed run still loses nothing
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "role TEXT NOT NULL, text TEXT NOT NULL, input_tokens INTEGER NOT NULL, "
                "output_tokens INTEGER NOT NULL, created REAL NOT NULL)"
            )
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> LLMCacheError:
        return LLMCacheError(
            f"LLM cache {self.path} is unreadable or corrupt ({exc}); delete the file to start "
            "a fresh cache, or run with --no-llm-cache"
        )

    @staticmethod
    def key(
        model: str,
        role: str,
        messages: list[dict[str, str]],
        schema: type[BaseModel] | dict[str, Any] | None,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> str:
        """Return the cache key (hex sha256) of one request."""
        payload = {
            "model": model,
            "role": role,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "schema": _schema_json(schema),
            "temperature": float(temperature),
            "seed": int(seed),
            "max_tokens": int(max_tokens),
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> CachedReply | None:
        """Return the stored reply for ``key``, or None."""
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT text, input_tokens, output_tokens FROM replies WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from None
        return CachedReply(*row) if row else None

    def put(
        self, key: str, *, model: str, role: str, text: str, input_tokens: int, output_tokens: int
    ) -> None:
        """Store a reply (the first one stored under a key wins)."""
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, model, role, text, int(input_tokens), int(output_tokens), time.time()),
                )
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from None

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LLMCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
