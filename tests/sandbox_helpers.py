"""Shared by the sandbox tests: one task through a worker pool; nothing reached a loopback listener.

The ``marker`` and ``listener`` fixtures live in ``tests/conftest.py``.
"""

from __future__ import annotations

import socket
import pytest

from tools.executors import LocalExecutor, WorkerConfig


def one_worker_pool() -> LocalExecutor:
    """A one-worker pool (1 GB, 20 s, the ``params`` proxy) for tasks with or without the check."""
    return LocalExecutor(WorkerConfig(timeout_s=20, memory_mb=1024, proxies=("params",)), workers=1)


def run_task(pool: LocalExecutor, source: str, *, unchecked: bool) -> dict:
    """Score torch-code ``source`` with ``params`` in ``pool``; ``unchecked`` skips the static check."""
    task = {
        "space": "torch-code",
        "arch": source,
        "proxies": ["params"],
        "num_classes": 10,
        "resolution": 16,
        "seed": 0,
        "batch_size": 4,
        "unchecked": unchecked,
    }
    return pool.run([task])[0]


def assert_no_connection(server: socket.socket) -> None:
    """Fail when anything connected to ``server``."""
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return
    conn.close()
    pytest.fail("a candidate connected to the test's socket")
