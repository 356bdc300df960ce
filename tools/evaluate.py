"""Evaluate candidate architectures: validate, build and score them in sandboxed workers.

This is the search graph's tool node. :class:`Evaluator` takes a batch of architecture strings and
returns one :class:`EvalResult` per string, in order: scores plus parameter and FLOP counts, or a
:class:`Failure` whose message is written for the Designer. It never raises for a bad candidate.

Cheap checks run here (parsing, the ``torch-code`` static check, the cache); building and scoring
run in persistent worker processes (``tools.sandbox``) behind an executor (``tools.executors``).

Command line::

    python -m tools.evaluate --space nb201 --proxy synflow,params \\
        --arch '|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|'

Exit status: 0 scored, 1 the candidate failed, 2 usage error.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tools.datasets import get_dataset
from tools.executors import LocalExecutor, RayExecutor, WorkerConfig
from tools.proxies import get_proxy
from tools.score_cache import (
    CACHEABLE_FAILURES,
    CacheContext,
    CachedScore,
    ScoreCache,
    ScoreCacheError,
)
from tools.spaces import ArchitectureError, get_space

#: Every value ``Failure.kind`` can take.
FAILURE_KINDS = (
    *("invalid_architecture", "build_error", "timeout", "memory"),
    *("non_finite", "forbidden", "crashed", "over_budget"),
)


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and how; hashable, so it can sit in a search configuration."""

    space: str = "nb201"
    proxies: tuple[str, ...] = ("synflow",)
    dataset: str = "cifar10"
    seed: int = 0
    batch_size: int = 64
    resolution: int | None = None  # None: the dataset's
    device: str = "auto"  # auto, cpu or cuda
    timeout_s: float = 60.0
    memory_mb: int = 6144
    max_params: float | None = None  # budgets: reject before any proxy runs
    max_flops: float | None = None
    space_options: tuple[tuple[str, Any], ...] = ()  # keyword arguments for get_space
    threads: int = 1  # torch threads per worker


@dataclass
class Failure:
    """Why a candidate has no score; ``message`` is shown to the Designer verbatim."""

    kind: str
    message: str


@dataclass
class EvalResult:
    """The outcome of one candidate."""

    arch: str
    canonical: str | None
    ok: bool
    scores: dict[str, float]
    params: int | None
    flops: int | None
    seconds: float
    cached: bool
    error: Failure | None

    def score(self, proxy: str) -> float | None:
        """Return the score of ``proxy``, or None when it was not computed."""
        return self.scores.get(proxy)

    def to_dict(self) -> dict:
        """Return a JSON-able dict (the fields of the ``evaluation`` event)."""
        return asdict(self)


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; check explicit choices."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was requested but torch sees no CUDA GPU; use --device cpu")
    return device


def _cuda_slots() -> list[str]:
    import os

    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


class Evaluator:
    """Score architectures with zero-cost proxies in sandboxed workers, with a score cache.

    Args:
        settings: what to evaluate (space, proxies, dataset, limits, budgets).
        workers: number of worker processes (or Ray actors).
        executor: ``local`` (process pool) or ``ray``.
        cache_path: SQLite score cache; None keeps an in-memory cache for this evaluator.
        ray_address: Ray cluster to join; None starts a local Ray instance.

    Raises:
        ValueError: an unknown space, proxy, dataset, device or executor.
        ScoreCacheError: the cache file is unusable (the message names the file and the fix).

    """

    def __init__(
        self,
        settings: EvalSettings,
        *,
        workers: int = 1,
        executor: str = "local",
        cache_path: str | Path | None = None,
        ray_address: str | None = None,
    ) -> None:
        if not settings.proxies:
            raise ValueError("name at least one proxy to score with")
        if executor not in ("local", "ray"):
            raise ValueError(f"unknown executor {executor!r}; choose local or ray")
        if executor == "ray" and importlib.util.find_spec("ray") is None:
            raise RuntimeError("the ray executor needs Ray: pip install 'rznas[ray]'")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.settings = settings
        options = dict(settings.space_options)
        self.space = get_space(settings.space, **options)
        self.proxy_versions = {p: get_proxy(p).version for p in settings.proxies}
        self.dataset = get_dataset(settings.dataset)
        self.resolution = settings.resolution or self.dataset.resolution
        self.device = resolve_device(settings.device)
        self._space_key = settings.space + (json.dumps(options, sort_keys=True) if options else "")
        self._ctx = CacheContext(
            self._space_key,
            self.dataset.name,
            self.dataset.num_classes,
            self.resolution,
            self.device,
            settings.seed,
            settings.batch_size,
        )
        self.cache = ScoreCache(cache_path)
        self._stats = {"hits": 0, "misses": 0, "evaluated": 0}
        self._stats_lock = threading.Lock()
        self._cache_warned = False
        self._config = WorkerConfig(
            device=self.device,
            timeout_s=settings.timeout_s,
            memory_mb=settings.memory_mb,
            threads=settings.threads,
            proxies=tuple(settings.proxies),
        )
        self._executor_kind, self._workers, self._ray_address = executor, workers, ray_address
        self._executor: LocalExecutor | RayExecutor | None = None
        self._lock = threading.Lock()

    def _get_executor(self) -> LocalExecutor | RayExecutor:
        """Start the workers on first use, so cache hits and rejections never pay for them."""
        with self._lock:
            if self._executor is None:
                if self._executor_kind == "ray":
                    self._executor = RayExecutor(self._config, self._workers, self._ray_address)
                else:
                    cuda = _cuda_slots() if self.device == "cuda" else None
                    self._executor = LocalExecutor(self._config, self._workers, cuda)
            return self._executor

    def worker_pids(self) -> list[int]:
        """Return the process ids of the local workers that have started (for tests and tools)."""
        executor = self._executor
        return executor.pids() if isinstance(executor, LocalExecutor) else []

    # --- public API ---------------------------------------------------------------------------
    def evaluate(self, archs: Sequence[str]) -> list[EvalResult]:
        """Evaluate ``archs``; results come back in the same order and never raise per candidate."""
        results: list[EvalResult | None] = [None] * len(archs)
        jobs: dict[str, list[int]] = {}  # canonical -> indices; the first one is dispatched
        missing: dict[str, list[str]] = {}
        for i, arch in enumerate(archs):
            start = time.perf_counter()
            result, canonical, todo = self._lookup(arch)
            if result is not None:
                result.seconds = time.perf_counter() - start
                results[i] = result
                self._count("hits" if result.cached else "misses")
            elif canonical in jobs:  # an isomorphic twin earlier in this batch
                jobs[canonical].append(i)
                self._count("hits")
            else:
                jobs[canonical] = [i]
                missing[canonical] = todo
                self._count("misses")
        if jobs:
            tasks = [self._task(archs[idx[0]], missing[c]) for c, idx in jobs.items()]
            replies = self._get_executor().run(tasks)
            self._count("evaluated", len(tasks))
            for (canonical, indices), reply in zip(jobs.items(), replies, strict=True):
                first = self._finish(archs[indices[0]], canonical, reply)
                results[indices[0]] = first
                for j in indices[1:]:
                    results[j] = EvalResult(
                        archs[j],
                        canonical,
                        first.ok,
                        dict(first.scores),
                        first.params,
                        first.flops,
                        0.0,
                        True,
                        first.error,
                    )
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the workers and close the cache."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        self.cache.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:  # evaluate() may run in several graph threads at once
            self._stats[key] += n

    @property
    def stats(self) -> dict[str, int]:
        """Return the counters ``hits``, ``misses`` and ``evaluated``.

        ``hits``: answered without work (cache, isomorphic twins in a batch); ``misses``
        (everything else, including candidates the parent rejected) and ``evaluated`` (candidates
        sent to a worker).
        """
        with self._stats_lock:
            return dict(self._stats)

    def _fail(
        self,
        arch: str,
        canonical: str | None,
        kind: str,
        message: str,
        *,
        cached: bool,
        params: int | None = None,
        flops: int | None = None,
    ) -> EvalResult:
        failure = Failure(kind, message)
        return EvalResult(arch, canonical, False, {}, params, flops, 0.0, cached, failure)

    def _lookup(self, arch: Any) -> tuple[EvalResult | None, str | None, list[str]]:
        """Answer ``arch`` from the checks and the cache, or name the proxies still to run.

        Returns ``(result, canonical, proxies_to_run)``: a finished result, or None plus the
        canonical form and the proxies a worker must compute.
        """
        if not isinstance(arch, str):
            got = type(arch).__name__
            message = f"expected an architecture string, got {got}"
            return (
                self._fail(repr(arch), None, "invalid_architecture", message, cached=False),
                None,
                [],
            )
        hit = self._cached(self.cache.get_rejection, self._space_key, arch)
        if hit:
            return self._fail(arch, None, hit[0], hit[1], cached=True), None, []
        try:
            canonical = self.space.canonical(self.space.validate(arch))
        except ArchitectureError as exc:
            kind = "forbidden" if type(exc).__name__ == "ForbiddenCode" else "invalid_architecture"
            self._store(self.cache.put_rejection, self._space_key, arch, kind, str(exc))
            return self._fail(arch, None, kind, str(exc), cached=False), None, []
        except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the search
            message = f"the {self.settings.space} parser failed: {type(exc).__name__}: {exc}"
            return self._fail(arch, None, "crashed", message, cached=False), None, []
        row = self._cached(self.cache.get_candidate, self._ctx, canonical)
        if row is not None and row.error_kind:
            failure = (row.error_kind, row.error_message or "")
            return self._fail(arch, canonical, *failure, cached=True), canonical, []
        over = row and self._over_budget(row.params, row.flops)
        if over:
            counts = {"params": row.params, "flops": row.flops}
            return (
                self._fail(arch, canonical, "over_budget", over, cached=True, **counts),
                canonical,
                [],
            )
        scores = (
            self._cached(self.cache.get_scores, self._ctx, canonical, self.proxy_versions) or {}
        )
        todo = [p for p in self.settings.proxies if p not in scores]
        if row is None or row.params is None or row.flops is None:
            return None, canonical, list(self.settings.proxies)  # the counts come with a run
        if todo:
            return None, canonical, todo
        result = self._combine(arch, canonical, row.params, row.flops, scores, cached=True)
        return result, canonical, []

    def _cached(self, read: Any, *args: Any) -> Any:
        """Read from the cache; an unreadable cache counts as a miss (warned once)."""
        try:
            return read(*args)
        except ScoreCacheError as exc:
            self._warn(exc)
            return None

    def _store(self, write: Any, *args: Any) -> None:
        """Write to the cache; a failed write loses the saving, never the result (warned once)."""
        try:
            write(*args)
        except ScoreCacheError as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        if not self._cache_warned:
            self._cache_warned = True
            warnings.warn(f"score cache disabled for this call: {exc}", RuntimeWarning, 3)

    def _over_budget(self, params: int | None, flops: int | None) -> str | None:
        s, res, ch = self.settings, self.resolution, self.dataset.channels
        if s.max_params is not None and params is not None and params > s.max_params:
            return (
                f"the network has {params:,} parameters, over the budget of "
                f"{s.max_params:,.0f}; use fewer or narrower layers"
            )
        if s.max_flops is not None and flops is not None and flops > s.max_flops:
            return (
                f"the network needs {flops:,} FLOPs per {ch}x{res}x{res} image (a "
                f"multiply-add counts as 2), over the budget of {s.max_flops:,.0f}"
            )
        return None

    def _combine(
        self,
        arch: str,
        canonical: str,
        params: int | None,
        flops: int | None,
        outcomes: dict[str, CachedScore],
        *,
        cached: bool,
    ) -> EvalResult:
        """Merge per-proxy outcomes into one result; the first failing proxy decides the kind."""
        for name in self.settings.proxies:
            o = outcomes[name]
            if o.value is None:
                kind, message = o.error_kind or "crashed", o.error_message or ""
                return self._fail(
                    arch, canonical, kind, message, cached=cached, params=params, flops=flops
                )
        scores = {name: float(outcomes[name].value) for name in self.settings.proxies}
        return EvalResult(arch, canonical, True, scores, params, flops, 0.0, cached, None)

    def _task(self, arch: str, proxies: list[str]) -> dict:
        s, d = self.settings, self.dataset
        return {
            "space": s.space,
            "options": dict(s.space_options),
            "arch": arch,
            "proxies": proxies,
            "num_classes": d.num_classes,
            "resolution": self.resolution,
            "channels": d.channels,
            "seed": s.seed,
            "batch_size": s.batch_size,
            "max_params": s.max_params,
            "max_flops": s.max_flops,
        }

    def _finish(self, arch: str, canonical: str, reply: dict) -> EvalResult:
        """Turn a worker reply into a result and store what is deterministic."""
        seconds = float(reply.get("seconds") or 0.0)
        params, flops, error = reply.get("params"), reply.get("flops"), reply.get("error")
        if error and error.get("kind") == "build_error":
            failure = (error["kind"], error["message"])
            self._store(self.cache.put_candidate, self._ctx, canonical, None, None, failure)
        elif params is not None:
            self._store(self.cache.put_candidate, self._ctx, canonical, params, flops)
        if error:
            kind = error.get("kind") if error.get("kind") in FAILURE_KINDS else "crashed"
            message = str(error.get("message", ""))
            result = self._fail(
                arch, canonical, kind, message, cached=False, params=params, flops=flops
            )
            result.seconds = seconds
            return result
        outcomes = {
            n: CachedScore(float(v), None, None) for n, v in (reply.get("scores") or {}).items()
        }
        for name, f in (reply.get("proxy_failures") or {}).items():
            outcomes[name] = CachedScore(None, f.get("kind"), f.get("message"))
        keep = {
            n: (self.proxy_versions[n], o)
            for n, o in outcomes.items()
            if n in self.proxy_versions
            and (o.value is not None or o.error_kind in CACHEABLE_FAILURES)
        }
        self._store(self.cache.put_scores, self._ctx, canonical, keep, seconds)
        earlier = {p: v for p, v in self.proxy_versions.items() if p not in outcomes}
        if earlier:  # proxies answered from the cache when the task was sent
            outcomes.update(
                self._cached(self.cache.get_scores, self._ctx, canonical, earlier) or {}
            )
        missing = [p for p in self.settings.proxies if p not in outcomes]
        if missing:
            message = f"no score came back for {', '.join(missing)}"
            return self._fail(
                arch, canonical, "crashed", message, cached=False, params=params, flops=flops
            )
        result = self._combine(arch, canonical, params, flops, outcomes, cached=False)
        result.seconds = seconds
        return result


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m tools.evaluate``; return 0 scored, 1 the candidate failed, 2 usage error."""
    from tools.evaluate_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
