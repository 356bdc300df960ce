"""Command line of ``python -m graphs.search``: flags mirror :class:`graphs.config.SearchConfig`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from graphs.config import SearchConfig
from graphs.train_best import TrainBestError
from graphs.usage import UsageParser  # noqa: F401 - also imported from here by the other CLIs
from graphs.runner import (
    RunExtras,
    RunStorageError,
    UsageError,
    default_run_dir,
    load_run_config,
    run_search,
)

PAPER_SCALE = ("python -m graphs.search --space nb201 --dataset cifar10 --proxy synflow "
               "--iterations 1500 --population 100 --designer-model openai:gpt-4o "
               "--reflector-model openai:gpt-4o --concurrency 8")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_number(text: str) -> float:
    """Parse 1.5e6, 1500000 or 1.5M / 300K / 2G."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * scale[t[-1]] if t and t[-1] in scale else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1.5M, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; defaults are None so only explicit flags count as explicit."""
    p = UsageParser(
        prog="python -m graphs.search",
        description="RZ-NAS: LLM-guided evolutionary NAS with zero-cost proxies and reflection. "
        "With no arguments: a short offline search of NAS-Bench-201 with the embedded model.",
        epilog=f"Paper-scale setting: {PAPER_SCALE}",
        argument_default=None,
    )
    add = p.add_argument
    add("--space", help="search space (default nb201; see --list-spaces)")
    add("--dataset", help="cifar10 (default), cifar100, ImageNet16-120, imagenet")
    add("--proxy", help="ranking proxy, optionally followed by reported ones: synflow,naswot")
    add("--iterations", type=int, help="mutation steps (default 8; paper 1500)")
    add("--population", type=int, help="population size (default 10; paper 100)")
    add("--concurrency", type=int, help="mutations in parallel per step (default 1)")
    add("--designer-model", help="local (default), local:FILE.gguf, openai:MODEL, "
        "openai-compatible:URL:MODEL, fake:FILE.json; env RZNAS_DESIGNER_MODEL")
    add("--reflector-model", help="as --designer-model; env RZNAS_REFLECTOR_MODEL")
    add("--prompt", help="prompt ids, e.g. designer@v1,reflector@v1 (see --list-prompts)")
    add("--no-reflection", dest="reflection", action="store_false", help="ablation: no Reflector")
    add("--no-text-description", dest="text_description", action="store_false",
        help="ablation: hide the text description of the space")
    add("--no-code-description", dest="code_description", action="store_false",
        help="ablation: hide the source of the space")
    add("--no-proxy-code", dest="proxy_code", action="store_false",
        help="ablation: hide the proxy's source")
    add("--history-length", type=int, help="recent candidates shown to the Designer (default 5)")
    add("--lessons", type=int, help="earlier reflections summarised for the Designer (default 3)")
    add("--output-form", choices=["edit", "whole"], help="Designer returns an edit (default) or a whole arch")
    add("--max-retries", type=int, help="re-asks after an invalid proposal (default 3)")
    add("--temperatures", type=_floats, help="drawn per call (default 0.2,0.4,0.6,0.8,1.0)")
    add("--budget-params", type=parse_number, help="reject candidates with more parameters, e.g. 1M")
    add("--budget-flops", type=parse_number, help="reject candidates with more FLOPs, e.g. 200M")
    add("--budget-usd", type=float, metavar="USD",
        help="stop cleanly once the LLM calls cost this much; --resume with a higher one continues")
    add("--budget-tokens", type=lambda t: int(parse_number(t)), metavar="N",
        help="stop cleanly once the LLM calls used N tokens (e.g. 2M); resumable like --budget-usd")
    add("--pareto-feedback", action="store_true", default=None,
        help="show the Designer the Pareto front of score vs params and FLOPs")
    add("--interactive", action="store_true", default=None,
        help="pause after every step: accept, give a hint, edit the architecture, or stop")
    add("--device", choices=["auto", "cpu", "cuda"], help="where proxies run (default auto)")
    add("--seed", type=int, help="seed (default 0)")
    add("--batch-size", type=int, help="proxy batch size (default 64)")
    add("--eval-timeout", dest="eval_timeout_s", type=float, help="seconds per evaluation (default 120)")
    add("--workers", type=int, help="evaluation worker processes (default 1)")
    add("--executor", choices=["local", "ray"], help="evaluation executor (default local)")
    add("--ray-address", help="Ray cluster address for --executor ray")
    add("--wall-clock", dest="wall_clock_s", type=float, help="stop after this many seconds")
    add("--truth", help="NB201 ground truth (CSV or NASLib JSON) for the report; env RZNAS_TRUTH")
    add("--truth-metric", help="ground-truth column (default: the dataset's test accuracy)")
    add("--no-llm-cache", dest="llm_cache", action="store_false", help="do not cache LLM replies")
    add("--llm-timeout", dest="llm_timeout_s", type=float, help="seconds per LLM call (default 300)")
    add("--train-best", type=int, metavar="EPOCHS",
        help="after the search, train the best architecture for EPOCHS epochs (needs --data)")
    add("--data", dest="train_data", metavar="DIR",
        help="folder holding cifar-10-batches-py or cifar-100-python, for --train-best")
    add("--output", type=Path, help="run directory (default runs/<time>-<space>-<proxy>)")
    add("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped or killed run")
    add("--fork", metavar="RUN_DIR@ITERATION",
        help="start a new run from another run's state after ITERATION; other flags may differ")
    add("--replay", type=Path, metavar="BUNDLE",
        help="re-run a bundle (python -m graphs.bundle) offline from its caches and check that "
             "it reproduces the bundled summary.json")
    add("--plain", action="store_true", help="one line per event, no live display (logs, CI)")
    add("--quiet", action="store_true", help="no trace on the terminal; files only")
    add("--list-spaces", action="store_true", help="list search spaces and exit")
    add("--list-proxies", action="store_true", help="list zero-cost proxies and exit")
    add("--list-prompts", action="store_true", help="list prompt versions and exit")
    return p


#: Flags that may change when resuming; everything else comes from the saved config.
RESUMABLE = {"iterations", "wall_clock_s", "workers", "llm_timeout_s", "eval_timeout_s",
             "train_best", "train_data", "budget_usd", "budget_tokens", "interactive"}
#: Flags a fork cannot change: the population it inherits was scored under them.
FORK_FIXED = {"space", "dataset", "proxy", "extra_proxies", "batch_size", "budget_params",
              "budget_flops", "device"}
#: Flags a replay may set: where it runs and how it looks, never what it computes.
REPLAY_FLAGS = {"truth"}


def explicit_values(args: argparse.Namespace) -> dict[str, Any]:
    """Return the SearchConfig fields the user set on the command line."""
    names = {f.name for f in fields(SearchConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    for flag in ("reflection", "text_description", "code_description", "proxy_code", "llm_cache"):
        if values.get(flag) is True:  # store_false flags default to True: not explicit
            values.pop(flag)
    if args.proxy is not None:
        proxies = [p.strip() for p in args.proxy.split(",") if p.strip()]
        if not proxies:
            raise UsageError("--proxy names no proxy; pass one such as synflow (see --list-proxies)")
        values["proxy"], values["extra_proxies"] = proxies[0], tuple(proxies[1:])
    if args.prompt is not None:
        prompt_ids = [p.strip() for p in args.prompt.split(",") if p.strip()]
        for prompt_id in prompt_ids or [args.prompt]:
            role = prompt_id.split("@")[0]
            if role not in ("designer", "reflector"):
                raise UsageError(f"--prompt takes designer@vN and reflector@vN ids, not "
                                 f"{prompt_id!r} (see --list-prompts)")
            values[f"{role}_prompt"] = prompt_id
    return values


def _listing(args: argparse.Namespace) -> str | None:
    if args.list_spaces:
        from tools.spaces import get_space, space_names

        return "\n".join(f"{n:12s} {get_space(n).arch_format}" for n in space_names())
    if args.list_proxies:
        from tools.proxies import get_proxy, proxy_names

        rows = []
        for name in proxy_names():
            spec = get_proxy(name)
            direction = "higher" if spec.higher_is_better else "lower"
            rows.append(f"{name:10s} {direction}-is-better{' log10' if spec.log_scale else ''}  {spec.summary}")
        return "\n".join(rows)
    if args.list_prompts:
        from prompts import list_prompts

        return "\n".join(f"{p.id:14s} {p.sha256[:12]}  {p.changes}" for p in list_prompts())
    return None


def _replay(args: argparse.Namespace, values: dict[str, Any], mode: str) -> int:
    """``--replay BUNDLE --output DIR``: re-run a bundle offline, report whether it reproduced."""
    from agents.llm_cache import LLMCache, LLMCacheError
    from agents.models import replay_model
    from graphs.bundle import BundleError, first_divergence, unpack
    from graphs.events import read_events
    from tools.files import copy_sqlite, write_atomic

    if args.output is None:
        raise UsageError("--replay needs --output DIR, a new directory for the re-run")
    ignored = sorted(set(values) - REPLAY_FLAGS)
    if ignored:
        raise UsageError(f"--replay re-runs the bundle's own settings; drop: {', '.join(ignored)}")
    run_dir: Path = args.output
    if (run_dir / "checkpoints.sqlite").exists():
        raise UsageError(f"{run_dir} already holds a run; choose another --output")
    created = not run_dir.exists()
    try:
        bundle = unpack(args.replay, run_dir / "bundle")
        # Training and where evaluations run are not part of what a replay checks.
        config = SearchConfig.from_dict({**bundle.config, "train_best": None, "train_data": None,
                                         "executor": "local", "ray_address": None, **values})
        if config.truth and not Path(config.truth).expanduser().exists():
            raise UsageError(f"the bundled run read its ground truth from {config.truth}, which "
                             "is not here; pass --truth PATH (ground truth is not in a bundle)")
        for name, source in (("llm_cache.sqlite", bundle.llm_cache),
                             ("scores.sqlite", bundle.scores)):
            copy_sqlite(source, run_dir / name)
        cache = LLMCache(run_dir / "llm_cache.sqlite")
    except (BundleError, LLMCacheError, UsageError) as exc:
        # Leave nothing behind, so the same command can simply be run again.
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            shutil.rmtree(run_dir / "bundle", ignore_errors=True)
            for name in ("llm_cache.sqlite", "scores.sqlite"):
                (run_dir / name).unlink(missing_ok=True)
        raise UsageError(str(exc)) from None
    names = bundle.summary.get("models") or {}
    models = {config.designer_model: replay_model(names["designer"], cache)}
    if config.reflection and names.get("reflector"):
        models.setdefault(config.reflector_model, replay_model(names["reflector"], cache))
    recorded = read_events(bundle.events)
    answers = [{"action": e.get("action"), "text": e.get("text") or ""}
               for e in recorded if e.get("event") == "human_steer"]
    fork_state = bundle.fork_state
    if fork_state is not None and not isinstance(fork_state.get("values"), dict):
        raise UsageError(f"{args.replay} holds a malformed fork_state.json; pack the run again")
    extras = RunExtras(models=models, prompts_dir=bundle.prompts_dir, fork_state=fork_state,
                       answers=answers if config.interactive else None,
                       replayed_from=str(args.replay))
    if mode != "quiet":
        print(f"replaying {args.replay} (commit {bundle.manifest.get('git_commit') or 'unknown'}) "
              f"offline from its caches into {run_dir}", flush=True)
    try:
        outcome = run_search(config, run_dir, resume=False, trace_mode=mode, extras=extras)
    finally:
        cache.close()
    divergence = first_divergence(bundle.summary, outcome.summary, recorded,
                                  read_events(run_dir / "events.jsonl"))
    misses = sum(getattr(m, "replay_misses", 0) for m in models.values())
    write_atomic(run_dir / "replay.json", (json.dumps(
        {"bundle": str(args.replay), "reproduced": divergence is None,
         "first_divergence": divergence, "llm_cache_misses": misses}, indent=2) + "\n").encode())
    if divergence is None:
        print(f"replay reproduced {args.replay}: best {outcome.summary['best']['arch']}, "
              f"{outcome.summary['evaluations']} evaluations, "
              f"{outcome.summary['invalid_proposals']} invalid proposals (see {run_dir / 'replay.json'})")
        return 0
    print(f"replay diverged: {divergence}" + (f" ({misses} LLM calls were not in the bundle)"
                                              if misses else ""), file=sys.stderr)
    return 1


def _fork_config(text: str, values: dict[str, Any]) -> tuple[SearchConfig, RunExtras]:
    """The config of a fork: the source run's, with the flags given now; and its fork point."""
    from graphs.fork import ForkError, parse_fork

    try:
        point = parse_fork(text)
    except ForkError as exc:
        raise UsageError(str(exc)) from None
    saved = load_run_config(point.run_dir)
    fixed = sorted(k for k in set(values) & FORK_FIXED if values[k] != getattr(saved, k))
    if fixed:
        raise UsageError(f"a fork keeps the scores of its source, so these flags cannot change: "
                         f"{', '.join(fixed)} (start a new run instead)")
    # Per-run outputs of the source are not inherited: a fork trains only if asked to.
    inherited = {**saved.to_dict(), "train_best": None, "train_data": None}
    return SearchConfig.from_dict({**inherited, **values}), RunExtras(fork=point)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the search and return the exit code.

    0: done; 1: the run directory stopped taking writes, or ``--train-best`` failed
    (``--resume`` continues either); 2: usage
    error; 130: interrupted (Ctrl-C, SIGTERM).
    """
    args = build_parser().parse_args(argv)
    listing = _listing(args)
    if listing is not None:
        print(listing)
        return 0
    mode = "quiet" if args.quiet else "plain" if args.plain else "live"
    try:
        values = explicit_values(args)
        extras = None
        if sum(bool(x) for x in (args.resume, args.fork, args.replay)) > 1:
            raise UsageError("--resume, --fork and --replay exclude each other; pass one")
        if args.replay:
            return _replay(args, values, mode)
        if args.fork:
            config, extras = _fork_config(args.fork, values)
            run_dir = args.output or default_run_dir(config)
        elif args.resume:
            saved = load_run_config(args.resume)
            overrides = {k: v for k, v in values.items() if k in RESUMABLE}
            ignored = sorted(set(values) - RESUMABLE)
            if ignored:
                raise UsageError(f"--resume keeps the run's settings; these flags cannot change: "
                                 f"{', '.join(ignored)} (start a new run instead)")
            config = SearchConfig.from_dict({**saved.to_dict(), **overrides})
            run_dir = args.resume
        else:
            config = SearchConfig.from_sources(values)
            run_dir = args.output or default_run_dir(config)
        outcome = run_search(config, run_dir, resume=bool(args.resume), trace_mode=mode,
                             extras=extras)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TypeError as exc:  # a SearchConfig field that the saved config or env got wrong
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunStorageError, TrainBestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 130 if outcome.reason == "interrupted" else 0
