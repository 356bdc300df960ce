"""Sandbox containment: hostile torch-code must not reach files, network, processes or secrets.

Two layers are tested separately. The static check must refuse each route through the evaluator;
and, because a static check can in principle be bypassed, the same payloads run with the check
switched off (an internal task flag only these tests use) to prove the worker's run-time layers
(audit hook, network namespace, scrubbed environment) stop them. Every test checks the effect
(no marker file, no connection, no secret), not just the error message.

Run: .venv/bin/python -m pytest tests/test_sandbox_security.py
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tools.evaluate import EvalSettings, Evaluator
from tests.sandbox_helpers import assert_no_connection, one_worker_pool, run_task
from tools.executors import LocalExecutor
from tools.sandbox import scrubbed_env
from tools.spaces.torch_code import render_template

SECRET = "sk-test-secret-4f1c9a"


def code(body: str) -> str:
    """Return a valid template whose forward() starts with ``body`` (indented 8 spaces)."""
    lines = "".join(f"        {line}\n" for line in body.splitlines())
    return render_template("plain", widths=(8, 8, 8)).replace(
        "    def forward(self, x):\n", "    def forward(self, x):\n" + lines
    )


@pytest.fixture(scope="module")
def planted_secret():
    """Put secrets in the parent's environment before any worker starts."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", SECRET)
    mp.setenv("RZNAS_DB_PASSWORD", SECRET)
    yield SECRET
    mp.undo()


@pytest.fixture(scope="module")
def pool(planted_secret):
    """Start a one-worker pool that runs tasks with or without the static check."""
    ex = one_worker_pool()
    yield ex
    ex.close()


def run(pool: LocalExecutor, source: str, *, unchecked: bool = True) -> dict:
    return run_task(pool, source, unchecked=unchecked)


def test_scrubbed_env_keeps_runtime_vars_and_drops_secrets() -> None:
    env = scrubbed_env(
        {
            "PATH": "/bin",
            "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "0",
            "OPENAI_API_KEY": "x",
            "AWS_REGION": "x",
            "HF_TOKEN": "x",
            "GITHUB_TOKEN": "x",
            "MY_SECRET": "x",
            "DB_PASSWORD": "x",
            "HOME": "/root",
            "ANTHROPIC_BASE_URL": "x",
            "TORCH_AUTH_TOKEN": "x",
            "RANDOM_THING": "x",
        }
    )
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0"}


def test_control_candidate_runs(pool) -> None:
    """The hostile tests below mean something only if a harmless candidate passes."""
    reply = run(pool, code("open('scratch.txt', 'w').write('fine')\nprint('{\"id\": 0}')"))
    assert reply["error"] is None and reply["scores"]["params"] > 0


WRITERS = {
    "open": "open({m!r}, 'w').write('x')",
    "os_open": "import os\nos.close(os.open({m!r}, os.O_CREAT | os.O_WRONLY))",
    "torch_save": "torch.save(x, {m!r})",
    "pathlib": "import pathlib\npathlib.Path({m!r}).touch()",
    "subprocess": "import subprocess\nsubprocess.run(['touch', {m!r}])",
    "os_system": "import os\nos.system('touch {m}')",
    "posix_spawn": "import os\nos.posix_spawn('/usr/bin/touch', ['touch', {m!r}], {{}})",
    "fork": "import os\nif os.fork() == 0:\n    open({m!r}, 'w')",
    "ctypes": "import ctypes\nctypes.CDLL(None).system(b'touch {m}')",
    "subclasses": (
        "w = [c for c in ().__class__.__base__.__subclasses__() "
        "if c.__name__ == '_wrap_close'][0]\n"
        "w.__init__.__globals__['system']('touch {m}')"
    ),
    "multiprocessing": "import multiprocessing\nmultiprocessing.Process(target=print).start()",
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_runtime_layers_stop_writes_and_processes(pool, marker: Path, name: str) -> None:
    reply = run(pool, code(WRITERS[name].format(m=str(marker))))
    assert not marker.exists(), f"{name} created the marker file"
    assert reply["error"]["kind"] in ("forbidden", "crashed"), reply
    assert "sandbox" in reply["error"]["message"] or "PermissionError" in reply["error"]["message"]


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_static_check_refuses_the_same_payloads(pool, marker: Path, name: str) -> None:
    reply = run(pool, code(WRITERS[name].format(m=str(marker))), unchecked=False)
    assert reply["error"]["kind"] == "forbidden" and not marker.exists()


def test_network_is_unreachable(pool, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    for body in (
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))",
    ):
        reply = run(pool, code(body))
        assert reply["error"]["kind"] == "forbidden", reply
    assert_no_connection(listener)


def test_secrets_do_not_reach_the_worker(pool, planted_secret: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "credentials"
    secret_file.write_text(planted_secret)
    probes = [
        "import os\nraise ValueError(str(dict(os.environ)))",
        f"raise ValueError(open('/proc/{os.getpid()}/environ').read())",
        f"raise ValueError(open('/proc/{os.getppid()}/environ').read())",
        f"raise ValueError(open({str(secret_file)!r}).read())",
        "import os\nraise ValueError(os.listdir('/root'))",
    ]
    for body in probes:
        reply = run(pool, code(body))
        assert planted_secret not in str(reply), body
        assert reply["error"] is not None


def test_introspection_escapes_are_contained(pool, marker: Path) -> None:
    for body in (
        "import gc\ngc.get_objects()",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
        "import os\nos.kill(1, 0)",
        "import sys\nsys.settrace(None)",
    ):
        reply = run(pool, code(body))
        assert reply["error"]["kind"] == "forbidden", (body, reply)


def test_segfault_kills_only_the_worker(pool) -> None:
    reply = run(pool, code("import faulthandler\nfaulthandler._sigsegv()"))
    assert reply["error"]["kind"] == "crashed" and "SIGSEGV" in reply["error"]["message"]
    assert run(pool, code("pass"))["error"] is None


def test_evaluator_refuses_hostile_code_before_any_worker(planted_secret: str) -> None:
    routes = [
        "open('/tmp/x', 'w')",
        "torch.load('/tmp/x')",
        "torch.hub.list('a/b')",
        "torch.os.system('id')",
        "nn.modules.module.os.getcwd()",
        "torch._C._get_tracing_state()",
        "().__class__.__base__.__subclasses__()",
        "type(x).__mro__",
        "'{0.__globals__}'.format(self.forward)",
        "torch.utils.cpp_extension.load_inline('m', '')",
        "torch.ops.aten.add(x, x)",
        "getattr(torch, 'load')",
    ]
    settings = EvalSettings(space="torch-code", proxies=("params",), device="cpu")
    with Evaluator(settings) as ev:
        results = ev.evaluate([code(r) for r in routes])
        assert [r.error.kind for r in results] == ["forbidden"] * len(routes)
        assert all("line " in r.error.message for r in results)
        assert ev.worker_pids() == []


def test_root_workers_get_os_level_isolation(pool) -> None:
    if os.geteuid() != 0:
        pytest.skip("namespaces and read-only mounts need root; the audit hook is the guard here")
    run(pool, code("pass"))
    layers = pool.isolation()
    assert layers and all(
        layer.items() >= {"netns": True, "readonly_fs": True, "proc_masked": True}.items()
        for layer in layers
    ), layers
