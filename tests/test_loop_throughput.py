"""The loop-throughput benchmark on a tiny budget: real graph, sandbox and proxy, fake latency."""

from __future__ import annotations

import json

import pytest

from benchmarks.loop_throughput import main


@pytest.mark.slow  # two real runs, each starting a sandbox worker: about 12-20 s on 2 cores
def test_parallel_branches_raise_throughput(capsys):
    code = main(["--latency", "0.25", "--iterations", "4", "--population", "4",
                 "--concurrency", "1,4", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    one, four = result["levels"]
    assert (one["concurrency"], one["steps"], four["concurrency"], four["steps"]) == (1, 4, 4, 1)
    for level in (one, four):
        assert level["iterations"] == level["evaluated"] == 4  # every proposal really scored
        assert level["invalid_proposals"] == 0 and level["cache_hits"] == 0
        # Two fake calls of 0.25 s lie on each step's critical path; a busy machine only adds.
        assert level["llm_s_per_step"] >= 0.5
        assert level["overhead_ms_per_iteration"] >= 0
    # Run one after another, the four branches' calls would take 2 s; overlapped they take about
    # 0.5 s. The bounds leave room for a loaded CI machine and still fail if branches serialise.
    assert four["llm_s_per_step"] < 1.5
    assert four["iterations_per_min"] > 1.3 * one["iterations_per_min"]
    assert result["speedup"] == round(four["iterations_per_min"] / one["iterations_per_min"], 2)
    assert set(result) >= {"speedup_ok", "overhead_ok", "max_overhead_ms_per_iteration"}


def test_bad_concurrency_is_a_usage_error(capsys):
    try:
        main(["--concurrency", "1,0"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("--concurrency 1,0 was accepted")
    err = capsys.readouterr().err
    assert "--concurrency" in err and "Traceback" not in err
