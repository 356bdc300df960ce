"""Fixtures shared by several test files: a marker file and a loopback listener for the sandbox
tests, a launcher of search subprocesses for the crash and interrupt tests."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.search_helpers import ROOT


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


@pytest.fixture
def start() -> Iterator[Callable[[list[str], Path], subprocess.Popen]]:
    """Start searches (output appended to a log); a failing test leaves none of them running.

    Each gets its own process group, so a test can send Ctrl-C as a terminal sends it.
    """
    started: list[subprocess.Popen] = []

    def launch(argv: list[str], log: Path) -> subprocess.Popen:
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            started.append(subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        return started[-1]

    yield launch
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
