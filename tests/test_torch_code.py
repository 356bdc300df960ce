"""The torch-code space: static allow-list, templates, canonical form, mutation.

Run: .venv/bin/python -m pytest tests/test_torch_code.py
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from tools.spaces import ArchitectureError, get_space
from tools.spaces.torch_code import (
    SAFE_BUILTINS,
    TEMPLATES,
    ForbiddenCode,
    build_source,
    check_source,
    render_template,
)

HEADER = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\nimport math\n"
NET = """
class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        {body}
        return self.fc(x.mean((2, 3)))
"""
BODY_LINE = HEADER.count("\n") + NET.split("\n").index("        {body}") + 1


def candidate(body: str = "pass", prefix: str = "") -> str:
    """Return a small valid Net with ``body`` as the first statement of forward()."""
    return prefix + HEADER + NET.format(body=body)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run far faster single-threaded on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space():
    return get_space("torch-code")


# Each route out of the sandbox that the static check must refuse, with a word its message names.
ESCAPES = {
    "open": ("open('/tmp/x', 'w')", "open"),
    "subclasses": ("().__class__.__base__.__subclasses__()", "__"),
    "torch_dict": ("torch.__dict__", "__dict__"),
    "mro": ("type(x).__mro__", "__mro__"),
    "format_attr": ("'{0.__class__}'.format(x)", "looks attributes up by name"),
    "format_plain": ("'{0.weight.grad}'.format(self)", "format"),
    "format_map": ("'{a}'.format_map(dict(a=1))", "format_map"),
    "torch_load": ("torch.load('weights.pt')", "load"),
    "torch_save": ("torch.save(x, 'out.pt')", "save"),
    "torch_hub": ("torch.hub.load('a', 'b')", "hub"),
    "cpp_extension": ("torch.utils.cpp_extension.load_inline('m', '')", "torch.utils"),
    "torch_ops": ("torch.ops.aten.add(x, x)", "torch.ops"),
    "torch_C": ("torch._C._get_tracing_state()", "_C"),
    "torch_os": ("torch.os.system('id')", "os"),
    "torch_sys": ("torch.sys.modules", "sys"),
    "nn_modules_os": ("nn.modules.module.os.getcwd()", "nn.modules"),
    "jit": ("torch.jit.load('m.pt')", "torch.jit"),
    "classes": ("torch.classes.load_library('x.so')", "torch.classes"),
    "from_file": ("torch.from_file('/etc/passwd')", "from_file"),
    "compile": ("torch.compile(self)", "compile"),
    "eval": ("eval('1 + 1')", "eval"),
    "exec": ("exec('x = 1')", "exec"),
    "getattr": ("getattr(torch, 'lo' + 'ad')", "getattr"),
    "dunder_import": ("__import__('os')", "__import__"),
    "globals": ("globals()['__builtins__']", "globals"),
    "vars": ("vars(self)", "vars"),
    "breakpoint": ("breakpoint()", "breakpoint"),
    "input": ("input()", "input"),
    "inner_import": ("import os", "import"),
    "generator_frame": ("(y for y in []).gi_frame.f_globals", "frames"),
    "tofile": ("x.numpy().tofile('/tmp/x')", "numpy"),
    "patch_library": ("F.relu = None", "F.relu"),
    "patch_class": ("nn.ReLU.forward = None", "nn.ReLU.forward"),
    "global_state": ("torch.set_default_dtype(torch.float64)", "set_default_dtype"),
    "module_alias": ("t = torch", "module `torch`"),
    "private_attr": ("x._base", "_base"),
    "dunder_string": ("y = '__class__'", "dunder"),
    "module_init": ("nn.Module.__init__(self)", "__init__"),
    "global_stmt": ("global z", "global"),
    "cuda_module": ("torch.cuda.memory_allocated()", "torch.cuda"),
    "multiprocessing": ("torch.multiprocessing.Process()", "torch.multiprocessing"),
    "math_sys": ("math.sys", "sys"),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_static_check_refuses_escape_routes(name: str) -> None:
    body, word = ESCAPES[name]
    with pytest.raises(ForbiddenCode) as info:
        check_source(candidate(body))
    assert f"line {BODY_LINE}" in str(info.value)
    assert word in str(info.value)
    assert isinstance(info.value, ArchitectureError)


@pytest.mark.parametrize(
    "prefix",
    [
        "import os\n",
        "import subprocess\n",
        "from os import system\n",
        "from torch import load\n",
        "from . import x\n",
        "from torch import *\n",
        "import torch.utils\n",
        "print('hi')\n",
        "X = nn.ReLU\n",
        "import builtins\n",
    ],
)
def test_static_check_refuses_top_level_constructs(prefix: str) -> None:
    with pytest.raises(ForbiddenCode, match="line 1"):
        check_source(candidate(prefix=prefix))


@pytest.mark.parametrize(
    "body",
    [
        "x = F.relu(x)",
        "nn.init.kaiming_normal_(self.fc.weight)",
        "y = [i * math.sqrt(2.0) for i in range(3)]",
        "y = torch.linalg.norm(x)",
        "y = f'{x.shape}'",
        "with torch.no_grad():\n            y = x.sum()",
        "for _ in range(2):\n            x = x + 0",
        "self._cache = None",
        "y = self.fc.weight.data.clone()",
        "y = super().forward if False else None",
    ],
)
def test_static_check_allows_ordinary_pytorch(body: str) -> None:
    check_source(candidate(body))


def test_missing_net_and_syntax_errors_are_invalid_not_forbidden() -> None:
    with pytest.raises(ArchitectureError, match="class Net") as info:
        check_source(HEADER + "WIDTH = 8\n")
    assert not isinstance(info.value, ForbiddenCode)
    with pytest.raises(ArchitectureError, match="line 2: syntax error"):
        check_source("import torch\ndef (:\n")


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_build_and_classify(name: str) -> None:
    net = build_source(render_template(name), 10)
    assert isinstance(net, nn.Module)
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
        assert net.forward_features(torch.randn(1, 3, 16, 16)).shape[:2] == (1, 64)


def test_runtime_builtins_are_restricted() -> None:
    for name in ("open", "eval", "exec", "getattr", "globals", "compile", "input"):
        assert name not in SAFE_BUILTINS
    with pytest.raises(ImportError, match="may only import"):
        SAFE_BUILTINS["__import__"]("os")
    assert SAFE_BUILTINS["__import__"]("math").sqrt(4.0) == 2.0


def test_canonical_ignores_comments_layout_and_fences(space) -> None:
    source = render_template("plain")
    noisy = (
        "```python\n# a comment\n"
        + source.replace("(16, 32, 64)", "(16,32,   64)  # widths")
        + "```"
    )
    assert space.canonical(noisy) == space.canonical(source)
    assert space.validate(noisy).startswith("# a comment")
    assert space.canonical(source.replace("(16, 32, 64)", "(16, 32, 72)")) != space.canonical(
        source
    )


def test_sample_gives_valid_networks_with_widths_of_eight(space) -> None:
    rng = random.Random(0)
    for _ in range(4):
        source = space.sample(rng)
        space.validate(source)
        widths = eval(source.split("WIDTHS = ")[1].split("\n")[0])  # noqa: S307 - our own template
        assert all(w % 8 == 0 for w in widths)
        with torch.no_grad():
            assert build_source(source, 10)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_mutate_changes_one_literal_and_stays_buildable(space) -> None:
    rng = random.Random(1)
    for i in range(12):
        parent = space.sample(rng)
        child = space.mutate(parent, rng)
        changes = space.diff(parent, child)
        assert len(changes) == 1, changes
        if i < 3:  # building is slow-ish; a few prove the children still run
            with torch.no_grad():
                assert build_source(child, 10)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_mutate_swaps_conv_kernel_with_matching_padding(space) -> None:
    source = candidate("x = self.conv(x)").replace(
        "self.fc = nn.Linear(3, num_classes)",
        "self.conv = nn.Conv2d(3, 3, kernel_size=3, padding=1)\n"
        "        self.fc = nn.Linear(3, num_classes)",
    )
    child = space.mutate(source, random.Random(0))
    assert "kernel_size=5, padding=2" in child
    assert build_source(child, 10)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_mutate_without_literals_explains(space) -> None:
    with pytest.raises(ArchitectureError, match="WIDTHS"):
        space.mutate(candidate(), random.Random(0))


def test_descriptions_state_rules_and_a_valid_template(space) -> None:
    text, code = space.describe_text(), space.describe_code()
    assert "Net(num_classes)" in text and "forward_features" in text
    assert "torch.nn.functional" in code and "getattr" in code
    check_source(code.split("A valid example (ResNet-style):\n\n", 1)[1])
    assert space.edit_schema is None
    with pytest.raises(ArchitectureError):
        space.apply_edit(render_template("plain"), None)
