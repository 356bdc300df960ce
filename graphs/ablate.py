"""Ablation grid: ``python -m graphs.ablate`` compares RZ-NAS with its baselines and its variants.

The grid is methods (``rz-nas``, ``rea``, ``random``) x, for ``rz-nas`` only, prompt versions x
prompt switches x Designer models; then x proxies x seeds. Each cell runs in ``OUTPUT/<cell>/``
(a normal run directory) with the same budget: the number of unique architectures evaluated.
RZ-NAS spends it as ``population + iterations x concurrency``; the baselines exactly (see
:mod:`graphs.baselines`). Finished cells are skipped, an interrupted RZ-NAS cell is resumed and an
interrupted baseline is replayed from its score cache, so the same command continues a stopped
grid. At the end it writes ``OUTPUT/results.csv``, ``results.md`` and ``best_vs_evaluations.png``
(see :mod:`graphs.ablate_report`).

    python -m graphs.ablate --methods rea,random --proxies synflow --budget 200 --seeds 3 \\
        --truth ../shared/data/nb201.csv --output runs/ablate
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from graphs.baselines import REUSABLE as BASELINE_REUSABLE
from graphs.baselines import BaselineConfig, run_baseline, validate_baseline
from graphs.config import DEFAULT_TRUTH_METRIC, SearchConfig
from graphs.runner import CHECKPOINTS, CONFIG_FILE, UsageError, run_search, validate_config

METHODS = ("rz-nas", "rea", "random")
#: Prompt switches by name; a switch set joins names with "+", e.g. ``no-reflection+no-code``.
SWITCHES: dict[str, dict[str, bool]] = {
    "full": {},
    "no-reflection": {"reflection": False},
    "no-code": {"code_description": False},
    "no-text": {"text_description": False},
    "no-proxy-code": {"proxy_code": False},
}
#: More cells than anyone would run: the grid is refused rather than planned.
MAX_CELLS = 10_000
#: RZ-NAS settings that may differ when a cell is resumed (iterations extend; the rest is runtime).
RESUMABLE = {"iterations", "workers", "device", "eval_timeout_s", "llm_timeout_s", "truth",
             "truth_metric", "executor", "ray_address"}


def _csv(text: Any) -> tuple[str, ...]:
    if isinstance(text, (list, tuple)):
        return tuple(str(t).strip() for t in text if str(t).strip())
    return tuple(t.strip() for t in str(text).split(",") if t.strip())


@dataclass(kw_only=True)
class AblationGrid:
    """What to run; list fields are the grid's axes (flags take comma-separated values)."""

    methods: tuple[str, ...] = ("rz-nas", "rea", "random")
    prompts: tuple[str, ...] = ("designer@v1",)  # rz-nas: ids joined by "+" (see --prompts)
    switches: tuple[str, ...] = ("full",)  # rz-nas: names from SWITCHES joined by "+"
    designer_models: tuple[str, ...] = ("local",)  # rz-nas
    reflector_model: str | None = None  # None: the cell's Designer model
    proxies: tuple[str, ...] = ("synflow",)
    seeds: int = 3
    first_seed: int = 0
    budget: int = 100
    population: int = 20
    sample_size: int = 5  # REA tournament
    concurrency: int = 1  # rz-nas
    space: str = "nb201"
    dataset: str = "cifar10"
    batch_size: int = 64
    device: str = "auto"
    workers: int = 1
    eval_timeout_s: float = 120.0
    budget_params: float | None = None
    budget_flops: float | None = None
    truth: str | None = None
    truth_metric: str | None = None

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> AblationGrid:
        """Build a grid from flag or config-file values (keys with ``-`` or ``_``)."""
        known = {f.name: f for f in fields(cls)}
        grid: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            name = {"eval_timeout": "eval_timeout_s"}.get(name, name)  # the flag's spelling
            if name not in known:
                raise UsageError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            if value is None:
                continue
            default = getattr(cls(), name)
            try:
                if isinstance(default, tuple):
                    value = _csv(value)
                elif isinstance(default, bool):
                    value = bool(value)
                elif isinstance(default, int) or name in ("seeds", "first_seed"):
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError(value)  # int() would silently drop the fraction
                    value = int(value)
                elif isinstance(default, float) or name in ("budget_params", "budget_flops"):
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError, OverflowError):  # int(inf) overflows
                kind = type(default).__name__
                raise UsageError(f"{key} = {value!r} is not a valid {kind}") from None
            grid[name] = value
        return cls(**grid)

    @property
    def seed_list(self) -> list[int]:
        """The seeds every configuration runs with."""
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def metric(self) -> str:
        """The ground-truth column results are reported in."""
        return self.truth_metric or DEFAULT_TRUTH_METRIC.get(self.dataset, "cifar10_test_acc")

    @property
    def rz_nas_iterations(self) -> int:
        """Iterations that make ``population + iterations x concurrency`` reach the budget."""
        return math.ceil((self.budget - self.population) / self.concurrency)


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    method: str
    proxy: str
    seed: int
    prompts: str | None = None  # rz-nas only
    switches: str | None = None
    model: str | None = None

    @property
    def configuration(self) -> str:
        """The cell's name without its seed: what results.md aggregates over."""
        parts = [self.method]
        if self.method == "rz-nas":
            parts += [self.prompts or "", self.switches or "", model_tag(self.model or "")]
        return "-".join([*parts, self.proxy])

    @property
    def name(self) -> str:
        """The cell's directory name under OUTPUT."""
        return f"{self.configuration}-s{self.seed}"


def model_tag(spec: str) -> str:
    """Return a short, file-name-safe tag for a model (``fake:/a/x.json`` -> ``fake-x-...``)."""
    provider, _, rest = spec.partition(":")
    shortened = "/" in rest or len(spec) > 40
    if "/" in rest:  # a file or URL: keep the provider and the last part
        rest = Path(rest.rstrip("/")).stem
    tag = re.sub(r"[^A-Za-z0-9.@=-]+", "-", f"{provider}-{rest}" if rest else provider).strip("-")
    if shortened:
        tag = f"{tag[:32]}-{hashlib.sha1(spec.encode()).hexdigest()[:6]}"
    return tag


def plan(grid: AblationGrid) -> list[Cell]:
    """Return the grid's cells: every configuration, then every seed, in a stable order."""
    cells = []
    for method in grid.methods:
        variants = [(p, s, m) for p in grid.prompts for s in grid.switches
                    for m in grid.designer_models] if method == "rz-nas" else [(None, None, None)]
        for prompts, switches, model in variants:
            for proxy in grid.proxies:
                cells += [Cell(method, proxy, seed, prompts, switches, model)
                          for seed in grid.seed_list]
    return cells


def search_config(grid: AblationGrid, cell: Cell) -> SearchConfig:
    """Return the SearchConfig of an rz-nas cell."""
    defaults = SearchConfig()
    prompt_ids = {
        "designer_prompt": defaults.designer_prompt,
        "reflector_prompt": defaults.reflector_prompt,
    }
    for prompt_id in (cell.prompts or "").split("+"):
        role = prompt_id.split("@")[0]
        if role not in ("designer", "reflector"):
            raise UsageError(f"--prompts: {prompt_id!r} is not a designer@vN or reflector@vN id")
        prompt_ids[f"{role}_prompt"] = prompt_id
    switches: dict[str, bool] = {}
    for name in (cell.switches or "full").split("+"):
        if name not in SWITCHES:
            raise UsageError(f"--switches: unknown switch {name!r}; use {', '.join(SWITCHES)} "
                             "(join several with +)")
        switches.update(SWITCHES[name])
    return SearchConfig(
        space=grid.space, dataset=grid.dataset, proxy=cell.proxy, population=grid.population,
        iterations=grid.rz_nas_iterations, concurrency=grid.concurrency,
        designer_model=cell.model or "local",
        reflector_model=grid.reflector_model or cell.model or "local",
        seed=cell.seed, batch_size=grid.batch_size, device=grid.device, workers=grid.workers,
        eval_timeout_s=grid.eval_timeout_s, budget_params=grid.budget_params,
        budget_flops=grid.budget_flops, truth=grid.truth, truth_metric=grid.truth_metric,
        **prompt_ids, **switches,
    )


def baseline_config(grid: AblationGrid, cell: Cell) -> BaselineConfig:
    """Return the BaselineConfig of a rea or random cell."""
    return BaselineConfig(
        method=cell.method, space=grid.space, dataset=grid.dataset, proxy=cell.proxy,
        budget=grid.budget, population=grid.population, sample_size=grid.sample_size,
        seed=cell.seed, batch_size=grid.batch_size, device=grid.device, workers=grid.workers,
        eval_timeout_s=grid.eval_timeout_s, budget_params=grid.budget_params,
        budget_flops=grid.budget_flops, truth=grid.truth, truth_metric=grid.truth_metric,
    )


def validate_grid(grid: AblationGrid) -> list[Cell]:
    """Check the whole grid before any cell runs; return its cells."""
    bad = [m for m in grid.methods if m not in METHODS]
    if bad or not grid.methods:
        raise UsageError(f"--methods: unknown method {bad[0] if bad else '(none)'!r}; "
                         f"use {', '.join(METHODS)}")
    for axis in ("proxies", "prompts", "switches", "designer_models"):
        if not getattr(grid, axis):
            raise UsageError(f"--{axis.replace('_', '-')} needs at least one value")
    if grid.seeds < 1:
        raise UsageError("--seeds must be at least 1")
    # Counted before plan() builds the cells: a typo such as --seeds 1000000000 must not hang.
    variants = len(grid.prompts) * len(grid.switches) * len(grid.designer_models)
    configurations = sum(variants if method == "rz-nas" else 1 for method in grid.methods)
    cell_count = configurations * len(grid.proxies) * grid.seeds
    if cell_count > MAX_CELLS:
        raise UsageError(f"the grid has {cell_count} cells, more than {MAX_CELLS}; lower --seeds "
                         "or the number of values per axis")
    if "rz-nas" in grid.methods and grid.budget <= grid.population:
        raise UsageError(f"--budget ({grid.budget}) must exceed --population ({grid.population}) "
                         "for rz-nas: the budget is population + iterations x concurrency")
    if "rz-nas" in grid.methods and grid.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    from agents.models import ModelSpecError, parse_spec
    from prompts import PromptError, load_prompt

    if "rz-nas" in grid.methods:  # a typo in a model string must not wait for its first cell
        reflector = [grid.reflector_model] if grid.reflector_model else []
        for spec in (*grid.designer_models, *reflector):
            try:
                parse_spec(spec)
            except ModelSpecError as exc:
                raise UsageError(f"--designer-models/--reflector-model: {exc}") from exc
    cells = plan(grid)
    for cell in cells:
        if cell.method == "rz-nas":
            config = search_config(grid, cell)
            validate_config(config)
            try:
                load_prompt(config.designer_prompt)
                load_prompt(config.reflector_prompt)
            except PromptError as exc:
                raise UsageError(f"--prompts: {exc}") from exc
        else:
            validate_baseline(baseline_config(grid, cell))
    return cells


def cell_config(grid: AblationGrid, cell: Cell) -> SearchConfig | BaselineConfig:
    """Return the run configuration of a cell."""
    return search_config(grid, cell) if cell.method == "rz-nas" else baseline_config(grid, cell)


def check_settings(run_dir: Path, config: SearchConfig | BaselineConfig) -> None:
    """Raise UsageError when ``run_dir`` holds a run made with other settings than ``config``."""
    try:
        saved = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return
    now = config.to_dict()
    reusable = RESUMABLE if isinstance(config, SearchConfig) else BASELINE_REUSABLE
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in reusable and saved.get(k) != now.get(k))
    if changed:
        raise UsageError(f"{run_dir} was run with other settings ({', '.join(changed)}); "
                         "choose another --output")


def finished_summary(grid: AblationGrid, cell: Cell, run_dir: Path) -> dict | None:
    """Return the summary of a cell that already ran to its budget, else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    check_settings(run_dir, cell_config(grid, cell))
    if summary.get("stop_reason") in (None, "interrupted"):
        return None
    if cell.method == "rz-nas":
        return summary if summary.get("iterations", 0) >= grid.rz_nas_iterations else None
    return summary if summary.get("budget") == grid.budget else None


def run_cell(grid: AblationGrid, cell: Cell, output: Path, *, trace_mode: str = "quiet",
             console=None) -> tuple[dict, str]:
    """Run, resume or skip one cell; return its summary and ``ran``/``skipped``/``interrupted``."""
    run_dir = output / cell.name
    done = finished_summary(grid, cell, run_dir)
    if done is not None:
        return done, "skipped"
    config = cell_config(grid, cell)
    if isinstance(config, BaselineConfig):
        outcome = run_baseline(config, run_dir, trace_mode=trace_mode, console=console)
    else:
        resume = (run_dir / CHECKPOINTS).exists()
        if resume:
            check_settings(run_dir, config)
        outcome = run_search(config, run_dir, resume=resume, trace_mode=trace_mode,
                             console=console)
    return outcome.summary, "interrupted" if outcome.reason == "interrupted" else "ran"


def run_grid(grid: AblationGrid, output: Path, *, trace_mode: str = "quiet",
             log: Callable[[str], None] | None = None) -> tuple[list[tuple[Cell, dict]], bool]:
    """Run every cell in order, logging progress; return ``[(cell, summary)]`` and completeness."""
    from rich.console import Console

    cells = validate_grid(grid)
    log = log or (lambda line: print(line, flush=True))  # flushed: progress must reach logs
    console = Console(quiet=True) if trace_mode == "quiet" else None
    log(f"ablate: {len(cells)} cells, budget {grid.budget} evaluations each -> {output}")
    results: list[tuple[Cell, dict]] = []
    spent, ran = 0.0, 0
    for i, cell in enumerate(cells, 1):
        tag = f"[{i}/{len(cells)}] {cell.name}"
        started = time.monotonic()
        try:
            summary, status = run_cell(grid, cell, output, trace_mode=trace_mode, console=console)
        except UsageError as exc:
            raise UsageError(f"{cell.name}: {exc}") from exc
        if status == "interrupted":
            log(f"{tag}: interrupted; run the same command again to continue")
            return results, False
        results.append((cell, summary))
        if status == "skipped":
            log(f"{tag}: finished earlier, skipped")
            continue
        spent, ran = spent + time.monotonic() - started, ran + 1
        left = sum(1 for c in cells[i:] if finished_summary(grid, c, output / c.name) is None)
        eta = spent / ran * left
        best = summary.get("best") or {}
        truth = best.get("ground_truth")
        log(f"{tag}: done in {time.monotonic() - started:.0f}s; best {cell.proxy} "
            f"{best.get('score', float('nan')):.4g}"
            + (f", {best.get('ground_truth_metric')} {truth:.2f}" if truth is not None else "")
            + f", {summary.get('evaluations')} evaluations; ETA {eta:.0f}s")
    return results, True


def _build_parser() -> argparse.ArgumentParser:
    from graphs.cli import parse_number, UsageParser

    p = UsageParser(prog="python -m graphs.ablate", argument_default=None,
                description="Run an ablation grid of RZ-NAS variants and baselines with the "
                            "same budget, then write results.csv, results.md and "
                            "best_vs_evaluations.png.")
    add = p.add_argument
    add("--config", type=Path, help="JSON or TOML file with any of the settings below (flags win)")
    add("--methods", help="comma-separated: rz-nas, rea, random (default all three)")
    add("--prompts", help="rz-nas prompt sets, e.g. designer@v1,designer@v2+reflector@v1")
    add("--switches", help=f"rz-nas switch sets: {', '.join(SWITCHES)}; join with + (default full)")
    add("--designer-models", help="rz-nas Designer models, comma-separated (default local)")
    add("--reflector-model", help="Reflector model for every rz-nas cell (default: its Designer's)")
    add("--proxies", help="ranking proxies, comma-separated (default synflow)")
    add("--seeds", type=int, help="runs per configuration (default 3)")
    add("--first-seed", type=int, help="seeds are FIRST .. FIRST+SEEDS-1 (default 0)")
    add("--budget", type=int, help="unique architectures evaluated per run (default 100)")
    add("--population", type=int, help="population of rz-nas and REA; random's batch (default 20)")
    add("--sample-size", type=int, help="REA tournament size (default 5)")
    add("--concurrency", type=int, help="rz-nas mutations per step (default 1)")
    add("--space", help="search space (default nb201)")
    add("--dataset", help="dataset (default cifar10)")
    add("--batch-size", type=int, help="proxy batch size (default 64)")
    add("--device", choices=["auto", "cpu", "cuda"], help="where proxies run (default auto)")
    add("--workers", type=int, help="evaluation worker processes per run (default 1)")
    add("--eval-timeout", dest="eval_timeout_s", type=float, help="seconds per evaluation")
    add("--budget-params", type=parse_number, help="reject candidates with more parameters, e.g. 1M")
    add("--budget-flops", type=parse_number, help="reject candidates with more FLOPs, e.g. 200M")
    add("--truth", help="NB201 ground truth (CSV or NASLib JSON): accuracy of each run's result")
    add("--truth-metric", help="ground-truth column (default: the dataset's test accuracy)")
    add("--output", type=Path, help="output directory (required)")
    add("--trace", choices=["quiet", "plain"], default="quiet",
        help="per-cell trace: quiet (default, one line per cell) or plain (every event)")
    return p


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or (``.toml``) TOML settings file into a flat dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read --config {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path} is not UTF-8 text (bad byte at offset {exc.start}); "
                         "save it as UTF-8 JSON or TOML") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ImportError:
        raise UsageError("TOML config files need Python 3.11 or newer; use JSON") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError both are
        raise UsageError(f"--config {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: "
                         f"{exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path} must hold a table/object of settings")
    return data


def grid_from_args(args: argparse.Namespace) -> tuple[AblationGrid, Path]:
    """Merge defaults, the config file and the flags (flags win); return the grid and OUTPUT."""
    values = load_config_file(args.config) if args.config else {}
    from_file = values.pop("output", None)
    output = args.output or from_file
    flags = {k: v for k, v in vars(args).items()
             if k not in ("config", "output", "trace") and v is not None}
    grid = AblationGrid.from_values({**values, **flags})
    if output is None:
        raise UsageError("--output DIR is required (where the cells and results go)")
    if not isinstance(output, (str, Path)) or not str(output).strip() or "\x00" in str(output):
        raise UsageError(f"output = {output!r} is not a directory path; give a plain string")
    return grid, Path(output)


def main(argv: list[str] | None = None) -> int:
    """Run the ablation CLI; return 0 done, 2 usage error, 130 interrupted."""
    from graphs.ablate_report import write_results
    from tools.truth import TruthError

    args = _build_parser().parse_args(argv)
    try:
        grid, output = grid_from_args(args)
        truth = None
        if grid.truth:
            from tools.truth import load_truth

            truth = load_truth(grid.truth)
            if grid.metric not in truth.metrics:
                raise UsageError(f"--truth-metric {grid.metric!r} is not in {grid.truth}; "
                                 f"available: {', '.join(truth.metrics)}")
        results, complete = run_grid(grid, output, trace_mode=args.trace)
    except (UsageError, TruthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if results:
        paths = write_results(output, grid, results, truth)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0 if complete else 130


if __name__ == "__main__":
    raise SystemExit(main())
