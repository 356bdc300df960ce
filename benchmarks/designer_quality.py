"""Measure how often the Designer's proposals are usable, and how long a call takes, on NB201.

Each of ``--calls`` design steps samples a parent NB201 cell, scores it with a real proxy
(``synflow`` by default; ``--proxy params`` is instant), and asks the Designer for a mutation with
the default prompt, retrying up to ``--retries`` times with the rejection reasons fed back, as the
search graph does. The recent parents form the history the prompt shows.

Printed figures (``--json`` for one JSON object):
  valid_first_try       fraction of steps whose first proposal was accepted
  valid_after_retries   fraction of steps with an accepted proposal within 1 + retries calls
  distinct_from_parent  of all calls whose proposal was well-formed and legal, the fraction that
                        changes the parent (the rest are no-op edits or identical cells)
  median_seconds_cold   the first call (nothing cached yet: the whole prompt is prefilled)
  median_seconds_warm   every later call (the fixed system part is a cached prefix)
  peak_rss_mb           peak resident memory of this process (the embedded model runs in it)
  mean_uncached_input_tokens_warm
                        prompt tokens a warm call made the server read, i.e. not taken from
                        its prompt cache as the server reports it (llama.cpp does); on a CPU a
                        warm call costs about this times the prompt rate, plus the reply
  copied_example        fraction of calls that returned the worked example's edit verbatim
  example_edge_share    fraction of edit proposals on the example's edge (about 1/6 = 0.167
                        when the example does not steer the choice of edge)

Usage: python benchmarks/designer_quality.py --model local --calls 20 --json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2
from graphs.config import SearchConfig  # noqa: E402

import torch

from agents.designer import Designer, DesignRequest, PromptSwitches, worked_example
from agents.models import LLMError, ModelSpecError, check_model, load_chat_model
from prompts import PromptError, load_prompt
from tools.proxies import Batch, ProxyFailure, get_proxy, score_network
from tools.spaces import get_space
from tools.spaces.nb201 import EDGE_NAMES, parse

TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)  # the paper's set, drawn per call
# The prompt `python -m graphs.search` uses unless told otherwise (not simply the newest version).
DEFAULT_PROMPT = next(f.default for f in fields(SearchConfig) if f.name == "designer_prompt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = UsageParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="local", help="provider string (local, openai:gpt-4o, fake:FILE)"
    )
    parser.add_argument("--calls", type=int, default=20, help="design steps (parents) to run")
    parser.add_argument(
        "--retries", type=int, default=3, help="re-asks with feedback after a rejection"
    )
    parser.add_argument("--proxy", default="synflow", help="proxy that scores the parents")
    parser.add_argument(
        "--prompt",
        default=DEFAULT_PROMPT,
        help=f"designer prompt id (default: the search's, {DEFAULT_PROMPT})",
    )
    parser.add_argument("--output-form", choices=("edit", "whole"), default="edit")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--history-length", type=int, default=PromptSwitches().history_length)
    parser.add_argument(
        "--no-restrict", action="store_true", help="do not restrict decoding to accepted edits"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--progress", action="store_true", help="print one line per call to stderr")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.retries < 0:
        parser.error("--calls must be >= 1 and --retries >= 0")
    return args


def score_parents(space, proxy_name: str, cells: list[str], seed: int) -> list[float | None]:
    """Score each cell with the proxy on a synthetic CIFAR-sized batch (None when it fails)."""
    torch.set_num_threads(1)
    batch = Batch.synthetic(batch_size=16, resolution=32, num_classes=10, seed=seed)
    scores: list[float | None] = []
    for cell in cells:
        value = score_network(space.build(cell, 10), [proxy_name], batch, seed=seed)[proxy_name]
        scores.append(None if isinstance(value, ProxyFailure) else value)
    return scores


def is_no_op(result, parent: str) -> bool:
    """Return True when a proposal left the parent unchanged.

    The nb201 space refuses an edit that sets an edge to the operation it already has (an
    ``invalid`` result); an edit to a dead edge passes but is caught as ``same_as_parent``.
    """
    if result.error_kind == "same_as_parent":
        return True
    if result.error_kind == "invalid" and result.edit and result.edit.get("edge") in EDGE_NAMES:
        return parse(parent)[EDGE_NAMES.index(result.edit["edge"])] == result.edit.get("op")
    return False


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark and return its figures."""
    rng = random.Random(args.seed)
    space = get_space("nb201")
    proxy = get_proxy(args.proxy)
    parents = [space.sample(rng) for _ in range(args.calls)]
    scoring_start = time.monotonic()
    scores = score_parents(space, args.proxy, parents, args.seed)
    scoring_s = time.monotonic() - scoring_start

    model = load_chat_model(args.model)
    startup = time.monotonic()
    check_model(model, timeout_s=600)
    startup_s = time.monotonic() - startup
    designer = Designer(
        model,
        space=space,
        dataset="cifar10",
        proxy=proxy,
        prompt=load_prompt(args.prompt),
        switches=PromptSwitches(
            output_form=args.output_form,
            history_length=args.history_length,
            restrict_edits=False if args.no_restrict else None,
        ),
        max_tokens=args.max_tokens,
    )

    example = worked_example(space, designer.output_form)
    example_output = {k: v for k, v in example[1].items() if k != "rationale"} if example else None
    copied = 0
    edges: Counter[str] = Counter()
    seen = {space.canonical(p) for p in parents}
    history: list[dict] = []
    first_ok = final_ok = valid_children = distinct = 0
    seconds: list[float] = []
    kinds: Counter[str] = Counter()
    tokens_in: list[int] = []
    tokens_out: list[int] = []
    tokens_uncached: list[int | None] = []  # per call, None when the call got no reply
    for step, (parent, score) in enumerate(zip(parents, scores)):
        scored = [h for h in history if h["score"] is not None]
        best = (
            max(scored, key=lambda h: h["score"], default=None)
            if proxy.higher_is_better
            else min(scored, key=lambda h: h["score"], default=None)
        )
        request = DesignRequest(
            parent_arch=parent,
            parent_score=score,
            iteration=step + 1,
            history=list(history),
            best=best,
            feedback=[],
        )
        for attempt in range(args.retries + 1):
            start = time.monotonic()
            result = designer.propose(
                request,
                seen=seen,
                temperature=rng.choice(TEMPERATURES),
                seed=args.seed * 100_003 + step * 10 + attempt,
            )
            seconds.append(result.reply.seconds if result.reply else time.monotonic() - start)
            if result.reply:
                tokens_in.append(result.reply.input_tokens)
                tokens_out.append(result.reply.output_tokens)
            tokens_uncached.append(
                result.reply.input_tokens - result.reply.prompt_cached_tokens
                if result.reply else None
            )
            kinds[result.error_kind or "ok"] += 1
            if args.progress:
                print(
                    f"step {step + 1}/{args.calls} attempt {attempt + 1}: "
                    f"{result.error_kind or 'ok'} {seconds[-1]:.1f}s {result.edit or ''}",
                    file=sys.stderr,
                    flush=True,
                )
            proposal = result.edit if result.edit is not None else {"arch": result.child}
            copied += proposal == example_output
            if result.edit is not None:
                edges[result.edit.get("edge")] += 1
            no_op = is_no_op(result, parent)
            if no_op or (result.child is not None and result.error_kind in (None, "duplicate")):
                valid_children += 1
                distinct += not no_op
            if result.ok:
                first_ok += attempt == 0
                final_ok += 1
                seen.add(result.canonical)
                break
            request.feedback = [*request.feedback, result.reason]
        history.append({"arch": parent, "score": score, "error": None})

    rss_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    uncached_warm = [n for n in tokens_uncached[1:] if n is not None]
    system = designer.messages(DesignRequest(parents[0], scores[0], 1))[0]["content"]
    return {
        "valid_first_try": round(first_ok / args.calls, 3),
        "valid_after_retries": round(final_ok / args.calls, 3),
        "distinct_from_parent": round(distinct / valid_children, 3) if valid_children else 0.0,
        "median_seconds_cold": round(seconds[0], 2),
        "median_seconds_warm": round(statistics.median(seconds[1:]), 2)
        if len(seconds) > 1
        else None,
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "calls": args.calls,
        "model": model.name,
        "model_calls": len(seconds),
        "outcomes": dict(kinds),
        "copied_example": round(copied / len(seconds), 3),
        "example_edge_share": round(edges[example_output.get("edge")] / sum(edges.values()), 3)
        if edges and example_output and "edge" in example_output else None,
        "edges": dict(edges.most_common()),
        "mean_input_tokens": round(statistics.mean(tokens_in), 1) if tokens_in else None,
        "mean_output_tokens": round(statistics.mean(tokens_out), 1) if tokens_out else None,
        "mean_uncached_input_tokens_warm": round(statistics.mean(uncached_warm), 1)
        if uncached_warm
        else None,
        "system_prompt_chars": len(system),
        "prompt": designer.prompt.id,
        "prompt_sha256": designer.prompt.sha256,
        "proxy": proxy.name,
        "startup_seconds": round(startup_s, 1),
        "parent_scoring_seconds": round(scoring_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run from the command line; return the exit code."""
    args = parse_args(argv)
    try:
        figures = run(args)
    except (ModelSpecError, PromptError, ValueError) as exc:
        print(f"designer_quality: {exc}", file=sys.stderr)
        return 2
    except LLMError as exc:
        print(
            f"designer_quality: the model is unavailable ({exc.kind}): {exc.message}",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
