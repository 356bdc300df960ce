"""The LLM reply cache: keys, persistence, corruption handling.

Run: .venv/bin/python -m pytest -q tests/test_llm_cache.py
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from pydantic import BaseModel

from agents.llm_cache import LLMCache, LLMCacheError

MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": "parent: x"}]
BASE = dict(
    model="local:m",
    role="designer",
    messages=MSGS,
    schema=None,
    temperature=0.6,
    seed=3,
    max_tokens=256,
)


class Out(BaseModel):
    arch: str


def key(**changes) -> str:
    return LLMCache.key(**{**BASE, **changes})


def test_key_is_stable_and_sees_every_input():
    assert key() == key() and len(key()) == 64
    variants = [
        key(model="local:other"),
        key(role="reflector"),
        key(messages=[*MSGS[:1], {"role": "user", "content": "parent: y"}]),
        key(schema=Out),
        key(temperature=0.8),
        key(seed=4),
        key(max_tokens=128),
    ]
    assert len({key(), *variants}) == len(variants) + 1
    # Extra fields in a message (ids, names) do not change what the model sees, so not the key.
    assert key(messages=[{**m, "id": 1} for m in MSGS]) == key()


def test_put_get_roundtrip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    with LLMCache(path) as cache:
        assert cache.get(key()) is None
        cache.put(
            key(),
            model="local:m",
            role="designer",
            text='{"arch": "a"}',
            input_tokens=10,
            output_tokens=3,
        )
        cache.put(
            key(), model="local:m", role="designer", text="second", input_tokens=1, output_tokens=1
        )
        assert len(cache) == 1
    with LLMCache(path) as reopened:
        hit = reopened.get(key())
        assert (hit.text, hit.input_tokens, hit.output_tokens) == (
            '{"arch": "a"}',
            10,
            3,
        )  # first write wins
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_threads_share_one_cache(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")

    def write(i: int) -> None:
        for j in range(20):
            cache.put(
                key(seed=i * 100 + j),
                model="m",
                role="r",
                text=str(j),
                input_tokens=1,
                output_tokens=1,
            )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 80


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "llm_cache.sqlite"
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(LLMCacheError) as info:
        LLMCache(path)
    assert str(path) in str(info.value) and "--no-llm-cache" in str(info.value)


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    LLMCache(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(LLMCacheError, match="newer rznas"):
        LLMCache(path)
