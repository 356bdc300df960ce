"""Replay recorded Designer steps with other prompts, side by side (a paired prompt ablation).

A search records what the Designer saw at each step (the ``request`` of its rows in
``messages.jsonl``). This script asks the Designer again, for the first call of every recorded
step, once with each prompt of ``--prompts``: same state, same temperature as the run drew, one
seed per step shared by all prompts, up to the run's retries with the rejection fed back. Every
prompt therefore answers the same questions, which separates what a prompt does from where a
search happened to go (two searches diverge after their first different child).

Parents and children are scored in this process with the run's proxy on a synthetic batch (the
run's batch size and dataset shape), so the comparison does not depend on the run's data.
Only spaces with an edit schema are replayed: their children are built from the space's own
operations, never from program text the model wrote.

Printed per prompt (``--json`` for one JSON object):
  steps                 steps asked
  accepted              steps with a proposal accepted within the retries
  better_than_parent    steps whose child beat its parent on the proxy
  mean_score_change     child minus parent, in the units the prompt shows (log10 for log proxies)
  mean_accuracy_change  child minus parent test accuracy (with ``--truth``)
  median_seconds        per step, all attempts (the prompts share one server and its cache, so
                        compare speed with benchmarks/designer_quality.py instead)
and, per pair of prompts, how many steps got the same child from both.

Usage: python benchmarks/prompt_replay.py RUN_DIR [RUN_DIR ...] --prompts designer@v5,designer@v6
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import fields
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2
from graphs.events import iter_events  # noqa: E402
from graphs.runner import UsageError, build_designer, load_run_config  # noqa: E402

from agents.designer import DesignRequest  # noqa: E402
from agents.models import LLMError, ModelSpecError, check_model, load_chat_model  # noqa: E402
from prompts import PromptError, load_prompt  # noqa: E402
from tools.datasets import get_dataset  # noqa: E402
from tools.proxies import Batch, ProxyFailure, get_proxy, score_network  # noqa: E402
from tools.spaces import get_space  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of earlier searches")
    parser.add_argument("--prompts", required=True,
                        help="comma-separated Designer prompt ids, e.g. designer@v5,designer@v6")
    parser.add_argument("--model", default="local", help="provider string (default: local)")
    parser.add_argument("--every", type=int, default=1,
                        help="replay every Nth iteration only (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="replay at most this many steps")
    parser.add_argument("--truth", type=Path, default=None,
                        help="NAS-Bench-201 ground truth, for the accuracy change")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--progress", action="store_true", help="print one line per call to stderr")
    args = parser.parse_args(argv)
    args.prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
    if not args.prompts:
        parser.error("--prompts needs at least one prompt id")
    if args.every < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--every and --limit must be >= 1")
    return args


def recorded_steps(run_dir: Path) -> list[dict]:
    """Return the first Designer call of each step of ``run_dir``, with what had been evaluated.

    ``seen`` holds the canonical forms evaluated before the step (the decoder excludes them, as
    in the search). Raises ``UsageError`` when the run recorded no requests (older runs).
    """
    transcript = run_dir / "messages.jsonl"
    events = run_dir / "events.jsonl"
    if not transcript.exists() or not events.exists():
        raise UsageError(f"{run_dir} has no messages.jsonl/events.jsonl; pass a search's run directory")
    evaluated = [(event.get("iteration", 0), event["canonical"]) for event in iter_events(events)
                 if event.get("event") == "evaluation" and event.get("canonical")]
    steps = []
    for row in iter_events(transcript):  # the same line format; a line cut by a kill is skipped
        if row.get("role") != "designer" or row.get("attempt") != 1:
            continue
        if "request" not in row:
            raise UsageError(f"{transcript} does not record the Designer's requests (a run made "
                             "before they were recorded); replay a run made with this version")
        iteration = row["iteration"]
        steps.append({"run": run_dir, "iteration": iteration, "temperature": row["temperature"],
                      "request": row["request"],
                      "seen": {c for i, c in evaluated if i < iteration}})
    return steps


def run(args: argparse.Namespace) -> dict:
    """Replay the steps and return the figures."""
    configs = {run_dir: load_run_config(run_dir) for run_dir in args.runs}
    first = configs[args.runs[0]]
    for run_dir, config in configs.items():
        if (config.space, config.proxy, config.dataset) != (first.space, first.proxy, first.dataset):
            raise UsageError(f"{run_dir} searched {config.space}/{config.proxy}/{config.dataset}, "
                             f"{args.runs[0]} {first.space}/{first.proxy}/{first.dataset}; "
                             "replay runs of one space, proxy and dataset together")
    space, proxy = get_space(first.space), get_proxy(first.proxy)
    if space.edit_schema is None:
        raise UsageError(f"space {first.space!r} has no edit schema: its children are programs "
                         "the model wrote, which this script would run unsandboxed")
    steps = [step for run_dir in args.runs for step in recorded_steps(run_dir)
             if (step["iteration"] - 1) % args.every == 0][: args.limit]
    if not steps:
        raise UsageError("no recorded Designer steps to replay in " + ", ".join(map(str, args.runs)))
    prompts = [load_prompt(p) for p in args.prompts]
    truth = None
    if args.truth is not None:
        from tools.truth import load_truth

        truth = load_truth(args.truth)

    dataset = get_dataset(first.dataset)
    batch = Batch.synthetic(batch_size=first.batch_size, resolution=dataset.resolution,
                            num_classes=dataset.num_classes, seed=args.seed,
                            channels=dataset.channels)
    scores: dict[str, float | None] = {}

    def score(arch: str) -> float | None:
        key = space.canonical(arch)
        if key not in scores:
            value = score_network(space.build(arch, dataset.num_classes), [proxy.name], batch,
                                  seed=args.seed)[proxy.name]
            scores[key] = None if isinstance(value, ProxyFailure) else float(value)
        return scores[key]

    def shown(value: float | None) -> float | None:
        if value is None or (proxy.log_scale and value <= 0):
            return None
        return math.log10(value) if proxy.log_scale else value

    model = load_chat_model(args.model)
    check_model(model, timeout_s=600)
    known = {f.name for f in fields(DesignRequest)}
    outcomes: dict[str, list[dict]] = {p.id: [] for p in prompts}
    # One Designer per run and prompt: building one renders the fixed system message (space
    # text and code, proxy source), the same for every step of that run.
    designers = {(run_dir, prompt.id): build_designer(config, model, space, proxy, prompt)
                 for run_dir, config in configs.items() for prompt in prompts}
    for number, step in enumerate(steps):
        config = configs[step["run"]]
        request_fields = {k: v for k, v in step["request"].items() if k in known}
        parent = request_fields["parent_arch"]
        parent_score = score(parent)
        for prompt in prompts:
            designer = designers[step["run"], prompt.id]
            request = DesignRequest(**{**request_fields, "feedback": []})
            seen = step["seen"] | {space.canonical(parent)}
            start = time.monotonic()
            result = None
            for attempt in range(config.max_retries + 1):
                result = designer.propose(request, seen=seen, temperature=step["temperature"],
                                          seed=args.seed * 100_003 + number * 10 + attempt)
                if args.progress:
                    print(f"step {number + 1}/{len(steps)} {prompt.id} attempt {attempt + 1}: "
                          f"{result.error_kind or 'ok'} {result.edit or ''}", file=sys.stderr,
                          flush=True)
                if result.ok:
                    break
                request.feedback = [*request.feedback, result.reason]
            child = result.child if result is not None and result.ok else None
            child_score = score(child) if child else None
            outcome = {"step": number, "child": space.canonical(child) if child else None,
                       "seconds": time.monotonic() - start, "better": False, "change": None,
                       "accuracy_change": None}
            if child_score is not None and parent_score is not None:
                outcome["better"] = (child_score > parent_score) == proxy.higher_is_better \
                    and child_score != parent_score
                if shown(child_score) is not None and shown(parent_score) is not None:
                    outcome["change"] = shown(child_score) - shown(parent_score)
            if truth is not None and child:
                child_acc, parent_acc = truth.query(child), truth.query(parent)
                if child_acc is not None and parent_acc is not None:
                    outcome["accuracy_change"] = child_acc - parent_acc
            outcomes[prompt.id].append(outcome)
    return summarise(outcomes, model.name, len(steps))


def summarise(outcomes: dict[str, list[dict]], model_name: str, steps: int) -> dict:
    """Return the per-prompt figures and the pairwise agreement."""

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return round(statistics.mean(values), 3) if values else None

    figures: dict = {"model": model_name, "steps": steps, "prompts": {}}
    for prompt_id, rows in outcomes.items():
        figures["prompts"][prompt_id] = {
            "steps": len(rows),
            "accepted": sum(r["child"] is not None for r in rows),
            "better_than_parent": sum(r["better"] for r in rows),
            "mean_score_change": mean([r["change"] for r in rows]),
            "mean_accuracy_change": mean([r["accuracy_change"] for r in rows]),
            "median_seconds": round(statistics.median(r["seconds"] for r in rows), 2),
        }
    figures["same_child"] = {
        f"{a} / {b}": sum(x["child"] is not None and x["child"] == y["child"]
                          for x, y in zip(outcomes[a], outcomes[b]))
        for a, b in combinations(outcomes, 2)
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run from the command line; return the exit code."""
    args = parse_args(argv)
    try:
        figures = run(args)
    except (UsageError, ModelSpecError, PromptError, ValueError) as exc:
        print(f"prompt_replay: {exc}", file=sys.stderr)
        return 2
    except LLMError as exc:
        print(f"prompt_replay: the model is unavailable ({exc.kind}): {exc.message}",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"model {figures['model']}, {figures['steps']} steps")
    for prompt_id, row in figures["prompts"].items():
        print(f"{prompt_id}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    for pair, same in figures["same_child"].items():
        print(f"same child, {pair}: {same} of {figures['steps']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
