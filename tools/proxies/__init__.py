"""Zero-cost proxy registry: one file per proxy, registered with ``@proxy("name")``.

A proxy is a pure function ``fn(net, batch) -> float`` that returns one scalar (any summing over
layers happens inside it), so no caller ever branches on a proxy's name. The driver
:func:`score_network` gives each proxy its own copy of the network, reseeds before each, and turns
exceptions and non-finite values into :class:`ProxyFailure` values instead of crashing.
"""

from __future__ import annotations

import copy
import importlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass
class Batch:
    """Inputs and labels a proxy may use. Data-free by default: Gaussian inputs, random labels."""

    inputs: torch.Tensor
    targets: torch.Tensor
    num_classes: int

    @classmethod
    def synthetic(
        cls,
        *,
        batch_size: int,
        resolution: int,
        num_classes: int,
        seed: int,
        channels: int = 3,
        device: str | torch.device = "cpu",
    ) -> "Batch":
        """Draw a deterministic Gaussian batch with uniform random labels."""
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.randn(batch_size, channels, resolution, resolution, generator=generator)
        targets = torch.randint(0, num_classes, (batch_size,), generator=generator)
        return cls(inputs.to(device), targets.to(device), num_classes)

    def to(self, device: str | torch.device) -> "Batch":
        """Return the batch on ``device``."""
        return Batch(self.inputs.to(device), self.targets.to(device), self.num_classes)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``) into a ``torch.device``.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise. Asking for CUDA on a machine
    without it raises ``ValueError`` instead of failing later inside a proxy.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available; use auto or cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu or cuda[:N]")
    return device


def _device_of(net: nn.Module) -> torch.device | None:
    """Return the device of the network's first parameter or buffer (None for a stateless net)."""
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return None


ProxyFn = Callable[[nn.Module, Batch], float]


@dataclass(frozen=True)
class ProxySpec:
    """A registered proxy and what callers need to know about it."""

    name: str
    fn: ProxyFn
    #: True when a larger value predicts a better network.
    higher_is_better: bool = True
    #: True when values span many orders of magnitude, so people and LLMs should read log10.
    log_scale: bool = False
    #: False for proxies that only look at the architecture (params, flops).
    needs_data: bool = True
    #: One line for ``--list-proxies`` and the Designer prompt.
    summary: str = ""
    #: Bumped whenever the function's numbers change, so caches keyed on it never go stale.
    version: int = 1


class ProxyFailure(Exception):
    """A proxy that could not produce a usable score for this network.

    ``kind`` is ``non_finite`` (NaN/inf or exploding values) or ``crashed`` (anything raised).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


_PROXIES: dict[str, ProxySpec] = {}

#: Modules holding the built-in proxies; adding a proxy means one file plus one entry here.
BUILTIN_MODULES = (
    "zen", "synflow", "naswot", "grad_norm", "snip", "grasp", "fisher", "jacov",
    "te_nas", "zico", "params", "flops", "random",
)


def proxy(
    name: str,
    *,
    higher_is_better: bool = True,
    log_scale: bool = False,
    needs_data: bool = True,
    summary: str = "",
    version: int = 1,
) -> Callable[[ProxyFn], ProxyFn]:
    """Register ``fn(net, batch) -> float`` under ``name``; duplicate names raise ``KeyError``."""

    def register(fn: ProxyFn) -> ProxyFn:
        if name in _PROXIES:
            raise KeyError(f"proxy {name!r} is already registered")
        doc_line = (fn.__doc__ or "").strip().split("\n", 1)[0]
        _PROXIES[name] = ProxySpec(
            name, fn, higher_is_better, log_scale, needs_data, summary or doc_line, version
        )
        return fn

    return register


def load_builtin() -> None:
    """Import every built-in proxy module so its ``@proxy`` runs."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def proxy_names() -> list[str]:
    """Return the registered proxy names, sorted."""
    load_builtin()
    return sorted(_PROXIES)


def get_proxy(name: str) -> ProxySpec:
    """Return the proxy registered as ``name``; unknown names raise ``ValueError`` listing the choices."""
    load_builtin()
    if name not in _PROXIES:
        raise ValueError(f"unknown proxy {name!r}; choose from: {', '.join(sorted(_PROXIES))}")
    return _PROXIES[name]


def score_network(
    net: nn.Module,
    names: list[str] | tuple[str, ...],
    batch: Batch,
    *,
    seed: int = 0,
) -> dict[str, float | ProxyFailure]:
    """Score one built network with several proxies.

    The network is built once by the caller; each proxy gets a deep copy (proxies such as synflow
    rewrite weights in place) and a freshly seeded RNG, so results do not depend on proxy order.
    Failures come back as :class:`ProxyFailure` values, never as exceptions. The batch is moved to
    the network's device (so building the net on CUDA is enough to score it there). Scores repeat
    bit for bit on the CPU; on CUDA cuDNN is held to deterministic kernels while scoring, but a few
    CUDA backward kernels (pooling) still accumulate atomically, so expect float-level agreement.
    """
    device = _device_of(net)
    if device is not None and batch.inputs.device != device:
        batch = batch.to(device)
    if device is None or device.type != "cuda":
        return _score_all(net, names, batch, seed)
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        return _score_all(net, names, batch, seed)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _score_all(
    net: nn.Module, names: list[str] | tuple[str, ...], batch: Batch, seed: int
) -> dict[str, float | ProxyFailure]:
    results: dict[str, float | ProxyFailure] = {}
    pristine = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for name in names:
        spec = get_proxy(name)
        torch.manual_seed(seed)
        net.load_state_dict(pristine)
        candidate = copy.deepcopy(net)
        try:
            value = float(spec.fn(candidate, batch))
        except ProxyFailure as failure:
            results[name] = failure
            continue
        except Exception as exc:  # a proxy bug must not kill the candidate's other scores
            results[name] = ProxyFailure("crashed", f"{name} failed: {type(exc).__name__}: {exc}")
            continue
        finally:
            del candidate
        if not math.isfinite(value):
            results[name] = ProxyFailure(
                "non_finite", f"{name} gave {value}: the network's signal explodes or vanishes"
            )
        else:
            results[name] = value
    return results
