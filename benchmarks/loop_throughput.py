"""Measure search-loop throughput: the full graph with fake models of a fixed latency.

Usage:
    python benchmarks/loop_throughput.py                      # latency 2 s, concurrency 1,4,8
    python benchmarks/loop_throughput.py --latency 0.5 --concurrency 1,8 --iterations 8 --json

Each concurrency level is one real ``run_search`` (nb201, sandboxed evaluator, the ``params``
proxy by default, SQLite checkpoints, score and LLM caches, events.jsonl) in its own temporary
run directory. The Designer and the Reflector are scripted fake models (``agents.fake``) that
sleep ``--latency`` seconds per call. The Designer answers in the ``whole`` output form (a
scripted fake does not read its prompt, so it cannot aim a one-edge edit at the parent it is
shown) with pre-drawn nb201 cells whose canonical forms are pairwise different and outside every
cell the initial population could draw. So every proposal is valid and new, and each one is really
built and scored in the sandbox: the ``scored``, ``invalid`` and ``cached`` columns show it.

Definitions:
    iteration  one mutation: design -> evaluate -> reflect of one child (the paper's iteration).
               A graph step runs ``concurrency`` of them in parallel, then updates the population;
               ``--iterations`` is the total per run, so a run has ceil(iterations / concurrency)
               steps.
    wall       from the ``population_updated`` event of the initial population to that of the
               last step (start-up and the initial population are excluded).
    LLM time   ``seconds`` of each ``llm_call`` event: the time ``ChatModel.complete`` spent on
               the call: the scripted sleep plus the reply-cache look-up and write and the reply's
               parsing. That extra part is framework cost too, so it is shown on its own as
               ``llm_extra_ms_per_call`` (LLM time minus ``--latency``, per call).
    eval time  ``seconds`` of each ``evaluation`` event: the sandbox worker's time to build and
               score the candidate.
    critical   per step, the slowest slot's LLM time + eval time: the least time the step could
               take if the framework cost nothing.
    overhead   per step, its wall (between consecutive ``population_updated`` events) minus its
               critical time: graph scheduling, prompt rendering, validation, the trip to the
               sandbox worker and any queueing for it, cache and checkpoint writes, the event
               trace. Reported per step (what each step waits for besides the models and the
               proxy) and per iteration (the step's overhead shared by its iterations; this is
               the figure the < 50 ms target applies to).

Each run gets one sandbox worker per parallel branch (``--workers`` default: the concurrency), so
branches do not queue for the evaluator; with fewer workers the wait for a free one counts as
overhead. On a machine with fewer cores than branches, parallel evaluations slow each other down;
that shows as eval time, since the worker measures it.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2
from graphs.config import SearchConfig
from graphs.nodes import INIT_DRAWS_PER_SLOT, _rng
from graphs.runner import UsageError, run_search
from graphs.trace import read_events
from tools.spaces import get_space

#: The acceptance figures of issue 6: speedup of the highest concurrency over 1, overhead cap.
TARGET_SPEEDUP = 3.0
TARGET_OVERHEAD_MS = 50.0


def fresh_cells(config: SearchConfig, count: int, seed: int) -> list[str]:
    """Return ``count`` nb201 cells, pairwise non-isomorphic and unlike any initial-population draw.

    The initial population draws from ``_rng(config, "init")``; excluding every cell it could
    draw keeps each proposal different from its parent and from everything already evaluated.
    """
    space = get_space("nb201")
    init_rng = _rng(config, "init")
    taken = {space.canonical(space.sample(init_rng))
             for _ in range(config.population * INIT_DRAWS_PER_SLOT)}
    rng, cells = random.Random(f"loop-throughput:{seed}"), []
    while len(cells) < count:
        arch = space.sample(rng)
        canonical = space.canonical(arch)
        if canonical not in taken:
            taken.add(canonical)
            cells.append(arch)
    return cells


def fake_script(cells: list[str], latency: float) -> dict:
    """Return a role-split fake script: one Designer reply per cell, a repeating Reflector."""
    designer = [{"sleep": latency, "text": json.dumps(
        {"arch": arch, "rationale": f"benchmark proposal {i}"})} for i, arch in enumerate(cells)]
    reflection = json.dumps({"what_changed": "one cell", "why": "benchmark",
                             "suggestion": "change another edge"})
    return {"designer": designer,
            "reflector": {"replies": [{"sleep": latency, "text": reflection}], "repeat": True}}


def step_figures(events: list[dict]) -> list[dict]:
    """Return per step: wall, critical LLM+eval time, and the LLM and eval parts of that path."""
    updates = {e["iteration"]: e["time"] for e in events if e["event"] == "population_updated"}
    per_slot: dict[tuple[int, int], dict[str, float]] = {}
    for e in events:
        if e["event"] == "llm_call":
            kind = "llm"
        elif e["event"] == "evaluation" and e.get("phase") == "search":
            kind = "eval"
        else:
            continue
        slot = per_slot.setdefault((e["iteration"], e["slot"]), {"llm": 0.0, "eval": 0.0})
        slot[kind] += float(e.get("seconds") or 0.0)
    steps = []
    for iteration in sorted(i for i in updates if i > 0):
        slots = [v for (it, _), v in per_slot.items() if it == iteration]
        slowest = max(slots, key=lambda v: v["llm"] + v["eval"])
        wall = updates[iteration] - updates[iteration - 1]
        critical = slowest["llm"] + slowest["eval"]
        steps.append({"wall": wall, "critical": critical, "llm": slowest["llm"],
                      "eval": slowest["eval"], "slots": len(slots)})
    return steps


def run_level(concurrency: int, args: argparse.Namespace) -> dict:
    """Run one search at ``concurrency`` in a temporary directory and return its figures."""
    steps_wanted = math.ceil(args.iterations / concurrency)
    with tempfile.TemporaryDirectory(prefix=f"loop-throughput-c{concurrency}-") as tmp:
        tmp_path = Path(tmp)
        config = SearchConfig(
            space="nb201", proxy=args.proxy, iterations=steps_wanted, population=args.population,
            concurrency=concurrency, output_form="whole", batch_size=args.batch_size,
            workers=args.workers or concurrency, seed=args.seed, device="cpu",
            designer_model="fake:pending", reflector_model="fake:pending",
        )
        cells = fresh_cells(config, steps_wanted * concurrency, args.seed)
        script = tmp_path / "fake.json"
        script.write_text(json.dumps(fake_script(cells, args.latency)))
        config.designer_model = config.reflector_model = f"fake:{script}"
        outcome = run_search(config, tmp_path / "run", resume=False, trace_mode="quiet",
                             console=Console(file=io.StringIO()))  # no end-of-run summary
        events = read_events(tmp_path / "run" / "events.jsonl")
    steps = step_figures(events)
    iterations = sum(s["slots"] for s in steps)
    wall = sum(s["wall"] for s in steps)
    overhead = [s["wall"] - s["critical"] for s in steps]
    llm_seconds = [float(e["seconds"]) for e in events if e["event"] == "llm_call"]
    scored = [e for e in events if e["event"] == "evaluation" and e.get("phase") == "search"]
    return {
        "concurrency": concurrency,
        "workers": config.workers,
        "steps": len(steps),
        "iterations": iterations,
        "wall_s": round(wall, 3),
        "iterations_per_min": round(iterations / wall * 60, 2),
        "llm_s_per_step": round(statistics.fmean(s["llm"] for s in steps), 3),
        "eval_s_per_step": round(statistics.fmean(s["eval"] for s in steps), 3),
        "llm_extra_ms_per_call": round((statistics.fmean(llm_seconds) - args.latency) * 1000, 1),
        "overhead_ms_per_step": round(statistics.fmean(overhead) * 1000, 1),
        "overhead_ms_per_step_max": round(max(overhead) * 1000, 1),
        "overhead_ms_per_iteration": round(sum(overhead) / iterations * 1000, 1),
        "evaluated": sum(1 for e in scored if e["ok"] and not e["cached"]),
        "cache_hits": sum(1 for e in scored if e["cached"]),
        "invalid_proposals": outcome.summary["invalid_proposals"],
    }


COLUMNS = (  # (key, header, format)
    ("concurrency", "conc", "{:>4}"), ("workers", "wkrs", "{:>4}"), ("steps", "steps", "{:>5}"),
    ("iterations", "iters", "{:>5}"), ("wall_s", "wall s", "{:>7.1f}"),
    ("iterations_per_min", "iters/min", "{:>9.1f}"), ("llm_s_per_step", "LLM s/step", "{:>10.2f}"),
    ("eval_s_per_step", "eval s/step", "{:>11.3f}"),
    ("llm_extra_ms_per_call", "LLM+ ms/call", "{:>12.1f}"),
    ("overhead_ms_per_step", "ovh ms/step", "{:>11.1f}"),
    ("overhead_ms_per_iteration", "ovh ms/iter", "{:>11.1f}"),
    ("evaluated", "scored", "{:>6}"), ("invalid_proposals", "invalid", "{:>7}"),
    ("cache_hits", "cached", "{:>6}"),
)


def render_table(rows: list[dict], latency: float) -> str:
    """Return the figures as a fixed-width table."""
    widths = [len(f.format(0)) for _, _, f in COLUMNS]
    header = " ".join(h.rjust(w) for (_, h, _), w in zip(COLUMNS, widths, strict=True))
    lines = [f"fake latency {latency:g} s per LLM call (Designer and Reflector)", header,
             "-" * len(header)]
    lines += [" ".join(f.format(r[k]) for k, _, f in COLUMNS) for r in rows]
    return "\n".join(lines)


def verdict(rows: list[dict]) -> dict:
    """Compare the highest concurrency with concurrency 1 against the acceptance figures."""
    base = next((r for r in rows if r["concurrency"] == 1), None)
    top = max(rows, key=lambda r: r["concurrency"])
    speedup = top["iterations_per_min"] / base["iterations_per_min"] if base else None
    worst = max(r["overhead_ms_per_iteration"] for r in rows)
    return {
        "speedup": round(speedup, 2) if speedup is not None else None,
        "speedup_levels": [top["concurrency"], 1] if base else None,
        "max_overhead_ms_per_iteration": worst,
        "speedup_ok": speedup is not None and speedup >= TARGET_SPEEDUP,
        "overhead_ok": worst < TARGET_OVERHEAD_MS,
    }


def parse_levels(text: str) -> list[int]:
    """Parse ``--concurrency`` ("1,4,8") into positive integers."""
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(
            f"takes positive integers separated by commas, e.g. 1,4,8 (got {text!r})")
    return levels


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with ``--json``); return 0, or 2 on bad flags."""
    parser = UsageParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per fake LLM call")
    parser.add_argument("--concurrency", type=parse_levels, default=[1, 4, 8],
                        help="comma-separated concurrency levels (default 1,4,8)")
    parser.add_argument("--iterations", type=int, default=16,
                        help="mutations per run (steps = ceil(iterations / concurrency))")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--proxy", default="params", help="ranking proxy (default params: cheap)")
    parser.add_argument("--workers", type=int, default=0,
                        help="evaluation worker processes (default 0: one per branch)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    problems = [text for bad, text in (
        (not 0 <= args.latency < math.inf, "--latency must be 0 or more seconds"),
        (args.iterations < 1, "--iterations must be at least 1"),
        (args.population < 2, "--population must be at least 2"),
        (args.workers < 0, "--workers must be 0 (one per branch) or more"),
    ) if bad]
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2
    rows = []
    for level in args.concurrency:
        try:
            rows.append(run_level(level, args))
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    result = {"latency_s": args.latency, "proxy": args.proxy, "levels": rows, **verdict(rows)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(render_table(rows, args.latency))
    if result["speedup"] is not None:
        top = result["speedup_levels"][0]
        print(f"speedup at concurrency {top} over 1: {result['speedup']:.2f}x "
              f"(target >= {TARGET_SPEEDUP:g}x)")
    print(f"worst overhead per iteration: {result['max_overhead_ms_per_iteration']:.1f} ms "
          f"(target < {TARGET_OVERHEAD_MS:g} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
