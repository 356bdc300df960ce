"""The DARTS space through the same graph, sandbox and proxies as nb201 (scripted fake models)."""

from __future__ import annotations

import json

import pytest

from graphs.runner import run_search
from tests.search_helpers import write_script
from tests.test_graph import reflections, small_config
from tools.spaces import get_space


def darts_edits(n: int) -> list[str]:
    """Edits over both cells, every node and slot; some are illegal for a given parent."""
    ops = ["sep_conv_3x3", "dil_conv_5x5", "skip_connect", "max_pool_3x3", "sep_conv_5x5"]
    return [json.dumps({"cell": ("normal", "reduce")[i % 2], "node": i % 4, "slot": (i // 4) % 2,
                        "op": ops[i % len(ops)], "input": i % 2, "rationale": f"edit {i}"})
            for i in range(n)]


@pytest.mark.slow  # three DARTS networks (C=16, 8 cells) scored with synflow and naswot
def test_darts_search_runs_end_to_end(tmp_path):
    model = write_script(tmp_path / "script.json", darts_edits(30), reflections(10))
    config = small_config(model, space="darts", proxy="synflow", extra_proxies=("naswot",),
                          iterations=2, population=3)
    outcome = run_search(config, tmp_path / "run", resume=False, trace_mode="quiet")
    summary = outcome.summary
    assert outcome.reason == "iterations" and summary["space"] == "darts"
    space = get_space("darts")
    best = summary["best"]
    assert space.validate(best["arch"]) == best["arch"] and best["params"] > 0
    assert set(best["scores"]) == {"synflow", "naswot"}
    population = json.loads((tmp_path / "run" / "population.json").read_text())
    assert all(space.validate(m["arch"]) == m["arch"] for m in population)
    assert summary["evaluations"] >= 3 + 1  # the initial population plus at least one child
