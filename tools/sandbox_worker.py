"""What a sandbox worker does with one task: build the network, count it, score it.

Runs inside the locked-down worker process (see ``tools.sandbox``); every outcome, including
exceptions from candidate code, becomes a reply dict whose error message is written for the
Designer (what failed, where in the candidate, and what to change).
"""

from __future__ import annotations

import json
import time
from typing import Any

_MEMORY_TEXT = (
    "MemoryError",
    "OutOfMemoryError",
    "can't allocate memory",
    "out of memory",
    "Cannot allocate memory",
)


def kind_of(error: BaseException | str, default: str) -> str:
    """Classify an exception (or a proxy's failure message): memory, forbidden or ``default``."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    if isinstance(error, MemoryError) or is_memory_text(text):
        return "memory"
    if "PermissionError: sandbox:" in text:  # the audit hook stopped it at run time
        return "forbidden"
    return default


def is_memory_text(text: str) -> bool:
    """Return True when an error message says an allocation failed."""
    return any(marker in text for marker in _MEMORY_TEXT)


def _candidate_line(exc: BaseException) -> str:
    """Return ' at line N' for the innermost frame of candidate code in ``exc``'s traceback."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<torch-code>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


def describe(exc: BaseException, limit: int = 600) -> str:
    """Return ``Type at line N: message`` for an exception, cut to ``limit`` characters."""
    text = f"{type(exc).__name__}{_candidate_line(exc)}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Worker:
    """Build and score tasks sent by the parent; one instance per worker process."""

    def __init__(self, config: dict) -> None:
        import torch

        from tools import proxies, spaces
        from tools.spaces import torch_code

        self.torch, self.config = torch, config
        torch.set_num_threads(int(config.get("threads", 1)))
        self.device = "cuda" if config["device"] == "cuda" else "cpu"
        spaces.load_builtin()
        proxies.load_builtin()
        self.spaces, self.proxies, self.torch_code = spaces, proxies, torch_code
        self._spaces: dict[str, Any] = {}
        self._batches: dict[tuple, Any] = {}
        if self.device == "cuda":
            torch.cuda.init()
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(
                min(1.0, config["memory_mb"] * (1 << 20) / total)
            )
            warm_up(config.get("proxies", ()), "cuda")

    def run(self, task: dict) -> dict:
        """Evaluate one task; never raises."""
        start = time.perf_counter()
        try:
            out = self._evaluate(task)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes data for the Designer
            out = {
                "error": {
                    "kind": kind_of(exc, "crashed"),
                    "message": f"evaluation failed: {describe(exc)}",
                }
            }
        finally:
            self._reset_globals()
        out.setdefault("error", None)
        out.update(id=task.get("id"), seconds=time.perf_counter() - start)
        kinds = [out["error"]["kind"]] if out["error"] else []
        kinds += [f["kind"] for f in out.get("proxy_failures", {}).values()]
        out["restart"] = "memory" in kinds  # a failed allocation can leave the heap fragmented
        return out

    def _reset_globals(self) -> None:
        torch = self.torch
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)

    def _space(self, name: str, options: dict) -> Any:
        key = json.dumps([name, options], sort_keys=True)
        if key not in self._spaces:
            self._spaces[key] = self.spaces.get_space(name, **options)
        return self._spaces[key]

    def _evaluate(self, task: dict) -> dict:
        torch = self.torch
        from tools.costs import count_params

        space = self._space(task["space"], task.get("options") or {})
        classes, res, channels = task["num_classes"], task["resolution"], task.get("channels", 3)
        torch.manual_seed(task["seed"])
        try:
            if task["space"] == "torch-code" and task.get("unchecked"):
                net = self.torch_code.build_source(task["arch"], classes, check=False)
            else:
                net = space.build(task["arch"], classes)
        except self.spaces.ArchitectureError as exc:
            kind = (
                "forbidden"
                if isinstance(exc, self.torch_code.ForbiddenCode)
                else "invalid_architecture"
            )
            return {"error": {"kind": kind, "message": str(exc)}}
        except Exception as exc:  # noqa: BLE001
            kind = kind_of(exc, "build_error")
            if kind == "memory":
                return _memory("building the network", exc, self.config)
            return {
                "error": {"kind": kind, "message": f"building the network failed: {describe(exc)}"}
            }
        if not isinstance(net, torch.nn.Module):
            return {
                "error": {"kind": "build_error", "message": "build did not return an nn.Module"}
            }
        params = count_params(net)
        out: dict[str, Any] = {"params": params, "flops": None}
        if task.get("max_params") is not None and params > task["max_params"]:
            out["error"] = {
                "kind": "over_budget",
                "message": (
                    f"the network has {params:,} parameters, over the budget of "
                    f"{task['max_params']:,.0f}; use fewer or narrower layers"
                ),
            }
            return out
        shape = (channels, res, res)
        try:
            out["flops"], logits_shape = _flops_and_shape(net, shape)
        except Exception as exc:  # noqa: BLE001
            kind = kind_of(exc, "crashed")
            if kind == "memory":
                return {**out, **_memory("running the forward pass", exc, self.config)}
            out["error"] = {
                "kind": kind,
                "message": (
                    f"the forward pass on a (1, {channels}, {res}, {res}) input failed: "
                    + describe(exc)
                ),
            }
            return out
        if logits_shape != (1, classes):
            out["error"] = {
                "kind": "build_error",
                "message": (
                    f"forward returned shape {logits_shape} for one image; "
                    f"expected (1, {classes}) logits"
                ),
            }
            return out
        if task.get("max_flops") is not None and out["flops"] > task["max_flops"]:
            out["error"] = {
                "kind": "over_budget",
                "message": (
                    f"the network needs {out['flops']:,} FLOPs per {channels}x{res}x{res} image "
                    f"(a multiply-add counts as 2), over the budget of {task['max_flops']:,.0f}"
                ),
            }
            return out
        net = net.to(self.device)
        batch = self._batch(task)
        scored = self.proxies.score_network(net, task["proxies"], batch, seed=task["seed"])
        out["scores"] = {k: v for k, v in scored.items() if isinstance(v, float)}
        out["proxy_failures"] = {
            k: {"kind": kind_of(v.message, v.kind), "message": v.message}
            for k, v in scored.items()
            if not isinstance(v, float)
        }
        return out

    def _batch(self, task: dict) -> Any:
        key = (
            task["batch_size"],
            task["resolution"],
            task["num_classes"],
            task["seed"],
            task.get("channels", 3),
        )
        if key not in self._batches:
            self._batches[key] = self.proxies.Batch.synthetic(
                batch_size=key[0],
                resolution=key[1],
                num_classes=key[2],
                seed=key[3],
                channels=key[4],
                device=self.device,
            )
        return self._batches[key]


def warm_up(proxy_names: Any, device: str) -> None:
    """Run a tiny network through FLOP counting and the proxies, so lazy imports happen now.

    The first FlopCounterMode use alone imports for seconds; doing it in the zygote means every
    forked worker starts warm, and nothing needs importing after the lock-down.
    """
    from torch import nn

    from tools import proxies
    from tools.costs import count_flops

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    count_flops(net, (3, 8, 8))
    batch = proxies.Batch.synthetic(
        batch_size=2, resolution=8, num_classes=2, seed=0, device=device
    )
    proxies.score_network(net.to(device), list(proxy_names), batch)


def _flops_and_shape(net: Any, shape: tuple[int, ...]) -> tuple[int, tuple]:
    from tools.costs import count_flops

    seen: list[tuple] = []
    handle = net.register_forward_hook(
        lambda _m, _i, o: seen.append(
            tuple(getattr(o[-1] if isinstance(o, (tuple, list)) else o, "shape", ()))
        )
    )
    try:
        flops = count_flops(net, shape)
    finally:
        handle.remove()
    return flops, (seen[-1] if seen else ())


def _memory(stage: str, exc: BaseException, config: dict) -> dict:
    return {
        "error": {
            "kind": "memory",
            "message": (
                f"ran out of memory ({config['memory_mb']} MB allowed) while {stage}: "
                f"{describe(exc, 300)}; "
                "use fewer channels, layers or a smaller input"
            ),
        }
    }
