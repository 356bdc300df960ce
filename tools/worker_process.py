"""Parent-side handles of sandbox processes: the zygote that forks workers, and one worker.

The zygote (``python -m tools.sandbox``) starts with a scrubbed environment, imports torch and the
registries once and forks a worker per request, handing it its task pipe, reply pipe and log file
over an AF_UNIX socket. A :class:`WorkerProcess` speaks JSON lines with its worker, knows its
deadline and resident memory, and can kill it (its whole process group) at any moment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

from tools.sandbox import scrubbed_env

_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class WorkerConfig:
    """How sandbox workers are started (the same for every task they run)."""

    device: str = "cpu"  # "cpu" or "cuda"
    timeout_s: float = 60.0
    memory_mb: int = 6144
    threads: int = 1
    #: Proxies warmed up at start-up, so their lazy imports happen before the lock-down.
    proxies: tuple[str, ...] = ()
    startup_timeout_s: float = 300.0


def failure(kind: str, message: str) -> dict:
    """Return a reply dict for a candidate that failed with ``kind``."""
    return {"error": {"kind": kind, "message": message}, "params": None, "flops": None}


class Zygote:
    """Parent-side handle of the zygote: a process that imported torch once and forks workers.

    Forking a warmed-up process makes a fresh worker ready in a fraction of a second, so a
    worker killed for a timeout or a memory blow-up is replaced almost for free.
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.scratch = tempfile.mkdtemp(prefix="rznas-zygote-")
        self.log_path = os.path.join(self.scratch, "zygote.log")
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._spawned: dict[int, int] = {}
        self._next = 0
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = scrubbed_env(
            HOME=self.scratch,
            TMPDIR=self.scratch,
            PYTHONPATH=_ROOT,
            OMP_NUM_THREADS=str(config.threads),
            MKL_NUM_THREADS=str(config.threads),
            PYTHONDONTWRITEBYTECODE="1",
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tools.sandbox",
                    str(theirs.fileno()),
                    json.dumps({**asdict(config), "proxies": list(config.proxies)}),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.scratch,
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        theirs.close()
        self._finalizer = weakref.finalize(self, _end_zygote, self.proc, self.sock, self.scratch)

    def alive(self) -> bool:
        """Return True while the zygote process runs."""
        return self.proc.poll() is None

    def _receive(self, timeout: float | None) -> bool:
        """Read one control message into the bookkeeping; False on timeout or hang-up."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except (TimeoutError, OSError):
            return False
        if not data:
            return False
        message = json.loads(data)
        if "exited" in message:
            self._exits[message["exited"]] = message["status"]
        elif "spawned" in message:
            self._spawned[message["spawned"]] = message["pid"]
        return True

    def spawn(self, request: dict, fds: list[int]) -> int:
        """Ask for a worker; return the request id (its pid arrives later, see :meth:`pid_of`)."""
        with self._lock:
            self._next += 1
            socket.send_fds(self.sock, [json.dumps({**request, "id": self._next}).encode()], fds)
            return self._next

    def pid_of(self, request_id: int, timeout: float = 0.0) -> int | None:
        """Return the pid forked for ``request_id`` once the zygote has reported it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while request_id not in self._spawned:
                left = deadline - time.monotonic()
                if left <= 0 or not self._receive(left):
                    break
            return self._spawned.get(request_id)

    def exit_status(self, pid: int, timeout: float = 1.0) -> int | None:
        """Return the ``waitpid`` status of worker ``pid`` once the zygote has reaped it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while pid not in self._exits:
                left = deadline - time.monotonic()
                if left <= 0 or not self._receive(left):
                    break
            return self._exits.pop(pid, None)

    def log_tail(self, limit: int = 400) -> str:
        """Return the end of the zygote's log (import errors land here)."""
        try:
            return Path(self.log_path).read_text(errors="replace").strip()[-limit:]
        except OSError:
            return ""

    def close(self) -> None:
        """Kill the zygote (its workers notice and exit) and remove its scratch directory."""
        self._finalizer()


def _end_zygote(proc: subprocess.Popen, sock: socket.socket, scratch: str) -> None:
    """Kill a zygote's process group and clean up (also runs if its handle is garbage-collected)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    sock.close()
    shutil.rmtree(scratch, ignore_errors=True)


def _end_worker(resources: dict) -> None:
    """Kill a worker, close its pipes and remove its scratch directory (runs once)."""
    pid = resources["pid"]
    if pid:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for fd in resources["fds"]:
        try:
            os.close(fd)
        except OSError:
            pass
    shutil.rmtree(resources["scratch"], ignore_errors=True)


class WorkerProcess:
    """Parent-side handle of one sandbox worker forked by the zygote."""

    def __init__(
        self, config: WorkerConfig, zygote: Zygote, cuda_device: str | None = None
    ) -> None:
        self.config, self.zygote = config, zygote
        self.scratch = tempfile.mkdtemp(prefix="rznas-worker-")
        self.log_path = os.path.join(self.scratch, "worker.log")
        task_r, self._task_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        request = {
            "scratch": self.scratch,
            "cuda_device": cuda_device,
            "config": {**asdict(config), "proxies": list(config.proxies)},
        }
        self._request: int | None = None
        try:
            self._request = zygote.spawn(request, [task_r, reply_w, log_fd])
        except OSError:
            pass  # the zygote is gone: this worker reads EOF at once and reports why
        finally:
            for fd in (task_r, reply_w, log_fd):
                os.close(fd)
        os.set_blocking(self._reply_r, False)
        self._resources = {
            "pid": None,
            "fds": [self._task_w, self._reply_r],
            "scratch": self.scratch,
        }
        self._finalizer = weakref.finalize(self, _end_worker, self._resources)
        self._buffer = b""
        self.ready = False
        self.pid: int | None = None
        self.baseline_rss = 0
        self.isolation: dict[str, bool] = {}
        self.started = time.monotonic()
        self.deadline: float | None = None

    def fileno(self) -> int:
        """Return the descriptor replies arrive on (for ``selectors``)."""
        return self._reply_r

    def submit(self, task: dict) -> None:
        """Send ``task``; its clock starts now, or once the worker reports ready."""
        try:
            os.write(self._task_w, (json.dumps(task) + "\n").encode())
        except OSError:
            pass  # a dead worker shows up as EOF on the reply pipe
        self.deadline = time.monotonic() + self.config.timeout_s if self.ready else None

    def read(self) -> tuple[list[dict], bool]:
        """Return the complete messages available now and whether the worker hung up."""
        try:
            chunk = os.read(self._reply_r, 1 << 20)
        except BlockingIOError:
            return [], False
        except OSError:
            chunk = b""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            messages.append(message if isinstance(message, dict) else {"malformed": True})
        return messages, not chunk

    def mark_ready(self, message: dict) -> None:
        """Record the ready message and start the clock of a task already waiting."""
        self.ready = True
        self.pid = int(message["pid"])
        self.baseline_rss = int(message.get("rss", 0))
        self.isolation = dict(message.get("isolation") or {})
        self.deadline = time.monotonic() + self.config.timeout_s

    def rss(self) -> int:
        """Return the worker's resident memory in bytes (0 when unknown or gone)."""
        if self.pid is None:
            return 0
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def log_tail(self, limit: int = 400) -> str:
        """Return the end of what the worker wrote to stderr."""
        try:
            return Path(self.log_path).read_text(errors="replace").strip()[-limit:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Kill the worker's process group, close its pipes and remove its scratch directory."""
        if self._finalizer.alive and self._resources["pid"] is None and self.pid is None:
            self.pid = self.zygote.pid_of(self._request, 2.0) if self._request else None
        self._resources["pid"] = self.pid
        self._finalizer()  # idempotent: descriptors are never closed twice

    def death_reply(self) -> dict:
        """Describe why the worker stopped, as a failure reply for the task it was running."""
        tail = self.log_tail()
        last = tail.splitlines()[-1] if tail else ""
        if not self.ready:
            why = last or self.zygote.log_tail() or "no output"
            return failure("crashed", f"the evaluation worker failed to start: {why}")
        status = self.zygote.exit_status(self.pid, timeout=1.0)
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return failure("timeout", "the candidate exceeded its CPU-time limit")
            return failure(
                "crashed",
                (
                    f"the evaluation worker died from {signal.Signals(sig).name} while building or "
                    f"scoring the network{' (' + last + ')' if last else ''}"
                ),
            )
        if "MemoryError" in tail:
            return failure(
                "memory",
                f"the evaluation worker ran out of memory ({self.config.memory_mb} MB allowed)",
            )
        code = os.WEXITSTATUS(status) if status is not None else "unknown"
        return failure("crashed", f"the evaluation worker exited unexpectedly: {last or code}")
