"""Hostile candidates: routes out of the sandbox that tests/test_sandbox_security.py does not try.

Every route is checked by its effect, not by its error message alone: a marker file that must not
appear, a loopback listener owned by the test that must receive nothing, a planted secret that must
not come back, a worker that must be replaced and a parent that must go on. Three groups:

- the static check of ``torch-code`` (runs in this process: had it let a payload through,
  ``build_source`` would have executed the payload here and created the marker);
- the worker's run-time layers, with the static check switched off (the internal ``unchecked``
  task flag), for routes through torch internals, ``__globals__``, ``posix`` and C++ file APIs;
- resource bombs that pass the static check (recursion, memory, huge prints, messages, outputs)
  and architecture strings for ``nb201`` and ``zen-macro`` shaped like injections.

Run: .venv/bin/python -m pytest -q tests/test_hostile_candidates.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from torch import nn

from tools.evaluate import EvalSettings, Evaluator
from tools.evaluate_cli import main as cli_main
from tests.sandbox_helpers import assert_no_connection, one_worker_pool, run_task
from tools.executors import LocalExecutor
from tools.spaces import ArchitectureError
from tools.spaces.torch_code import ForbiddenCode, build_source, render_template

SECRET = "sk-hostile-secret-7d2e51b9"
#: Longest error message a worker reply may carry (``describe`` cuts at 600 characters).
MAX_MESSAGE = 1000


def net_source(forward: str = "", init: str = "") -> str:
    """Return the plain template with ``init``/``forward`` lines at the start of Net's methods."""
    src = render_template("plain", widths=(8, 8, 8))
    if init:
        lines = "".join(f"        {line}\n" for line in init.splitlines())
        src = src.replace(
            "        super().__init__()\n        self.stem",
            "        super().__init__()\n" + lines + "        self.stem",
        )
    if forward:
        lines = "".join(f"        {line}\n" for line in forward.splitlines())
        src = src.replace(
            "    def forward(self, x):\n        x = F",
            "    def forward(self, x):\n" + lines + "        x = F",
        )
    return src


@pytest.fixture(scope="module")
def planted_secret(tmp_path_factory):
    """Secrets in the parent's environment and in a file, planted before any worker starts."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", SECRET)
    mp.setenv("RZNAS_HOSTILE_TOKEN", SECRET)
    secret_file = tmp_path_factory.mktemp("secrets") / "credentials"
    secret_file.write_text(SECRET * 4)
    yield secret_file
    mp.undo()


@pytest.fixture(scope="module")
def pool(planted_secret):
    """A one-worker pool (1 GB, 20 s) that runs tasks with or without the static check."""
    ex = one_worker_pool()
    yield ex
    ex.close()


def run(pool: LocalExecutor, source: str, *, unchecked: bool) -> dict:
    return run_task(pool, source, unchecked=unchecked)


def assert_pool_still_works(pool: LocalExecutor) -> None:
    """The pool (and so this, the parent process) must go on after any hostile candidate."""
    reply = run(pool, net_source(), unchecked=False)
    assert reply["error"] is None and reply["scores"]["params"] > 0, reply


# --- 1. the static check ------------------------------------------------------------------------
# Payloads in Net.__init__, so that build_source would run them in this process if the check let
# them through. {m} is the marker path. None of these is in test_torch_code.py's ESCAPES.
STATIC_ROUTES = {
    # attribute chains that leave torch through a class, a function or a method
    "method_globals": (
        "nn.Module.forward.__globals__['torch'].serialization.zipfile.ZipFile({m!r}, 'w').close()"
    ),
    "method_self": "torch.Tensor.add.__self__",
    "class_func_globals": (
        "nn.Linear.forward.__globals__['F'].torch.serialization.zipfile.ZipFile({m!r}, 'w')"
    ),
    "builtin_self": "print.__self__.open({m!r}, 'w')",
    "super_globals": "super().__init__.__globals__",
    "imported_class_chain": (
        "Linear.forward.__globals__['torch'].serialization.zipfile.ZipFile({m!r}, 'w')"
    ),
    # file readers and writers reached through torch
    "storage_from_file": "torch.UntypedStorage.from_file({m!r}, True, 16)",
    "typed_storage_from_file": "torch.ByteStorage.from_file({m!r}, True, 16)",
    "tensor_numpy": "self.fc_probe = torch.zeros(2).detach().numpy()",
    "serialization": "torch.serialization.save(torch.zeros(1), {m!r})",
    "jit_script_save": "torch.jit.script(nn.Linear(2, 2)).save({m!r})",
    "ops_load_library": "torch.ops.load_library({m!r})",
    "classes_load": "torch.classes.load_library({m!r})",
    "file_writer": "torch._C.PyTorchFileWriter({m!r})",
    "reduce": "self.__reduce__()",
    "reduce_ex": "torch.zeros(1).__reduce_ex__(2)",
    "module_reduce": "nn.Module.__reduce__",
    "hub_download": "torch.hub.download_url_to_file('http://127.0.0.1:9/x', {m!r})",
    "package": "torch.package.PackageExporter({m!r})",
    "onnx": "torch.onnx.export(nn.Linear(2, 2), torch.zeros(1, 2), {m!r})",
    "profiler": "torch.profiler.profile().export_chrome_trace({m!r})",
    # import tricks
    "inspect_modules": "nn.Module.register_buffer.__globals__['inspect'].modulesbyfile",
    "torch_importlib": "torch.importlib",
    "math_loader": "math.__loader__.load_module('posix')",
    "math_spec": "math.__spec__",
    "func_builtins": "F.relu.__builtins__",
    "str_subclasses": "str.__base__",
    "library_module": "torch.library.Library('aten', 'IMPL')",
    "utils_collect_env": "torch.utils.collect_env.run('touch {m}')",
    "overrides": "torch.overrides.get_ignored_functions()",
    "exception_frame": "RuntimeError().with_traceback(None).tb_frame",
    # environment and secrets
    "version_env": "torch.version.os.environ",
    "functional_os": "F.torch.os.getenv('OPENAI_API_KEY')",
    "backends_os": "torch.backends.os.environ",
    "math_pi_class": "math.pi.__class__",
    # rebinding library objects through a first parameter that is not a method's self
    "patch_through_param": "def patch(cls):\n    cls.rznas_patched = True\npatch(nn.ReLU)",
    "private_through_param": "def peek(obj):\n    return obj._C\npeek(torch.Tensor)",
    "method_through_class": "Block.forward(nn.ReLU, torch.zeros(1))",
    "staticmethod_param": "Patcher.patch(nn.ReLU)",
}

#: A class whose static method would receive a library class as its first parameter.
PATCHER = """

class Patcher(nn.Module):
    @staticmethod
    def patch(cls):
        cls.rznas_patched = True
"""


def test_a_static_method_cannot_assign_to_its_first_parameter() -> None:
    """`self.x = ...` is allowed in methods only: a static method's argument may be any class."""
    build_source(net_source() + PATCHER.replace("cls.rznas_patched = True", "pass"), 10)
    with pytest.raises(ForbiddenCode, match="assigning to `.rznas_patched`"):
        build_source(net_source() + PATCHER, 10)


@pytest.mark.parametrize("name", sorted(STATIC_ROUTES))
def test_static_check_refuses_hostile_routes_before_anything_runs(name: str, marker: Path) -> None:
    body = STATIC_ROUTES[name].format(m=str(marker))
    prefix = "from torch.nn import Linear\n" if name == "imported_class_chain" else ""
    suffix = PATCHER.replace("cls.rznas_patched = True", "pass")
    source = prefix + net_source(init=body) + (suffix if name == "staticmethod_param" else "")
    first = source.splitlines().index("        " + body.splitlines()[0]) + 1
    with pytest.raises(ForbiddenCode) as info:
        build_source(source, 10)
    lines = range(first, first + body.count("\n") + 1)
    assert info.value.lineno in lines, (str(info.value), list(lines))
    assert not marker.exists(), f"{name} ran before the check refused it"
    assert not hasattr(nn.ReLU, "rznas_patched"), "a library class was modified"


def test_deeply_nested_source_is_an_architecture_error_not_a_crash() -> None:
    """Nesting that overflows the parser or the checker's recursion is one clear error."""
    for expression in ("1 + " * 400 + "1", "not " * 900 + "x", "-" * 5000 + "1"):
        source = net_source(forward=f"y = {expression}")
        with pytest.raises(ArchitectureError, match="nests too deeply|cannot be parsed") as info:
            build_source(source, 10)  # a bare RecursionError would escape pytest.raises
        assert len(str(info.value)) < MAX_MESSAGE


# --- 2. run-time layers (static check switched off) --------------------------------------------
#: Routes through Python: the audit hook and the replaced functions must stop them everywhere.
PYTHON_WRITERS = {
    "globals_builtins_open": (
        "nn.Module.forward.__globals__['__builtins__']['open']({m!r}, 'w').write('x')"
    ),
    "subclasses_importer": (
        "imp = [c for c in object.__subclasses__() if c.__name__ == 'BuiltinImporter'][0]\n"
        "imp.load_module('posix').system('touch {m}')"
    ),
    "posix_system": "import posix\nposix.system('touch {m}')",
    "posix_fork": "import posix\nif posix.fork() == 0:\n    open({m!r}, 'w')",
    "sys_modules_posix": (
        "import sys\nsys.modules['posix'].posix_spawn('/bin/touch', ['t', {m!r}], {{}})"
    ),
    "collect_env_run": "import torch.utils.collect_env as ce\nce.run('touch {m}')",
    "numpy_tofile": "x.detach().numpy().tofile({m!r})",
    "serialization_save": "torch.serialization.save(x, {m!r})",
    "legacy_storage_from_file": "torch.ByteStorage.from_file({m!r}, True, 16)",
}
#: Routes through torch's C++ code, which no audit event sees: only a kernel layer stops them
#: (Landlock, or the read-only mounts a root worker gets).
NATIVE_WRITERS = {
    "file_writer": "torch._C.PyTorchFileWriter({m!r}).write_end_of_file()",
    "zipfile_writer": "torch.serialization._open_zipfile_writer({m!r})",
    "jit_script_save": "torch.jit.script(nn.Linear(2, 2)).save({m!r})",
    "vf_from_file": "torch._C._VariableFunctions.from_file({m!r}, shared=True, size=16)",
    "storage_base_from_file": "torch._C.StorageBase.from_file({m!r}, True, 16)",
    "profiler_trace": (
        "with torch.profiler.profile() as p:\n    x + 1\np.export_chrome_trace({m!r})"
    ),
}


def kernel_layers(pool: LocalExecutor) -> dict[str, bool]:
    """Return the OS-level layers the pool's worker got (after one harmless task)."""
    assert_pool_still_works(pool)
    layers = pool.isolation()
    assert layers, "no ready worker"
    return layers[0]


def landlock_abi() -> int:
    """Return the kernel's Landlock ABI version, or 0 where Landlock is missing or disabled."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(0, libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


def test_cpu_workers_get_landlock_where_the_kernel_has_it(pool) -> None:
    assert kernel_layers(pool)["landlock"] == (landlock_abi() > 0)


@pytest.mark.parametrize(
    "name", sorted(PYTHON_WRITERS) + [f"native:{n}" for n in sorted(NATIVE_WRITERS)]
)
def test_runtime_layers_stop_writes_through_torch_and_interpreter_internals(
    pool, marker: Path, name: str
) -> None:
    if name.startswith("native:"):
        layers = kernel_layers(pool)
        if not (layers.get("landlock") or layers.get("readonly_fs")):
            pytest.skip("C++ file writers need Landlock (Linux 5.13+) or a root worker")
        body = NATIVE_WRITERS[name.split(":", 1)[1]]
    else:
        body = PYTHON_WRITERS[name]
    reply = run(pool, net_source(body.format(m=str(marker))), unchecked=True)
    assert not marker.exists(), f"{name} created the marker file: {reply}"
    assert len(json.dumps(reply)) < 2 * MAX_MESSAGE


def test_runtime_layers_stop_downloads_through_torch_hub(pool, marker: Path, listener) -> None:
    port = listener.getsockname()[1]
    body = f"torch.hub.download_url_to_file('http://127.0.0.1:{port}/w.pt', {str(marker)!r})"
    reply = run(pool, net_source(body), unchecked=True)
    assert reply["error"] is not None, reply
    assert_no_connection(listener)
    assert not marker.exists()




def test_runtime_layers_refuse_loading_native_code(pool) -> None:
    """`torch.ops`/`torch.classes` load libraries through ctypes, which the audit hook refuses."""
    candidates = [f"/usr/lib/{arch}-linux-gnu/libutil.so.1" for arch in ("x86_64", "aarch64")]
    lib = next((p for p in candidates + ["/lib64/libutil.so.1"] if os.path.exists(p)), None)
    if lib is None:
        pytest.skip("no libutil.so.1 on this machine to try loading")
    for loader in ("torch.ops.load_library", "torch.classes.load_library"):
        body = (
            f"try:\n    {loader}({lib!r})\nexcept OSError:\n    pass\n"
            "raise ValueError('loaded: ' + str(sorted(torch.ops.loaded_libraries)))"
        )
        reply = run(pool, net_source(body), unchecked=True)
        assert "loaded: " in reply["error"]["message"], reply
        assert lib not in reply["error"]["message"], f"{loader} loaded {lib}"


def test_secrets_stay_out_of_reach_of_torch_internals(pool, planted_secret: Path) -> None:
    probes = [
        "raise ValueError(str(dict(torch.os.environ)))",
        "raise ValueError(F.torch.os.getenv('OPENAI_API_KEY'))",
        "raise ValueError(open('/proc/self/environ').read())",
        "raise ValueError(open('/proc/thread-self/environ').read())",
        "import os\nraise ValueError(open(f'/proc/{os.getppid()}/environ').read())",
        f"raise ValueError(str(torch.load({str(planted_secret)!r}, weights_only=False)))",
        f"import numpy\nraise ValueError(numpy.memmap({str(planted_secret)!r}).tobytes())",
    ]
    for body in probes:
        reply = run(pool, net_source(body), unchecked=True)
        assert reply["error"] is not None, (body, reply)
        assert SECRET not in json.dumps(reply), body


def test_native_readers_cannot_map_a_secret_file(pool, planted_secret: Path) -> None:
    """torch's C++ readers bypass the audit hook; Landlock confines them to the read roots."""
    if not kernel_layers(pool).get("landlock"):
        pytest.skip("confining C++ file reads needs Landlock (Linux 5.13+, enabled)")
    size = planted_secret.stat().st_size
    for reader in ("torch._C._VariableFunctions.from_file", "torch.ops.aten.from_file"):
        body = (
            f"t = {reader}({str(planted_secret)!r}, size={size}, dtype=torch.uint8)\n"
            "raise ValueError(bytes(t.tolist()).decode())"
        )
        reply = run(pool, net_source(body), unchecked=True)
        assert reply["error"] is not None, (body, reply)
        assert SECRET not in json.dumps(reply), body


# --- 3. resource bombs that pass the static check -----------------------------------------------
BOMBS = {
    "deep_sequential": (
        "",
        "deep = nn.Identity()\nfor _ in range(20000):\n    deep = nn.Sequential(deep)\n"
        "self.deep = deep",
    ),
    "recursive_forward": ("return self.forward(x)", ""),
    "nested_list_tensor": (
        "nested = 0.0\nfor _ in range(200000):\n    nested = [nested]\ny = torch.tensor(nested)",
        "",
    ),
    "nested_repr": (
        "nested = []\nfor _ in range(200000):\n    nested = [nested]\ny = repr(nested)",
        "",
    ),
    "huge_parameter": ("", "self.huge = nn.Linear(100000, 100000)"),
    "growing_memory": ("keep = []\nwhile True:\n    keep.append(torch.ones(1 << 22))", ""),
    "gigabyte_message": ("raise ValueError('x' * (1 << 30))", ""),
    "large_message": ("raise ValueError('x' * (1 << 26))", ""),
    "enormous_output": ("return torch.zeros(1, 1).expand(1 << 30, 1 << 30)", ""),
    "non_tensor_output": ("return [0] * 1000000", ""),
}

SLOW_BOMBS = {"deep_sequential"}  # about 6 s on two busy cores: 20,000 modules, built and walked


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BOMBS else n
        for n in sorted(BOMBS)
    ],
)
def test_resource_bombs_fail_softly_with_short_messages(pool, name: str) -> None:
    forward, init = BOMBS[name]
    reply = run(pool, net_source(forward, init), unchecked=False)
    assert reply["error"] is not None, reply
    assert reply["error"]["kind"] in ("crashed", "build_error", "memory", "timeout"), reply
    assert len(reply["error"]["message"]) < MAX_MESSAGE
    assert_pool_still_works(pool)


def test_forward_that_prints_megabytes_cannot_reach_the_reply_channel(pool) -> None:
    body = (
        "for _ in range(16):\n"
        "    forged = '{\"id\": 0, \"scores\": {\"params\": 1e30}, \"error\": null}'\n"
        "    print(forged)\n"
        "    print('x' * (1 << 20))"
    )
    reply = run(pool, net_source(body), unchecked=False)
    clean = run(pool, net_source(), unchecked=False)
    assert reply["error"] is None and reply["scores"] == clean["scores"], reply
    assert len(json.dumps(reply)) < 2000


# --- 4. architecture strings of the other spaces ------------------------------------------------
def _injections(marker: Path) -> list[str]:
    touch = f"__import__('os').system('touch {marker}')"
    valid = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    )
    return [
        touch,
        f"|{touch}~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|{0.__class__.__mro__}~2|",
        "|%s%s%s%n~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|nor_conv_3x3~0|'\"\n+|none~0|none~1|\n+|none~0|none~1|none~2|\x00",
        valid.replace("nor_conv_3x3", "n\u043er_conv_3x3"),  # Cyrillic o
        valid.replace("~0", "~\uff10", 1),  # full-width zero
        valid.replace("skip_connect", "skip\u200bconnect"),  # zero-width space
        valid + "\n" + touch,
        valid * 20000,  # about 2 MB
        "SuperConvK3BNRELU(3,32,1,1)" + touch,
        "SuperConvK3BNRELU(3,{0.__globals__},1,1)",
        "SuperConvK3BNRELU(3,3\u0662,1,1)",  # Arabic-Indic digit two
        "SuperC\u043envK3BNRELU(3,32,1,1)",
        "SuperConvK3BNRELU(3,32,1,1)" * 40000,  # about 1 MB
        "SuperConvK3BNRELU(3,32,1,1" + "(" * 4000,
    ]


@pytest.mark.parametrize("space", ["nb201", "zen-macro"])
def test_injection_shaped_strings_are_rejected_in_the_parent(space: str, marker: Path) -> None:
    settings = EvalSettings(space=space, proxies=("params",), device="cpu")
    strings = _injections(marker)
    with Evaluator(settings) as ev:
        results = ev.evaluate(strings)
        assert ev.worker_pids() == [], "an injection-shaped string reached a worker"
    for arch, result in zip(strings, results, strict=True):
        assert result.error is not None and result.error.kind == "invalid_architecture", (
            arch[:80],
            result.error,
        )
        message = result.error.message
        assert len(message) < MAX_MESSAGE, (arch[:80], len(message))
        assert "<class" not in message and "<function" not in message  # no format evaluation
    assert not marker.exists()


def test_cli_reports_a_one_megabyte_arch_file_in_one_short_line(tmp_path: Path, capsys) -> None:
    arch_file = tmp_path / "arch.txt"
    arch_file.write_text("SuperConvK3BNRELU(3,32,1,1)" * 40000)
    code = cli_main(["--space", "zen-macro", "--proxy", "params", "--arch-file", str(arch_file)])
    out = capsys.readouterr()
    assert code == 1
    assert out.out.count("\n") == 1 and len(out.out) < MAX_MESSAGE and out.err == ""
