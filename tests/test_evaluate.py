"""The evaluator: batches, every failure kind, worker replacement, the cache, Ray and the CLI.

Run: .venv/bin/python -m pytest tests/test_evaluate.py   (add -m "not slow" to skip Ray and the CLI)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tools.evaluate import FAILURE_KINDS, EvalSettings, Evaluator, main
from tools.spaces import get_space
from tools.spaces.torch_code import render_template

ROOT = Path(__file__).resolve().parents[1]
LIGHT = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
TWIN = "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # node 1 is a dead end
MID = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
HEAVY = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
    + "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
TIMEOUT_S = 2.0


def code(body: str = "pass", init: str = "pass") -> str:
    """Return the plain template with extra statements at the start of __init__ and forward."""
    src = render_template("plain", widths=(8, 16, 16))
    src = src.replace(
        "        super().__init__()\n        self.stem",
        f"        super().__init__()\n        {init}\n        self.stem",
    )
    return src.replace(
        "    def forward(self, x):\n        x = F",
        f"    def forward(self, x):\n        {body}\n        x = F",
    )


@pytest.fixture(scope="module")
def nb201(tmp_path_factory):
    settings = EvalSettings(
        space="nb201",
        proxies=("params", "synflow"),
        device="cpu",
        timeout_s=30,
        max_params=1.2e6,
        batch_size=16,
    )
    path = tmp_path_factory.mktemp("cache") / "scores.db"
    with Evaluator(settings, workers=2, cache_path=path) as ev:
        yield ev


@pytest.fixture(scope="module")
def torch_code():
    settings = EvalSettings(
        space="torch-code",
        proxies=("params", "grad_norm"),
        device="cpu",
        timeout_s=TIMEOUT_S,
        memory_mb=1024,
        max_flops=5e7,
        batch_size=8,
    )
    with Evaluator(settings, workers=1) as ev:
        assert ev.evaluate([code()])[0].ok  # start the worker before timing anything
        yield ev


def test_batch_results_in_order_with_scores_counts_and_failures(nb201) -> None:
    results = nb201.evaluate([MID, "not an arch", LIGHT, HEAVY])
    assert [r.arch for r in results] == [MID, "not an arch", LIGHT, HEAVY]
    mid, bad, light, heavy = results
    assert mid.ok and set(mid.scores) == {"params", "synflow"} and mid.error is None
    assert mid.params == mid.scores["params"] and mid.flops > light.flops > 0
    assert mid.seconds > 0 and not mid.cached
    assert mid.scores["synflow"] > light.scores["synflow"]  # more convolutions, more synaptic flow
    assert bad.error.kind == "invalid_architecture" and "node groups" in bad.error.message
    assert heavy.error.kind == "over_budget" and heavy.scores == {}
    assert (
        f"{heavy.params:,} parameters" in heavy.error.message and "1,200,000" in heavy.error.message
    )
    assert json.loads(json.dumps(mid.to_dict()))["scores"] == mid.scores


def test_isomorphic_twins_and_repeats_cost_nothing(nb201) -> None:
    space = get_space("nb201")
    assert space.canonical(TWIN) == space.canonical(LIGHT)
    before = dict(nb201.stats)
    results = nb201.evaluate([LIGHT, TWIN, MID])
    assert all(r.cached for r in results)
    assert results[1].scores == results[0].scores and results[1].arch == TWIN
    assert nb201.stats["evaluated"] == before["evaluated"]
    assert nb201.stats["hits"] == before["hits"] + 3


def test_resumed_run_reads_the_cache_without_starting_workers(nb201) -> None:
    with Evaluator(nb201.settings, cache_path=nb201.cache.path) as again:
        results = again.evaluate([MID, HEAVY, "not an arch"])
        assert [r.cached for r in results] == [True, True, True]
        assert results[0].scores == nb201.evaluate([MID])[0].scores
        assert results[1].error.kind == "over_budget"
        assert again.worker_pids() == [] and again.stats["evaluated"] == 0


def test_two_workers_share_a_batch(nb201) -> None:
    space, rng = get_space("nb201"), __import__("random").Random(7)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(6)))
    results = nb201.evaluate(archs)
    assert all(r.ok or r.error.kind == "over_budget" for r in results)
    assert len(nb201.worker_pids()) == 2


def test_concurrent_calls_share_the_pool(nb201) -> None:
    space, rng = get_space("nb201"), __import__("random").Random(11)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(6)))
    expected = {a: None for a in archs}
    out: dict[int, list] = {}

    def call(k: int) -> None:
        out[k] = nb201.evaluate(archs[k::2])

    threads = [threading.Thread(target=call, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    got = {r.arch: r for k in (0, 1) for r in out[k]}
    assert set(got) == set(expected)
    assert all(r.ok or r.error.kind == "over_budget" for r in got.values())


def test_non_string_candidates_fail_softly(nb201) -> None:
    result = nb201.evaluate([None])[0]
    assert result.error.kind == "invalid_architecture" and "NoneType" in result.error.message


def test_infinite_loop_times_out_and_the_next_candidate_runs(torch_code) -> None:
    start = time.perf_counter()
    looping = torch_code.evaluate([code("while True:\n            pass")])[0]
    assert time.perf_counter() - start < TIMEOUT_S + 2
    assert looping.error.kind == "timeout" and f"{TIMEOUT_S:g} s" in looping.error.message
    assert torch_code.evaluate([code("x = x + 0")])[0].ok


@pytest.mark.parametrize("body", ["y = torch.zeros(10 ** 10)", "y = [0] * (5 * 10 ** 9)"])
def test_huge_allocation_is_a_memory_failure(torch_code, body: str) -> None:
    start = time.perf_counter()
    result = torch_code.evaluate([code(body)])[0]
    assert time.perf_counter() - start < TIMEOUT_S + 2
    assert result.error.kind == "memory", result.error
    assert "1024 MB" in result.error.message
    assert torch_code.evaluate([code("x = x * 1")])[0].ok


def test_exception_in_forward_is_crashed_with_the_line(torch_code) -> None:
    result = torch_code.evaluate([code("raise RuntimeError('shape trouble')")])[0]
    assert result.error.kind == "crashed"
    assert "shape trouble" in result.error.message and "at line" in result.error.message


def test_exception_in_constructor_is_build_error(torch_code) -> None:
    result = torch_code.evaluate([code(init="raise ValueError('bad width')")])[0]
    assert result.error.kind == "build_error" and "bad width" in result.error.message


def test_wrong_output_shape_is_build_error(torch_code) -> None:
    result = torch_code.evaluate(
        [code().replace("nn.Linear(c_in, num_classes)", "nn.Linear(c_in, 3)")]
    )[0]
    assert result.error.kind == "build_error" and "expected (1, 10)" in result.error.message


def test_nan_network_is_non_finite_and_names_the_proxy(torch_code) -> None:
    result = torch_code.evaluate([code("x = x * float('nan')")])[0]
    assert result.error.kind == "non_finite" and "grad_norm" in result.error.message
    assert result.params is not None  # counting worked; only the score is unusable
    assert torch_code.evaluate([code("x = x * float('nan')")])[0].cached  # deterministic: cached


def test_flop_budget_rejects_before_scoring(torch_code) -> None:
    big = render_template("plain", widths=(64, 128, 256))
    result = torch_code.evaluate([big])[0]
    assert result.error.kind == "over_budget" and "FLOPs" in result.error.message
    assert "50,000,000" in result.error.message and result.flops > 5e7 and result.scores == {}


def test_forbidden_code_is_refused_in_the_parent(torch_code) -> None:
    before = torch_code.stats["evaluated"]
    result = torch_code.evaluate([code("y = open('/etc/passwd').read()")])[0]
    assert result.error.kind == "forbidden" and "open" in result.error.message
    assert torch_code.stats["evaluated"] == before


def test_killed_worker_is_replaced_and_the_batch_goes_on(torch_code) -> None:
    pids = torch_code.worker_pids()
    killer = threading.Timer(0.7, lambda: [os.kill(p, signal.SIGKILL) for p in pids])
    killer.start()
    results = torch_code.evaluate([code("while True:\n            pass"), code("x = x - 0")])
    killer.join()
    assert results[0].error.kind == "crashed" and "SIGKILL" in results[0].error.message
    assert results[1].ok
    assert set(torch_code.worker_pids()).isdisjoint(pids)


def test_every_failure_kind_is_declared() -> None:
    assert set(FAILURE_KINDS) == {
        "invalid_architecture",
        "build_error",
        "timeout",
        "memory",
        "non_finite",
        "forbidden",
        "crashed",
        "over_budget",
    }


def test_bad_settings_fail_fast() -> None:
    with pytest.raises(ValueError, match="unknown search space"):
        Evaluator(EvalSettings(space="nope"))
    with pytest.raises(ValueError, match="unknown proxy"):
        Evaluator(EvalSettings(proxies=("nope",)))
    with pytest.raises(ValueError, match="unknown dataset"):
        Evaluator(EvalSettings(dataset="mnist"))


# --- Ray ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_executor_applies_the_same_sandbox() -> None:
    ray = pytest.importorskip(
        "ray", reason="the Ray executor is an optional extra: pip install ray"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        settings = EvalSettings(
            space="torch-code",
            proxies=("params",),
            device="cpu",
            timeout_s=TIMEOUT_S,
            memory_mb=1024,
        )
        with Evaluator(settings, workers=2, executor="ray") as ev:
            results = ev.evaluate(
                [
                    code(),
                    code("while True:\n            pass"),
                    code("y = torch.zeros(10 ** 10)"),
                    code("x = x + 1"),
                ]
            )
            assert [r.ok for r in results] == [True, False, False, True]
            assert results[1].error.kind == "timeout" and results[2].error.kind == "memory"
            assert results[0].scores["params"] == results[3].scores["params"] > 0
    finally:
        ray.shutdown()


# --- command line ---------------------------------------------------------------------------------
def test_cli_usage_errors_exit_2(capsys, tmp_path: Path) -> None:
    cases = [
        ["--space", "nope", "--proxy", "params", "--arch", LIGHT],
        ["--space", "nb201", "--proxy", "params,nope", "--arch", LIGHT],
        ["--space", "nb201", "--proxy", "params", "--arch-file", str(tmp_path / "missing.py")],
    ]
    for argv in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    broken = tmp_path / "broken.db"
    broken.write_text("garbage" * 100)
    assert (
        main(["--space", "nb201", "--proxy", "params", "--arch", LIGHT, "--cache", str(broken)])
        == 2
    )
    assert "delete it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--space", "nb201"])
    assert info.value.code == 2


def test_cli_invalid_candidate_exits_1(capsys) -> None:
    assert main(["--space", "nb201", "--proxy", "params", "--arch", "|bogus~0|", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["error"]["kind"] == "invalid_architecture"


@pytest.mark.slow
def test_cli_scores_a_file_then_answers_from_the_cache(capsys, tmp_path: Path) -> None:
    arch_file, cache = tmp_path / "net.py", tmp_path / "cli.db"
    arch_file.write_text(code())
    argv = [
        "--space",
        "torch-code",
        "--proxy",
        "params",
        "--arch-file",
        str(arch_file),
        "--device",
        "cpu",
        "--cache",
        str(cache),
        "--json",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    first = json.loads(run.stdout)
    assert first["ok"] and first["scores"]["params"] == first["params"] > 0 and first["flops"] > 0
    assert main(argv) == 0  # in-process: a cache hit starts no worker
    again = json.loads(capsys.readouterr().out)
    assert again["cached"] and again["scores"] == first["scores"]
    assert main(argv[:-1]) == 0
    assert capsys.readouterr().out.startswith("ok  params=")
