"""Executors: where sandbox workers run. One interface, ``run(tasks) -> replies`` in task order.

:class:`LocalExecutor` keeps N persistent worker processes on this machine, forked by one zygote
(``python -m tools.sandbox``); it enforces the wall-clock timeout and the resident-memory limit
from the parent, kills and replaces any worker that overruns, dies or misbehaves, and goes on
with the batch.

:class:`RayExecutor` scales the same thing out. Decision: each Ray actor owns a one-worker
:class:`LocalExecutor`, so a candidate always runs in a sandbox subprocess with exactly the same
rules (scrubbed environment, namespaces, rlimits, audit hook), never inside the Ray worker
process, whose environment and privileges are Ray's. When the evaluator starts Ray itself (local
instance or ``ray_address``) it ships the ``tools`` package with the job (``py_modules``), so
cluster nodes need not have it installed; when the caller already called ``ray.init``, actors get
``PYTHONPATH`` pointing at this checkout, which serves nodes on this machine.

Both are thread-safe: concurrent ``run`` calls share the workers.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any, Protocol

from tools.worker_process import _ROOT, WorkerConfig, WorkerProcess, Zygote, failure

_POLL_S = 0.1


class Executor(Protocol):
    """Runs sandbox tasks (dicts, see ``tools.sandbox_worker.Worker``); one reply per task."""

    def run(self, tasks: list[dict]) -> list[dict]:
        """Evaluate ``tasks``; replies come back in the same order, failures as error replies."""

    def close(self) -> None:
        """Stop all workers."""


class LocalExecutor:
    """A pool of persistent sandbox worker processes on this machine."""

    def __init__(
        self, config: WorkerConfig, workers: int = 1, cuda_devices: list[str] | None = None
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.config = config
        self._cuda = cuda_devices or []
        self._slots = 0
        self._lock = threading.Condition()
        self._idle: deque[WorkerProcess] = deque()
        self._closed = False
        self._all: set[WorkerProcess] = set()
        self._zygote = Zygote(config)
        for _ in range(workers):
            self._idle.append(self._spawn())

    def _spawn(self) -> WorkerProcess:
        device = self._cuda[self._slots % len(self._cuda)] if self._cuda else None
        self._slots += 1
        if not self._zygote.alive():  # killed from outside: start another (slow path)
            self._zygote.close()
            self._zygote = Zygote(self.config)
        worker = WorkerProcess(self.config, self._zygote, device)
        self._all.add(worker)
        return worker

    def pids(self) -> list[int]:
        """Return the process ids of the current workers."""
        with self._lock:
            return [w.pid for w in self._all if w.pid is not None]

    def isolation(self) -> list[dict[str, bool]]:
        """Return which OS-level layers each ready worker got (netns, readonly_fs, proc_masked)."""
        with self._lock:
            return [dict(w.isolation) for w in self._all if w.ready]

    def _acquire(self, block: bool) -> WorkerProcess | None:
        with self._lock:
            while not self._idle:
                if not block or self._closed:
                    return None
                self._lock.wait(_POLL_S)
            return self._idle.popleft()

    def _release(self, worker: WorkerProcess) -> None:
        with self._lock:
            self._idle.append(worker)
            self._lock.notify()

    def _replace(self, worker: WorkerProcess) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            fresh = None if self._closed else self._spawn()
        if fresh is not None:
            self._release(fresh)

    def run(self, tasks: list[dict]) -> list[dict]:
        """Evaluate ``tasks`` on the pool; every task gets a reply, in order."""
        replies: list[dict | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        busy: dict[WorkerProcess, int] = {}
        with selectors.DefaultSelector() as selector:
            while pending or busy:
                while pending:
                    worker = self._acquire(block=not busy)
                    if worker is None:
                        if not busy:  # closed while waiting
                            for i in pending:
                                replies[i] = failure("crashed", "the evaluator was closed")
                            pending.clear()
                        break
                    index = pending.popleft()
                    worker.submit({**tasks[index], "id": index})
                    busy[worker] = index
                    selector.register(worker, selectors.EVENT_READ)
                for key, _ in selector.select(timeout=_POLL_S):
                    worker = key.fileobj
                    messages, eof = worker.read()
                    for message in messages:
                        if "ready" in message and not message.get("ready"):
                            continue  # start-up failure: EOF follows, death_reply explains it
                        if message.get("ready"):
                            worker.mark_ready(message)
                            continue
                        index = busy[worker]
                        if message.get("id") != index:
                            replies[index] = failure(
                                "crashed", "the evaluation worker sent a malformed reply"
                            )
                            eof = True
                            break
                        replies[index] = message
                        selector.unregister(worker)
                        del busy[worker]
                        if message.get("restart"):
                            self._replace(worker)
                        else:
                            self._release(worker)
                        break
                    if eof and worker in busy:
                        index = busy.pop(worker)
                        selector.unregister(worker)
                        if replies[index] is None:
                            replies[index] = worker.death_reply()
                        self._replace(worker)
                self._enforce_limits(busy, replies, selector)
        return [r if r is not None else failure("crashed", "no reply") for r in replies]

    def _enforce_limits(
        self, busy: dict[WorkerProcess, int], replies: list, selector: selectors.BaseSelector
    ) -> None:
        now = time.monotonic()
        limit = self.config.memory_mb * (1 << 20)
        for worker, index in list(busy.items()):
            reply = None
            if not worker.ready and now - worker.started > self.config.startup_timeout_s:
                reply = failure(
                    "crashed",
                    "the evaluation worker did not start within "
                    f"{self.config.startup_timeout_s:.0f} s",
                )
            elif worker.deadline is not None and now > worker.deadline:
                reply = failure(
                    "timeout",
                    (
                        f"building and scoring took longer than {self.config.timeout_s:g} s "
                        "and was stopped; make the network smaller or remove loops in forward"
                    ),
                )
            elif worker.ready and worker.rss() > worker.baseline_rss + limit:
                reply = failure(
                    "memory",
                    (
                        f"the network used more than {self.config.memory_mb} MB of memory and was "
                        "stopped; use fewer channels or layers"
                    ),
                )
            if reply is not None:
                replies[index] = reply
                selector.unregister(worker)
                del busy[worker]
                self._replace(worker)

    def close(self) -> None:
        """Kill every worker; later ``run`` calls fail their tasks."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._lock.notify_all()
        for worker in workers:
            worker.kill()
        self._zygote.close()


class _SandboxActor:
    """Body of the Ray actor: a one-worker local pool on whichever node Ray placed it."""

    def __init__(self, config: dict) -> None:
        self.pool = LocalExecutor(WorkerConfig(**config), workers=1)

    def run(self, task: dict) -> dict:
        return self.pool.run([task])[0]

    def pids(self) -> list[int]:
        return self.pool.pids()

    def close(self) -> None:
        self.pool.close()


class RayExecutor:
    """Run sandbox workers as Ray actors (``ray_address=None`` starts a local Ray instance)."""

    def __init__(self, config: WorkerConfig, workers: int = 1, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("the ray executor needs Ray: pip install 'rznas[ray]'") from None
        self.ray, self.config = ray, config
        if not ray.is_initialized():
            # Ship this package with the job, so every node can import it, installed there or not.
            job_env = {"py_modules": [os.path.join(_ROOT, "tools")], "excludes": ["__pycache__"]}
            if address is None:
                ray.init(
                    num_cpus=max(workers, 1),
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env=job_env,
                )
            else:
                ray.init(address=address, log_to_driver=False, runtime_env=job_env)
        gpus = 1 if config.device == "cuda" else 0
        # Ray started by the caller: make the package importable on this machine's nodes at least.
        actor_env = {"env_vars": {"PYTHONPATH": _ROOT}}
        self._actor_cls = ray.remote(num_cpus=1, num_gpus=gpus, runtime_env=actor_env)(
            _SandboxActor
        )
        self._lock = threading.Condition()
        self._idle = deque(self._actor_cls.remote(asdict(config)) for _ in range(workers))
        self._closed = False

    def _acquire(self, block: bool) -> Any:
        with self._lock:
            while not self._idle:
                if not block:
                    return None
                self._lock.wait(_POLL_S)
            return self._idle.popleft()

    def run(self, tasks: list[dict]) -> list[dict]:
        """Evaluate ``tasks`` on the actors, in order."""
        ray = self.ray
        replies: list[dict | None] = [None] * len(tasks)
        pending, refs = deque(range(len(tasks))), {}
        # A healthy actor answers within the task timeout (plus a worker restart); this is the
        # last line of defence against a lost node.
        budget = self.config.timeout_s + self.config.startup_timeout_s + 30
        while pending or refs:
            while pending and not self._closed:
                actor = self._acquire(block=not refs)
                if actor is None:
                    break
                index = pending.popleft()
                refs[actor.run.remote(tasks[index])] = (index, actor, time.monotonic())
            if self._closed and not refs:
                break
            done, _ = ray.wait(list(refs), num_returns=1, timeout=_POLL_S)
            for ref in done:
                index, actor, _ = refs.pop(ref)
                try:
                    replies[index] = ray.get(ref)
                    self._give_back(actor)
                except Exception as exc:  # noqa: BLE001 - an actor or node died
                    replies[index] = failure(
                        "crashed", f"the Ray worker failed: {type(exc).__name__}"
                    )
                    self._renew(actor)
            for ref, (index, actor, started) in list(refs.items()):
                if time.monotonic() - started > budget:
                    refs.pop(ref)
                    replies[index] = failure("timeout", "the Ray worker did not answer in time")
                    self._renew(actor)
        return [
            r if r is not None else failure("crashed", "the evaluator was closed") for r in replies
        ]

    def _give_back(self, actor: Any) -> None:
        with self._lock:
            self._idle.append(actor)
            self._lock.notify()

    def _renew(self, actor: Any) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if not self._closed:
            self._give_back(self._actor_cls.remote(asdict(self.config)))

    def close(self) -> None:
        """Stop the actors (their sandbox workers die with them)."""
        self._closed = True
        with self._lock:
            actors, self._idle = list(self._idle), deque()
        for actor in actors:
            try:
                self.ray.get(actor.close.remote(), timeout=10)
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
