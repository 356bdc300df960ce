"""The ``torch-code`` space: the Designer writes PyTorch source for ``class Net(nn.Module)``.

Candidates are untrusted code. :func:`~tools.spaces.torch_code_check.check_source` is a static
allow-list over the AST (imports, names, attributes, statement kinds) that runs before anything
executes; :func:`build_source` then executes the source with a restricted builtins table. The
evaluator only builds inside its sandboxed worker process (``tools/sandbox.py``), which adds OS
limits, a network namespace and an audit hook, so the static check is the first of several layers.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import random
from typing import Any

from torch import nn

from . import ArchitectureError, SearchSpace, search_space
from .torch_code_check import (  # noqa: F401 - re-exported: the space's public names
    ALLOWED_MODULES,
    DENIED_NAMES,
    SAFE_BUILTINS,
    ForbiddenCode,
    check_source,
    parse_source,
    strip_fence,
)

_HEADER = """import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = {widths}
DEPTHS = {depths}
KERNEL = {kernel}
"""

_STEM = """
def conv_bn(c_in, c_out, kernel, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(c_out),
    )
"""

_NET = """

class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, WIDTHS[0], 3), nn.ReLU())
        blocks = []
        c_in = WIDTHS[0]
        for stage, (width, depth) in enumerate(zip(WIDTHS, DEPTHS)):
            for i in range(depth):
                blocks.append(Block(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward_features(self, x):
        return self.blocks(self.stem(x))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1)
        return self.classifier(torch.flatten(x, 1))
"""

_BLOCKS = {
    "plain": """

class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = conv_bn(c_in, c_out, KERNEL, stride)

    def forward(self, x):
        return F.relu(self.body(x))
""",
    "resnet": """

class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, KERNEL, stride)
        self.conv2 = conv_bn(c_out, c_out, KERNEL)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = conv_bn(c_in, c_out, 1, stride)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))
""",
    "mbconv": """
EXPANSION = {expansion}


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        hidden = c_in * EXPANSION
        self.expand = conv_bn(c_in, hidden, 1)
        self.depthwise = conv_bn(hidden, hidden, KERNEL, stride, groups=hidden)
        self.project = conv_bn(hidden, c_out, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.project(F.relu6(self.depthwise(F.relu6(self.expand(x)))))
        return x + y if self.residual else y
""",
}
TEMPLATES = tuple(_BLOCKS)


def render_template(
    name: str,
    *,
    widths: tuple[int, ...] = (16, 32, 64),
    depths: tuple[int, ...] = (1, 1, 1),
    kernel: int = 3,
    expansion: int = 4,
) -> str:
    """Return the source of template ``name`` (plain, resnet or mbconv) with the given sizes."""
    if name not in _BLOCKS:
        raise ValueError(f"unknown template {name!r}; choose one of: {', '.join(TEMPLATES)}")
    block = _BLOCKS[name].replace("{expansion}", str(expansion))
    header = _HEADER.format(widths=tuple(widths), depths=tuple(depths), kernel=kernel)
    return header + _STEM + block + _NET


def _mutation_sites(tree: ast.Module) -> list[tuple[ast.Constant, list[int]]]:
    """Return int literals a one-operation mutation may change, each with its allowed values."""
    sites = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Assign) or not isinstance(stmt.targets[0], ast.Name):
            continue
        name = stmt.targets[0].id.upper()
        consts = [
            n for n in ast.walk(stmt.value) if isinstance(n, ast.Constant) and type(n.value) is int
        ]
        for c in consts:
            v = c.value
            if "WIDTH" in name or "CHANNEL" in name:
                sites.append((c, [w for w in (v * 2, v // 2) if 8 <= w <= 1024 and w % 8 == 0]))
            elif "KERNEL" in name:
                sites.append((c, {3: [5], 5: [3, 7], 7: [5], 1: [3]}.get(v, [])))
            elif "DEPTH" in name or "LAYERS" in name:
                sites.append((c, [d for d in (v - 1, v + 1) if 1 <= d <= 8]))
            elif "EXPAN" in name:
                sites.append(
                    (c, [e for e in (v // 2, v * 2, v - 1, v + 1) if 1 <= e <= 8 and e != v])
                )
    # Conv2d(..., kernel_size=3, padding=1) literals: swap 3<->5 and keep the padding "same".
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Conv2d"):
            kw = {k.arg: k.value for k in node.keywords}
            k = kw.get("kernel_size", node.args[2] if len(node.args) > 2 else None)
            p = kw.get("padding", node.args[4] if len(node.args) > 4 else None)
            if (
                isinstance(k, ast.Constant)
                and isinstance(p, ast.Constant)
                and k.value in (3, 5)
                and p.value == k.value // 2
            ):
                sites.append((k, [8 - k.value], p))  # type: ignore[arg-type]
    return [s for s in sites if s[1]]


@search_space("torch-code")
class TorchCodeSpace(SearchSpace):
    """Free-form PyTorch networks written as source code, checked and executed in a sandbox."""

    edit_schema = None
    arch_format = (
        "Python source that imports only torch/torch.nn/torch.nn.functional/math and "
        "defines `class Net(nn.Module)`, constructed as `Net(num_classes)`"
    )

    def validate(self, arch: str) -> str:
        """Strip a Markdown fence, run the static check and return the source."""
        source = strip_fence(arch).strip("\n")
        check_source(source)
        return source + "\n"

    def canonical(self, arch: str) -> str:
        """Return the source re-printed from its AST, so comments and layout do not count."""
        tree = check_source(strip_fence(arch))
        try:
            return ast.unparse(tree) + "\n"
        except RecursionError:
            raise ArchitectureError("the source nests too deeply to be printed back") from None

    def sample(self, rng: random.Random) -> str:
        """Render a random template with random widths (multiples of 8), depths and kernel."""
        base = rng.choice((8, 16, 24, 32))
        widths, w = [], base
        for _ in range(3):
            widths.append(w)
            w = min(256, 8 * round(w * rng.choice((1.5, 2.0)) / 8))
        return render_template(
            rng.choice(TEMPLATES),
            widths=tuple(widths),
            depths=tuple(rng.randint(1, 3) for _ in widths),
            kernel=rng.choice((3, 5)),
            expansion=rng.choice((2, 3, 4, 6)),
        )

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Change one literal: a width x2 or /2, a kernel 3<->5 (with its padding), a depth +-1."""
        tree = check_source(strip_fence(arch))
        sites = _mutation_sites(tree)
        if not sites:
            raise ArchitectureError(
                "no mutable literal found: put widths, depths and kernel sizes in top-level "
                "constants named WIDTHS/DEPTHS/KERNEL, or use Conv2d(..., kernel_size=3, padding=1)"
            )
        site = rng.choice(sites)
        node, choices = site[0], site[1]
        new = rng.choice(choices)
        if len(site) == 3:  # a Conv2d kernel literal carries its padding literal along
            site[2].value = new // 2
        node.value = new
        child = ast.unparse(tree) + "\n"
        check_source(child)
        return child

    def build(self, arch: str, num_classes: int) -> nn.Module:
        """Check, execute and instantiate ``Net(num_classes)``.

        This runs the candidate's code in the calling process: the evaluator only calls it inside
        a sandboxed worker. Anything the code raises propagates (the worker reports build_error).
        """
        return build_source(arch, num_classes, check=True)

    def diff(self, parent: str, child: str) -> list[str]:
        """Name the changed lines of the canonical sources, at most ten."""
        a = self.canonical(parent).splitlines()
        b = self.canonical(child).splitlines()
        out = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
            if tag != "equal":
                old = " / ".join(s.strip() for s in a[i1:i2]) or "(nothing)"
                new = " / ".join(s.strip() for s in b[j1:j2]) or "(nothing)"
                out.append(f"line {j1 + 1}: {old} -> {new}")
        return out[:10]

    def describe_text(self) -> str:
        """Describe the space and its sandbox rules for the Designer."""
        return (
            "torch-code: write complete PyTorch source for an image classifier. Define "
            "`class Net(nn.Module)` whose constructor takes `num_classes` (`Net(num_classes)`); "
            "forward(x) maps a (batch, 3, H, W) tensor to (batch, num_classes) logits. Optionally "
            "define `forward_features(x)` returning the feature map before global pooling (used by "
            "Zen-score); otherwise proxies read the input of the last nn.Linear. Put widths, "
            "depths and kernel sizes in top-level constants (WIDTHS, DEPTHS, KERNEL) so they are "
            "easy to change; keep channel widths multiples of 8.\n" + self.rules()
        )

    @staticmethod
    def rules() -> str:
        """Return the sandbox rules as a bullet list."""
        return (
            f"Rules (checked before the code runs):\n"
            f"- import only {', '.join(ALLOWED_MODULES)} (aliases with `as` are fine);\n"
            "- top level: imports, class/def statements and constant assignments only;\n"
            "- no names or attributes with double underscores except `super().__init__()`; "
            "names starting with `_` only as `self._name`;\n"
            f"- not available: {', '.join(sorted(DENIED_NAMES - {'__import__'}))};\n"
            "- no global/nonlocal, async code, imports inside functions, or assignments to "
            "library attributes (only `self.name = ...`);\n"
            "- torch.load/save/hub/jit/utils/ops/cuda and every other submodule except "
            "torch.nn, torch.nn.functional, torch.nn.init, torch.linalg, torch.fft and "
            "torch.special are unreachable; `.format`, `.numpy`, `.tofile` are refused;\n"
            "- the network is built and scored in a separate process with a time and memory "
            "limit, no network access and no file writes outside its scratch directory."
        )

    def describe_code(self) -> str:
        """Return the sandbox rules and the source of a working template."""
        return self.rules() + "\n\nA valid example (ResNet-style):\n\n" + render_template("resnet")


def build_source(source: str, num_classes: int, *, check: bool = True) -> nn.Module:
    """Execute candidate ``source`` with restricted builtins and return ``Net(num_classes)``.

    ``check=False`` skips the static check; only the sandbox tests use it, to prove that the
    runtime layers contain code the static check would have refused.
    """
    source = strip_fence(source)
    tree = check_source(source) if check else parse_source(source)
    namespace: dict[str, Any] = {
        "__builtins__": SAFE_BUILTINS if check else builtins.__dict__,
        "__name__": "torch_code_candidate",
    }
    exec(compile(tree, "<torch-code>", "exec"), namespace)  # noqa: S102 - the sandboxed build
    net_cls = namespace.get("Net")
    if not (isinstance(net_cls, type) and issubclass(net_cls, nn.Module)):
        raise ArchitectureError("`Net` must be a class deriving from nn.Module")
    net = net_cls(num_classes)
    return net
