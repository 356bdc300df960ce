"""Fixtures shared by several test files (the sandbox tests' marker file and loopback listener)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A path no candidate may create."""
    return tmp_path / "marker"


@pytest.fixture
def listener():
    """Listen on a loopback socket this test owns; no candidate may reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.3)
    yield server
    server.close()
