"""Bad input at every user-facing edge: one line on stderr naming the problem, exit 2, no traceback.

Covers ``python -m graphs.search``, ``graphs.ablate`` (flags and ``--config`` files),
``graphs.baselines``, ``tools.evaluate`` and the benchmark scripts' argument parsing. The CLIs are
driven in-process; a few subprocesses check that nothing reaches a real traceback. Nothing here
loads the embedded model, and only one slow test scores networks (the cheap params proxy): every
other case fails before a model or a worker starts. The models named are scripted fakes, so a
case that slipped through could not reach an LLM.
Cases that tests/test_graph.py, test_evaluate.py, test_truth.py, test_models.py and
test_ablate.py already cover are not repeated.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from graphs import ablate, baselines
from graphs import cli as search_cli
from graphs.config import ENV_VARS, SearchConfig
from graphs.runner import CHECKPOINTS, CONFIG_FILE
from tools import evaluate_cli

ROOT = Path(__file__).resolve().parents[1]
ARCH = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
        "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
MEGABYTE = 1_000_000
#: Longest error message a failed candidate may carry: it goes into the Designer's prompt.
MAX_FAILURE_MESSAGE = 2_000


# -- helpers --------------------------------------------------------------------------------------


def exit_code(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run a CLI in-process; argparse's own errors arrive as SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def assert_usage_error(capsys, main: Callable[[list[str]], int], argv: list[str],
                       *fragments: str) -> str:
    """Assert exit code 2 and one stderr line that starts ``error:`` and names the problem."""
    code = exit_code(main, argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (argv, code, captured.err, captured.out[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], (argv, fragment, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def no_rznas_environment(monkeypatch):
    """Settings must come from the arguments alone; a developer's RZNAS_* must not leak in."""
    for name in (*ENV_VARS.values(), "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_model(tmp_path: Path) -> str:
    script = tmp_path / "fake.json"
    script.write_text(json.dumps({"replies": ["{}"], "repeat": True}))
    return f"fake:{script}"


@pytest.fixture
def small_truth(tmp_path: Path) -> Path:
    path = tmp_path / "truth.csv"
    path.write_text(f"arch_str,cifar10_test_acc\n{ARCH},93.1\n")
    return path


def bad_file(tmp_path: Path, kind: str, name: str = "bad.json") -> Path:
    """A file (or directory) that is wrong in the way ``kind`` names."""
    path = tmp_path / name
    if kind == "directory":
        path.mkdir()
    elif kind == "utf16":
        path.write_text('{"methods": "rea"}\n', encoding="utf-16")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(kind)
    return path


# -- python -m graphs.search: flags ---------------------------------------------------------------


def search_argv(tmp_path: Path, model: str, *extra: str) -> list[str]:
    """Flags of a tiny search; ``extra`` comes last so it overrides (argparse keeps the last)."""
    return ["--designer-model", model, "--reflector-model", model, "--proxy", "params",
            "--population", "2", "--iterations", "1", "--batch-size", "2", "--device", "cpu",
            "--quiet", "--output", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--iterations", "abc"], "invalid int value: 'abc'"),
    (["--iterations", "1e3"], "invalid int value"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--output-form", "diff"], "invalid choice: 'diff'"),
    (["--population", "1"], "--population must be at least 2"),
    (["--population", "99999999999999999999"], "--population must be at most"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--concurrency", "100000000"], "--concurrency must be at most"),
    (["--workers", "-1"], "--workers must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 2"),
    (["--max-retries", "-1"], "--max-retries must be 0 or more"),
    (["--history-length", "-1"], "--history-length must be 0 or more"),
    (["--lessons", "-3"], "--lessons must be 0 or more"),
    (["--seed", "-1"], "--seed must be between 0 and"),
    (["--seed", str(2**80)], "--seed must be between 0 and"),
    (["--temperatures", "nan"], "--temperatures must be numbers between 0 and 2"),
    (["--temperatures", "3"], "--temperatures must be numbers between 0 and 2"),
    (["--temperatures", ","], "--temperatures must be numbers between 0 and 2"),
    (["--temperatures", "0.5,abc"], "expected comma-separated numbers"),
    (["--budget-params", "nan"], "--budget-params must be a positive number"),
    (["--budget-params=-1M"], "--budget-params must be a positive number"),
    (["--budget-params", "0"], "--budget-params must be a positive number"),
    (["--budget-flops", "inf"], "--budget-flops must be a positive number"),
    (["--budget-flops", "2X"], "expected a number such as 1.5M, got '2X'"),
    (["--eval-timeout", "0"], "--eval-timeout must be a positive number of seconds"),
    (["--eval-timeout", "nan"], "--eval-timeout must be a positive number of seconds"),
    (["--llm-timeout", "-5"], "--llm-timeout must be a positive number of seconds"),
    (["--wall-clock", "-1"], "--wall-clock must be a positive number of seconds"),
    (["--wall-clock", "nan"], "--wall-clock must be a positive number of seconds"),
    (["--dataset", "mnist"], "unknown dataset"),
    (["--space", ""], "unknown search space ''"),
    (["--space", "torch-code", "--output-form", "edit"], "use --output-form whole"),
    (["--proxy", ","], "--proxy names no proxy"),
    (["--proxy", "params,nope"], "unknown proxy"),
])
def test_search_flags(tmp_path, capsys, fake_model, extra, fragment):
    assert_usage_error(capsys, search_cli.main, search_argv(tmp_path, fake_model, *extra), fragment)
    assert not (tmp_path / "run" / CONFIG_FILE).exists()  # refused before anything was written


@pytest.mark.parametrize(("prompt", "fragment"), [
    ("@v1", "not '@v1'"),
    ("", "not ''"),
    ("critic@v1", "not 'critic@v1'"),
    ("designer@v1@v2", "unknown prompt 'designer@v1@v2'"),
    ("designer@vX", "unknown prompt 'designer@vX'"),
    ("designer@../../etc/passwd", "unknown prompt"),
    ("designer@v1\n$HOME {x} 'quoted'", "unknown prompt"),
])
def test_search_prompt_ids(tmp_path, capsys, fake_model, prompt, fragment):
    assert_usage_error(capsys, search_cli.main,
                       search_argv(tmp_path, fake_model, "--prompt", prompt), fragment)


# -- python -m graphs.search: model strings -------------------------------------------------------


UTF16_SCRIPT = '["x"]'.encode("utf-16")


@pytest.mark.parametrize(("make_spec", "fragment"), [
    (lambda d: f"local:{_write(d / 'notes.gguf', b'not a model at all')}", "is not a GGUF model"),
    (lambda d: f"local:{_write(d / 'empty.gguf', b'')}", "is not a GGUF model"),
    (lambda d: f"local:{d}", "GGUF file not found"),
    (lambda d: f"fake:{d}", "cannot be read"),
    (lambda d: f"fake:{_write(d / 'u16.json', UTF16_SCRIPT)}", "is not valid JSON"),
    (lambda d: f"fake:{_write(d / 'garbage.json', bytes(range(256)))}", "is not valid JSON"),
    (lambda d: "fake", "missing the script file"),
    (lambda d: "  ", "empty model string"),
    (lambda d: "Local", "unknown provider 'Local'"),
    (lambda d: "\uff4cocal", "unknown provider"),  # fullwidth look-alike of "local"
    (lambda d: "openai-compatible:http://bad host/v1:m", "must start with http://"),
    (lambda d: "openai-compatible:ftp://host/v1:m", "must start with http://"),
])
def test_search_model_strings(tmp_path, capsys, fake_model, make_spec, fragment):
    spec = make_spec(tmp_path)
    argv = search_argv(tmp_path, fake_model, "--designer-model", spec)
    assert_usage_error(capsys, search_cli.main, argv, fragment)
    if not spec.startswith(("fake", "local")):  # files are only read when the model loads
        assert not (tmp_path / "run" / CONFIG_FILE).exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_password_in_a_model_url_is_neither_echoed_nor_saved(tmp_path, capsys, fake_model):
    spec = "openai-compatible:http://alice:hunter2-secret@host:8000/v1:m"
    line = assert_usage_error(capsys, search_cli.main,
                              search_argv(tmp_path, fake_model, "--reflector-model", spec),
                              "RZNAS_OPENAI_COMPATIBLE_API_KEY")
    assert "hunter2-secret" not in line
    # Refused before the run directory (whose config.json would keep the string) was written.
    assert not (tmp_path / "run").exists()


# -- python -m graphs.search: ground truth --------------------------------------------------------


@pytest.mark.parametrize(("content", "fragment"), [
    ("directory", "not a regular file"),
    ("utf16", "not UTF-8"),
    ("binary", "not UTF-8"),
    (f"arch_str,acc\n{ARCH},90\n|nor_conv_3x3~0|,91\n", "line 3: bad arch_str"),
    (f"arch,acc\n{ARCH},90\n", "no 'arch_str' column"),
])
def test_search_truth_files(tmp_path, capsys, fake_model, content, fragment):
    if content in ("directory", "utf16", "binary"):
        truth = bad_file(tmp_path, content, "truth.csv")
    else:
        truth = tmp_path / "truth.csv"
        truth.write_text(content)
    argv = search_argv(tmp_path, fake_model, "--truth", str(truth))
    assert_usage_error(capsys, search_cli.main, argv, fragment, str(truth))


def test_search_truth_metric_and_space(tmp_path, capsys, fake_model, small_truth):
    argv = search_argv(tmp_path, fake_model, "--truth", str(small_truth), "--truth-metric", "nope")
    assert_usage_error(capsys, search_cli.main, argv, "--truth-metric 'nope'", "cifar10_test_acc")
    argv = search_argv(tmp_path, fake_model, "--truth", str(small_truth), "--space", "zen-macro")
    assert_usage_error(capsys, search_cli.main, argv, "only applies to --space nb201")
    argv = search_argv(tmp_path, fake_model, "--truth", "nb\x00201.csv")
    assert_usage_error(capsys, search_cli.main, argv, "cannot contain NUL bytes")


# -- python -m graphs.search: run directories -----------------------------------------------------


def fake_run_dir(path: Path, config_text: str | bytes) -> Path:
    """A directory that looks like a run (both files present) with the given config.json."""
    path.mkdir()
    (path / CHECKPOINTS).write_bytes(b"")
    data = config_text.encode() if isinstance(config_text, str) else config_text
    (path / CONFIG_FILE).write_bytes(data)
    return path


@pytest.mark.parametrize(("config_text", "fragment"), [
    ("[1, 2]", "expected a JSON object, got list"),
    ("{", "is not a readable run config"),
    ('{"iterations": "many"}', "iterations has the wrong type"),
    ('{"temperatures": [0.5, "hot"]}', "temperatures has the wrong type"),
    ('{"reflection": "no"}', "reflection has the wrong type"),
    ('{"population": 1.5}', "population has the wrong type"),
    ('"just a string"', "expected a JSON object"),
    ('{"iterations": 3}'.encode("utf-16"), "is not a readable run config"),
])
def test_resume_of_a_broken_run_config(tmp_path, capsys, config_text, fragment):
    run = fake_run_dir(tmp_path / "run", config_text)
    line = assert_usage_error(capsys, search_cli.main, ["--resume", str(run), "--quiet"], fragment)
    assert "start a new run" in line


def test_resume_of_something_that_is_not_a_run(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    for target in (a_file, tmp_path / "missing", tmp_path):
        assert_usage_error(capsys, search_cli.main, ["--resume", str(target)],
                           "is not a run directory")


def test_resume_refuses_flags_it_cannot_change(tmp_path, capsys, fake_model):
    config = SearchConfig(designer_model=fake_model, reflector_model=fake_model, proxy="params")
    run = fake_run_dir(tmp_path / "run", json.dumps(config.to_dict()))
    assert_usage_error(capsys, search_cli.main, ["--resume", str(run), "--population", "5"],
                       "cannot change: population", "start a new run")


def test_output_that_is_a_file_or_under_one(tmp_path, capsys, fake_model):
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    for output in (a_file, a_file / "sub"):
        argv = search_argv(tmp_path, fake_model, "--output", str(output))
        assert_usage_error(capsys, search_cli.main, argv, "cannot write the run directory")
    assert a_file.read_text() == "not a directory"


def test_output_that_already_holds_a_run(tmp_path, capsys, fake_model):
    run = fake_run_dir(tmp_path / "run", "{}")
    assert_usage_error(capsys, search_cli.main,
                       search_argv(tmp_path, fake_model, "--output", str(run)),
                       "already holds a run", f"--resume {run}")


# -- python -m graphs.ablate ----------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--methods", "rea", "--seeds", "1000000000"], "more than 10000"),
    (["--methods", "rea", "--budget", "0"], "--budget must be at least 1"),
    (["--methods", "rea", "--population", "1"], "--population must be at least 2"),
    (["--methods", "rea", "--sample-size", "0"], "--sample-size must be between 1 and"),
    (["--methods", "rea", "--sample-size", "50"], "--sample-size must be between 1 and"),
    (["--methods", "rea", "--first-seed", "-1"], "--seed must be between 0 and"),
    (["--methods", "rea", "--eval-timeout", "nan"], "--eval-timeout must be a positive"),
    (["--methods", "rea", "--budget-params", "-5"], "--budget-params must be a positive"),
    (["--methods", "rea", "--budget", "1.5"], "invalid int value"),
    (["--methods", ""], "unknown method '(none)'"),
    (["--methods", "rea", "--proxies", ","], "--proxies needs at least one value"),
    (["--methods", "rz-nas", "--concurrency", "0"], "--concurrency must be at least 1"),
    (["--methods", "rz-nas", "--prompts", "critic@v1"], "'critic@v1' is not a designer@vN"),
    (["--trace", "loud"], "invalid choice: 'loud'"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--colour", "blue"], "unrecognized arguments"),
])
def test_ablate_flags(tmp_path, capsys, argv, fragment):
    assert_usage_error(capsys, ablate.main, [*argv, "--output", str(tmp_path / "out")], fragment)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_ablate_model_script_missing_fails_its_first_cell_in_one_line(tmp_path, capsys):
    argv = ["--methods", "rz-nas", "--designer-models", f"fake:{tmp_path / 'missing.json'}",
            "--proxies", "params", "--seeds", "1", "--output", str(tmp_path / "out")]
    code = exit_code(ablate.main, argv)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "fake script not found" in err, err
    assert not list((tmp_path / "out").rglob("scores.sqlite"))  # nothing was scored


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("grid.json", "utf16", "is not UTF-8 text"),
    ("grid.json", "binary", "is not UTF-8 text"),
    ("grid.json", "directory", "cannot read --config"),
    ("grid.json", "empty", "is not valid json"),
    ("grid.toml", "utf16", "is not UTF-8 text"),
    ("grid.json", "[1, 2]", "must hold a table/object"),
    ("grid.json", "{methods: rea}", "is not valid json"),
    ("grid.json", '{"budget": 1e999}', "budget = inf is not a valid int"),
    ("grid.json", '{"seeds": 2.5}', "seeds = 2.5 is not a valid int"),
    ("grid.json", '{"seeds": "three"}', "seeds = 'three' is not a valid int"),
    ("grid.json", '{"budget": [1, 2]}', "is not a valid int"),
    ("grid.json", '{"methods": "rea", "eval_timeout": "nan"}', "--eval-timeout must be"),
    ("grid.json", '{"methods": "rea", "output": 5}', "output = 5 is not a directory path"),
    ("grid.json", '{"methods": "rea", "output": ""}', "is not a directory path"),
    ("grid.json", '{"methods": "rea", "output": "out\\u0000put"}', "is not a directory path"),
    ("grid.json", '{"methods": "rea", "truth": "nb\\u0000201.csv"}', "cannot contain NUL bytes"),
    ("grid.toml", 'seeds = "x"\n', "seeds = 'x' is not a valid int"),
    ("grid.toml", "budget = 100\nbudget = 200\n", "not valid toml"),
])
def test_ablate_config_files(tmp_path, capsys, name, content, fragment):
    if content in ("utf16", "binary", "directory", "empty"):
        config = bad_file(tmp_path, content, name)
    else:
        config = tmp_path / name
        config.write_text(content)
    argv = ["--config", str(config)]
    if '"output"' not in content:
        argv += ["--output", str(tmp_path / "out")]
    assert_usage_error(capsys, ablate.main, argv, fragment)
    assert not (tmp_path / "out").exists()


def test_ablate_missing_config_file(tmp_path, capsys):
    assert_usage_error(capsys, ablate.main,
                       ["--config", str(tmp_path / "nope.json"), "--output", str(tmp_path / "o")],
                       "cannot read --config", "No such file")


def test_ablate_truth_file_and_metric(tmp_path, capsys, small_truth):
    out = str(tmp_path / "out")
    truth = bad_file(tmp_path, "utf16", "utf16.csv")
    assert_usage_error(capsys, ablate.main, ["--methods", "rea", "--truth", str(truth),
                                             "--output", out], "not UTF-8")
    assert_usage_error(capsys, ablate.main,
                       ["--methods", "rea", "--truth", str(small_truth), "--truth-metric", "x",
                        "--output", out], "--truth-metric 'x' is not in")


# -- python -m graphs.baselines -------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "fragment"), [
    ([], "the following arguments are required: --output"),
    (["--budget", "0"], "--budget must be at least 1"),
    (["--population", "1000000"], "--population must be at most"),
    (["--eval-timeout", "nan"], "--eval-timeout must be a positive"),
    (["--seed", "-3"], "--seed must be between 0 and"),
    (["--proxy", ","], "--proxy names at least one proxy"),
    (["--method", "bayes"], "invalid choice: 'bayes'"),
])
def test_baselines_flags(tmp_path, capsys, argv, fragment):
    output = [] if not argv else ["--output", str(tmp_path / "run")]
    assert_usage_error(capsys, baselines.main, [*argv, *output], fragment)
    assert not (tmp_path / "run").exists()


# -- python -m tools.evaluate ---------------------------------------------------------------------


def evaluate_argv(*extra: str) -> list[str]:
    return ["--space", "nb201", "--proxy", "params", "--arch", ARCH, "--device", "cpu", *extra]


@pytest.mark.parametrize(("argv", "fragment"), [
    ([], "the following arguments are required"),
    (["--space", "nb201"], "the following arguments are required: --proxy"),
    (evaluate_argv("--bogus"), "unrecognized arguments: --bogus"),
    (evaluate_argv("--seed", "x"), "invalid int value: 'x'"),
    (evaluate_argv("--device", "tpu"), "invalid choice: 'tpu'"),
    (evaluate_argv("--executor", "spark"), "invalid choice: 'spark'"),
    (evaluate_argv("--arch-file", "x.py"), "not allowed with argument --arch"),
    (evaluate_argv("--timeout", "nan"), "--timeout must be a positive number"),
    (evaluate_argv("--timeout", "inf"), "--timeout must be a positive number"),
    (evaluate_argv("--timeout", "0"), "--timeout must be a positive number"),
    (evaluate_argv("--memory-mb", "0"), "--memory-mb must be at least 1"),
    (evaluate_argv("--resolution", "-3"), "--resolution must be >= 1"),
    (evaluate_argv("--seed", "-1"), "--seed must be between 0 and"),
    (evaluate_argv("--seed", str(2**64)), "--seed must be between 0 and"),
    (evaluate_argv("--max-params", "nan"), "--max-params must be a positive number"),
    (evaluate_argv("--max-flops", "-1"), "--max-flops must be a positive number"),
    (evaluate_argv("--workers", "0"), "--workers must be at least 1"),
    (evaluate_argv("--batch-size", "0"), "--batch-size must be at least 1"),
    (evaluate_argv("--proxy", ","), "name at least one proxy"),
    (evaluate_argv("--dataset", "mnist"), "unknown dataset"),
])
def test_evaluate_flags(capsys, argv, fragment):
    assert_usage_error(capsys, evaluate_cli.main, argv, fragment)


@pytest.mark.parametrize(("kind", "fragment"), [
    ("directory", "cannot read --arch-file"),
    ("utf16", "is not UTF-8 text"),
    ("binary", "is not UTF-8 text"),
])
def test_evaluate_unreadable_arch_file(tmp_path, capsys, kind, fragment):
    path = bad_file(tmp_path, kind, "net.py")
    argv = ["--space", "torch-code", "--proxy", "params", "--arch-file", str(path)]
    assert_usage_error(capsys, evaluate_cli.main, argv, fragment, str(path))


def test_evaluate_cache_that_is_a_directory(tmp_path, capsys):
    assert_usage_error(capsys, evaluate_cli.main, evaluate_argv("--cache", str(tmp_path)),
                       "is a directory")


NB201_BAD_ARCHS = {
    "empty": "",
    "whitespace": " \t\n ",
    "one megabyte": "|" * MEGABYTE,
    "cyrillic look-alike": ARCH.replace("nor_conv_3x3", "nor_conv_3\u04453", 1),
    "fullwidth pipes": ARCH.replace("|", "\uff5c"),
    "NUL inside": ARCH.replace("~0|", "\x00~0|", 1),
    "NUL after": ARCH + "\x00",
    "shell injection": "'; rm -rf / #$(whoami)`id`",
    "format injection": "{arch} {0} %s $HOME ${PATH}",
    "newlines and quotes": '|nor_conv_3x3~0|"\n+\n|none~0|\'none~1|+',
    "python injection": "__import__('os').system('echo hacked')",
}


@pytest.mark.parametrize("arch", list(NB201_BAD_ARCHS.values()), ids=list(NB201_BAD_ARCHS))
def test_evaluate_bad_nb201_strings_fail_softly(capsys, arch):
    """A bad candidate is exit 1 with a typed, bounded failure: not a crash, not a usage error."""
    assert evaluate_cli.main(["--space", "nb201", "--proxy", "params", "--arch", arch,
                              "--device", "cpu", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    out = json.loads(captured.out)
    assert out["ok"] is False and out["error"]["kind"] == "invalid_architecture", out["error"]
    assert 0 < len(out["error"]["message"]) < MAX_FAILURE_MESSAGE


TORCH_CODE_BAD = {
    "empty": ("", "invalid_architecture"),
    "one megabyte": ("#" * MEGABYTE, "invalid_architecture"),
    "NUL byte": ("class Net(nn.Module):\x00\n    pass\n", "invalid_architecture"),
    "shell escape": ("import os\nos.system('echo $HOME; rm -rf /')\n", "forbidden"),
    "dunder escape": ("x = ().__class__.__bases__[0].__subclasses__()\n", "forbidden"),
    "unicode identifiers": ("class Nеt(nn.Module):\n    pass\n", "invalid_architecture"),
}


@pytest.mark.parametrize(("source", "kind"), list(TORCH_CODE_BAD.values()),
                         ids=list(TORCH_CODE_BAD))
def test_evaluate_bad_torch_code_fails_softly_without_running(capsys, source, kind):
    assert evaluate_cli.main(["--space", "torch-code", "--proxy", "params", "--arch", source,
                              "--device", "cpu", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["error"]["kind"] == kind, out["error"]
    assert len(out["error"]["message"]) < MAX_FAILURE_MESSAGE


@pytest.mark.parametrize("arch", ["", "\x00", "B" * MEGABYTE, "SuperConvK3BNRELU(3,8,2,1)$x{y}"])
def test_evaluate_bad_zen_strings_fail_softly(capsys, arch):
    assert evaluate_cli.main(["--space", "zen-macro", "--proxy", "params", "--arch", arch,
                              "--device", "cpu", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["error"]["kind"] == "invalid_architecture", out["error"]
    assert len(out["error"]["message"]) < MAX_FAILURE_MESSAGE


# -- benchmarks/*.py: argument parsing only -------------------------------------------------------


@pytest.fixture
def benchmark(monkeypatch) -> Callable[[str], ModuleType]:
    """Import ``benchmarks/<name>.py`` without running it (its sibling imports need the folder)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return _import_benchmark


def _import_benchmark(name: str) -> ModuleType:
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Each benchmark with the flags it requires, so the unknown flag is the only mistake.
BENCHMARKS = {"designer_quality": [], "eval_throughput": [], "loop_throughput": [],
              "nb201_canonical": ["--truth", "t.csv"], "proxy_reference": ["--reference", "r.json"],
              "proxy_speed": [], "search_quality": []}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_unknown_flag_is_one_line(capsys, benchmark, name):
    argv = [*BENCHMARKS[name], "--no-such-flag"]
    assert_usage_error(capsys, benchmark(name).main, argv, "unrecognized arguments: --no-such-flag")


@pytest.mark.parametrize(("name", "argv", "fragment"), [
    ("designer_quality", ["--calls", "0"], "--calls must be >= 1"),
    ("designer_quality", ["--retries", "x"], "invalid int value"),
    ("eval_throughput", ["--n", "0"], "--n must be at least 1"),
    ("eval_throughput", ["--batch-size", "1"], "--batch-size at least 2"),
    ("loop_throughput", ["--latency", "nan"], "--latency must be 0 or more"),
    ("loop_throughput", ["--latency", "-1"], "--latency must be 0 or more"),
    ("loop_throughput", ["--concurrency", "0,x"], "--concurrency"),
    ("nb201_canonical", [], "the following arguments are required: --truth"),
    ("proxy_reference", [], "the following arguments are required: --reference"),
    ("proxy_reference", ["--reference", "r.json", "--limit", "-1"], "--limit must be 0"),
    ("proxy_speed", ["--n", "0"], "--n must be >= 1"),
    ("proxy_speed", ["--n", "many"], "invalid int value: 'many'"),
    ("search_quality", [], "--truth PATH is required"),
    ("search_quality", ["--seeds", "x"], "invalid int value: 'x'"),
])
def test_benchmark_bad_values_are_one_line(capsys, benchmark, name, argv, fragment):
    assert_usage_error(capsys, benchmark(name).main, argv, fragment)


@pytest.mark.parametrize("name", ["nb201_canonical", "search_quality"])
def test_benchmark_bad_truth_file_is_one_line(tmp_path, capsys, benchmark, name):
    truth = bad_file(tmp_path, "utf16", "truth.csv")
    assert_usage_error(capsys, benchmark(name).main, ["--truth", str(truth)], "not UTF-8")


# -- real processes: no traceback reaches the terminal --------------------------------------------


@pytest.mark.slow
def test_entry_points_print_no_traceback_as_processes(tmp_path):
    # Two processes (each start costs seconds here); the in-process cases cover the rest.
    utf16 = bad_file(tmp_path, "utf16", "grid.json")
    commands = [
        [sys.executable, "-m", "graphs.ablate", "--config", str(utf16), "--output", str(tmp_path)],
        [sys.executable, "-m", "tools.evaluate", "--space", "nb201", "--proxy", "params",
         "--arch-file", str(utf16)],
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RZNAS_")}
    for command in commands:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (command, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (command, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.slow
def test_a_budget_no_network_meets_is_one_line_not_a_traceback(tmp_path, capsys, fake_model):
    """Settings that reject every initial candidate end the run with a usage error and a hint."""
    argv = search_argv(tmp_path, fake_model, "--budget-params", "1", "--eval-timeout", "60")
    assert_usage_error(capsys, search_cli.main, argv,
                       "no candidate of the initial population", "--budget-params")
