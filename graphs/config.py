"""Search configuration: one dataclass, filled from the CLI, then the environment, then defaults.

Precedence is explicit value > ``RZNAS_*`` environment variable > default. Only fields that were
not passed explicitly are read from the environment, so a per-run value always wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tools.files import write_atomic

#: Environment variables that may fill a field the user did not pass.
ENV_VARS = {
    "designer_model": "RZNAS_DESIGNER_MODEL",
    "reflector_model": "RZNAS_REFLECTOR_MODEL",
    "truth": "RZNAS_TRUTH",
}

#: The paper's temperature set: one is drawn per LLM call.
PAPER_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)

#: Ground-truth column reported for each dataset when --truth-metric is not given.
DEFAULT_TRUTH_METRIC = {
    "cifar10": "cifar10_test_acc",
    "cifar100": "cifar100_test_acc",
    "ImageNet16-120": "imagenet16_120_test_acc",
}


def doc_field(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text is kept in its metadata (the CLIs read it)."""
    return field(metadata={"description": text}, **kwargs)


_doc = doc_field


class RunSettings:
    """What every run config (search or baseline) offers: JSON round trip, proxies, metric.

    Subclasses are dataclasses with at least ``proxy``, ``extra_proxies``, ``dataset`` and
    ``truth_metric`` fields.
    """

    proxy: str
    extra_proxies: tuple[str, ...]
    dataset: str
    truth_metric: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild a config saved by :meth:`to_dict`, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in data.items() if k in known})

    @property
    def proxies(self) -> tuple[str, ...]:
        """The ranking proxy first, then the extra ones, without repeats."""
        return tuple(dict.fromkeys((self.proxy, *self.extra_proxies)))

    @property
    def metric(self) -> str:
        """The ground-truth column used in reports."""
        return self.truth_metric or DEFAULT_TRUTH_METRIC.get(self.dataset, "cifar10_test_acc")


@dataclass(kw_only=True)
class SearchConfig(RunSettings):
    """Everything that defines one search run (saved as ``config.json`` in the run directory)."""

    space: str = _doc("search space name (see --list-spaces)", default="nb201")
    dataset: str = _doc("cifar10, cifar100, ImageNet16-120 (nb201) or imagenet", default="cifar10")
    proxy: str = _doc("zero-cost proxy that ranks candidates (see --list-proxies)", default="synflow")
    extra_proxies: tuple[str, ...] = _doc("proxies also scored and reported", default=())
    iterations: int = _doc("mutation steps (paper: 1,500)", default=8)
    population: int = _doc("population size (paper: 100 for NB201)", default=10)
    concurrency: int = _doc("mutations run in parallel per step", default=1)
    designer_model: str = _doc("provider string of the Designer's model", default="local")
    reflector_model: str = _doc("provider string of the Reflector's model", default="local")
    designer_prompt: str = _doc("prompt id of the Designer", default="designer@v7")
    reflector_prompt: str = _doc("prompt id of the Reflector", default="reflector@v2")
    text_description: bool = _doc("show the Designer the text description of the space", default=True)
    code_description: bool = _doc("show the Designer the source of the space", default=True)
    proxy_code: bool = _doc("show the Designer the proxy's source", default=True)
    reflection: bool = _doc("run the Reflector and feed its critique to the Designer", default=True)
    pareto_feedback: bool = _doc("show the Designer the Pareto front of score vs params and FLOPs",
                                 default=False)
    interactive: bool = _doc("pause after every step for a human: accept, hint, edit or stop",
                             default=False)
    history_length: int = _doc("recent candidates shown to the Designer", default=3)
    lessons: int = _doc("earlier reflections summarised for the Designer", default=3)
    output_form: str = _doc("Designer output: 'edit' (one operation) or 'whole' architecture", default="edit")
    max_retries: int = _doc("re-asks after an invalid proposal before a random mutation", default=3)
    temperatures: tuple[float, ...] = _doc("temperatures drawn per LLM call", default=PAPER_TEMPERATURES)
    budget_params: float | None = _doc("reject candidates with more parameters", default=None)
    budget_flops: float | None = _doc("reject candidates with more FLOPs", default=None)
    budget_usd: float | None = _doc("stop (resumable) once the LLM calls cost this many US dollars",
                                    default=None)
    budget_tokens: int | None = _doc("stop (resumable) once the LLM calls used this many tokens",
                                     default=None)
    device: str = _doc("auto, cpu or cuda: where proxies run", default="auto")
    seed: int = _doc("seed for sampling, parent choice, temperatures and proxies", default=0)
    batch_size: int = _doc("proxy batch size", default=64)
    eval_timeout_s: float = _doc("wall-clock limit per candidate evaluation", default=120.0)
    workers: int = _doc("evaluation worker processes", default=1)
    executor: str = _doc("evaluation executor: local or ray", default="local")
    ray_address: str | None = _doc("Ray cluster address (executor ray)", default=None)
    wall_clock_s: float | None = _doc("stop after this many seconds of searching", default=None)
    truth: str | None = _doc("NB201 ground-truth file for the report", default=None)
    truth_metric: str | None = _doc("ground-truth column (default: the dataset's test accuracy)", default=None)
    llm_cache: bool = _doc("cache LLM replies in the run directory", default=True)
    llm_timeout_s: float = _doc("timeout of one LLM call", default=300.0)
    train_best: int | None = _doc("after the search, train the best architecture this many epochs",
                                  default=None)
    train_data: str | None = _doc("folder with the CIFAR python batches, for train_best", default=None)

    @classmethod
    def from_sources(cls, explicit: dict[str, Any], env: dict[str, str] | None = None) -> "SearchConfig":
        """Build a config from explicitly passed values, then ``RZNAS_*`` variables, then defaults."""
        env = os.environ if env is None else env
        values = dict(explicit)
        for name, var in ENV_VARS.items():
            if name not in values and env.get(var):
                values[name] = env[var]
        return cls(**values)

    def save(self, path: Path) -> None:
        """Write the config as JSON, atomically: a resume rewrites it, and a kill must not cut it."""
        write_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
