"""Static check of ``torch-code`` candidates: an allow-list over the Python AST.

Nothing in a candidate runs before this check passes. It allows imports of torch, torch.nn,
torch.nn.functional (and torch.nn.init, torch.linalg, torch.fft, torch.special) and math; resolves
every ``module.attr`` chain on the real modules without importing anything, so ``torch.os``,
``nn.modules.module.os`` or ``torch.utils`` are refused wherever they lead; refuses dunder names and
attributes, frame/code internals, file and pickle APIs, string-based attribute access
(``getattr``, ``str.format``), ``global``/``nonlocal`` and any statement kind not listed.
:data:`SAFE_BUILTINS` is the builtins table a checked candidate executes with.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import math
import re
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import ArchitectureError

#: Modules a candidate may import and reach through attribute chains (dotted name -> module).
ALLOWED_MODULES: dict[str, types.ModuleType] = {
    "torch": torch,
    "torch.nn": nn,
    "torch.nn.functional": F,
    "torch.nn.init": nn.init,
    "torch.linalg": torch.linalg,
    "torch.fft": torch.fft,
    "torch.special": torch.special,
    "math": math,
}
_ALLOWED_MODULE_IDS = {id(m) for m in ALLOWED_MODULES.values()}
#: Builtins that are refused by name, with or without a call.
DENIED_NAMES = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "getattr",
        "setattr",
        "delattr",
        "hasattr",
        "globals",
        "locals",
        "vars",
        "dir",
        "breakpoint",
        "input",
        "help",
        "exit",
        "quit",
        "type",
        "memoryview",
        "__import__",
    }
)
#: Attribute names refused on any object: escapes to files, pickles, frames or other modules.
DENIED_ATTRS = frozenset(
    {
        "format",
        "format_map",
        "mro",
        "tofile",
        "numpy",
        "from_file",
        "share_memory",
        "share_memory_",
        "load",
        "save",
        "hub",
        "os",
        "sys",
        "subprocess",
        "builtins",
        "importlib",
        "ctypes",
        "socket",
        "pickle",
        "compile",
        "use_deterministic_algorithms",
    }
)
_ATTR_REASONS = {
    **dict.fromkeys(("format", "format_map"), "string formatting looks attributes up by name"),
    **dict.fromkeys(("numpy", "tofile"), "numpy arrays can write files and expose raw memory"),
    **dict.fromkeys(
        ("load", "save", "from_file", "hub", "share_memory", "share_memory_"),
        "it reads or writes files",
    ),
    **dict.fromkeys(
        ("os", "sys", "subprocess", "builtins", "importlib", "ctypes", "socket", "pickle"),
        "it reaches a module outside torch and math",
    ),
    "compile": "it starts compiler processes",
    "use_deterministic_algorithms": "candidates may not change torch's global settings",
    "mro": "it walks the class hierarchy",
}
#: Attribute prefixes of frame, code and function internals (generator.gi_frame.f_globals ...).
DENIED_ATTR_PREFIXES = ("gi_", "cr_", "ag_", "f_", "tb_", "co_", "func_", "im_", "register_module_")
_DUNDER_TEXT = re.compile(r"__\w+__")
_MAX_SOURCE_CHARS = 20_000
_FENCE = re.compile(r"^\s*```[\w+-]*\s*\n(.*?)\n\s*```\s*$", re.S)

#: Every AST node type a candidate may contain; anything else is refused by name.
_NODE_TYPES = tuple(
    getattr(ast, n)
    for n in (
        "Module Expr Import ImportFrom alias ClassDef FunctionDef arguments arg Return Assign "
        "AugAssign AnnAssign For While If With withitem Raise Try ExceptHandler Assert Pass "
        "Break Continue BoolOp BinOp UnaryOp Lambda IfExp Dict Set ListComp SetComp DictComp "
        "GeneratorExp comprehension Compare Call keyword Constant Attribute Subscript Starred "
        "Name List Tuple Slice NamedExpr JoinedStr FormattedValue Load Store expr_context "
        "boolop operator unaryop cmpop"
    ).split()
)


class ForbiddenCode(ArchitectureError):
    """Candidate source that uses a construct the torch-code sandbox does not allow."""

    def __init__(self, lineno: int | None, construct: str, rule: str):
        where = f"line {lineno}" if lineno else "source"
        super().__init__(f"{where}: {construct} is not allowed: {rule}")
        self.lineno = lineno
        self.construct = construct


def _restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    """Import only the allowed modules (the ``import`` statements of a checked candidate)."""
    if level != 0 or name not in ALLOWED_MODULES:
        raise ImportError(f"torch-code may only import {', '.join(ALLOWED_MODULES)}")
    return __import__(name, globals, locals, fromlist, level)


_SAFE_BUILTIN_NAMES = (
    "abs all any bool callable chr dict divmod enumerate filter float frozenset hash int "
    "isinstance issubclass iter len list map max min next ord pow print range repr reversed round "
    "set slice sorted str sum super tuple zip object property staticmethod classmethod bytes "
    "complex Exception ValueError TypeError RuntimeError NotImplementedError AssertionError "
    "IndexError KeyError ZeroDivisionError ArithmeticError StopIteration NotImplemented Ellipsis"
).split()
SAFE_BUILTINS: dict[str, Any] = {n: getattr(builtins, n) for n in _SAFE_BUILTIN_NAMES}
SAFE_BUILTINS["__build_class__"] = builtins.__build_class__
SAFE_BUILTINS["__import__"] = _restricted_import


def strip_fence(source: str) -> str:
    """Return ``source`` without a surrounding Markdown code fence (a common LLM habit)."""
    match = _FENCE.match(source)
    return match.group(1) if match else source


def parse_source(source: str) -> ast.Module:
    """Parse candidate source, turning syntax errors into :class:`ArchitectureError`."""
    if not isinstance(source, str) or not source.strip():
        raise ArchitectureError("torch-code expects Python source defining `class Net(nn.Module)`")
    if len(source) > _MAX_SOURCE_CHARS:
        raise ArchitectureError(
            f"the source has {len(source)} characters; torch-code allows at most "
            f"{_MAX_SOURCE_CHARS}"
        )
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ArchitectureError(f"line {exc.lineno}: syntax error: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ArchitectureError(f"the source cannot be parsed: {type(exc).__name__}") from None


class _Checker(ast.NodeVisitor):
    """Walk a module and raise ForbiddenCode at the first construct outside the allow-list."""

    def __init__(self) -> None:
        self.aliases: dict[str, object] = {}  # import alias -> the object it names
        self.self_names: list[str] = []  # first parameter of each enclosing function
        # Why: `self._x` and `self.x = ...` are allowed only on a real method's instance; a
        # helper's first parameter (or a method called as `Net.forward(nn.ReLU, x)`) can be a
        # library class, which would let a candidate patch it for every later candidate.
        self.in_class_body: list[bool] = [False]
        self.method_names: set[str] = set()  # methods of the candidate's own classes
        self.class_names: set[str] = set()

    def fail(self, node: ast.AST, construct: str, rule: str) -> None:
        raise ForbiddenCode(getattr(node, "lineno", None), construct, rule)

    def check_module(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef):
                self.class_names.add(stmt.name)
                self.method_names.update(
                    s.name for s in stmt.body if isinstance(s, ast.FunctionDef)
                )
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self.check_import(stmt)
            elif isinstance(stmt, (ast.ClassDef, ast.FunctionDef)):
                self.visit(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and _is_constant_assign(stmt):
                self.visit(stmt)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # docstring
            else:
                self.fail(
                    stmt,
                    f"a top-level `{type(stmt).__name__}` statement",
                    "the top level may hold only imports, class/def statements and "
                    "constant assignments such as `WIDTHS = (16, 32, 64)`",
                )
        if not any(isinstance(s, ast.ClassDef) and s.name == "Net" for s in tree.body):
            raise ArchitectureError(
                "the source must define `class Net(nn.Module)` at top level, "
                "constructed as `Net(num_classes)`"
            )

    def check_import(self, node: ast.Import | ast.ImportFrom) -> None:
        rule = f"only {', '.join(ALLOWED_MODULES)} may be imported"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name not in ALLOWED_MODULES:
                    self.fail(node, f"`import {a.name}`", rule)
                bound = a.asname or a.name.split(".")[0]
                self.aliases[bound] = ALLOWED_MODULES[a.name if a.asname else bound]
            return
        if node.level or node.module not in ALLOWED_MODULES:
            self.fail(node, f"`from {'.' * node.level}{node.module or ''} import ...`", rule)
        for a in node.names:
            if a.name == "*":
                self.fail(node, "`import *`", "import names one by one")
            self.check_attr_name(node, a.name, module_rooted=True)
            value = self.resolve(node, ALLOWED_MODULES[node.module], a.name, node.module)
            self.aliases[a.asname or a.name] = value

    def resolve(self, node: ast.AST, base: object, attr: str, dotted: str) -> object:
        """Look ``attr`` up on an allowed module without importing or running anything."""
        try:
            value = inspect.getattr_static(base, attr)
        except AttributeError:
            self.fail(node, f"`{dotted}.{attr}`", f"{dotted} has no public attribute {attr!r}")
        if isinstance(value, types.ModuleType) and id(value) not in _ALLOWED_MODULE_IDS:
            self.fail(
                node,
                f"`{dotted}.{attr}`",
                f"it reaches module {value.__name__}; only {', '.join(ALLOWED_MODULES)} are usable",
            )
        return value

    def check_attr_name(
        self,
        node: ast.AST,
        attr: str,
        *,
        module_rooted: bool = False,
        on_self: bool = False,
        super_init: bool = False,
    ) -> None:
        if attr.startswith("__") and not (super_init and attr == "__init__"):
            self.fail(
                node,
                f"dunder attribute `.{attr}`",
                "double-underscore attributes are off limits (only super().__init__ is allowed)",
            )
        if attr.startswith("_") and not attr.startswith("__") and not on_self:
            self.fail(
                node,
                f"private attribute `.{attr}`",
                "names starting with `_` are only allowed on `self`",
            )
        if attr in DENIED_ATTRS or attr.startswith(DENIED_ATTR_PREFIXES):
            self.fail(
                node,
                f"attribute `.{attr}`",
                _ATTR_REASONS.get(attr, "it exposes interpreter frames, code or globals"),
            )
        if module_rooted and attr.startswith("set_"):
            self.fail(node, f"`{attr}`", "candidates may not change torch's global settings")

    # --- visitors -------------------------------------------------------------------------
    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _NODE_TYPES):
            self.fail(node, f"`{type(node).__name__}`", "this construct is not in the allow-list")
        super().generic_visit(node)

    def visit_Import(self, node: ast.AST) -> None:
        self.fail(node, "an import inside a class or function", "import modules at the top")

    visit_ImportFrom = visit_Import

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if node.keywords:
            self.fail(node, f"class keywords on `{node.name}`", "metaclasses are not allowed")
        self.check_name(node, node.name, binding=True)
        self.in_class_body.append(True)
        try:
            self.generic_visit(node)
        finally:
            self.in_class_body.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name.startswith("__") and node.name != "__init__":
            self.fail(
                node, f"method `{node.name}`", "define __init__ and forward; no other dunders"
            )
        if node.name != "__init__":
            self.check_name(node, node.name, binding=True)
        params = node.args.posonlyargs + node.args.args
        plain = not any(
            isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod")
            for d in node.decorator_list
        )
        is_method = self.in_class_body[-1] and plain
        self.self_names.append(params[0].arg if params and is_method else "")
        self.in_class_body.append(False)
        try:
            self.generic_visit(node)
        finally:
            self.self_names.pop()
            self.in_class_body.pop()

    def visit_arg(self, node: ast.arg) -> None:
        self.check_name(node, node.arg, binding=True)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self.check_name(node, node.id, binding=isinstance(node.ctx, ast.Store))
        if node.id in self.aliases:
            if isinstance(self.aliases[node.id], types.ModuleType):
                self.fail(
                    node,
                    f"module `{node.id}` used as a value",
                    "use modules only as `module.attribute`",
                )

    def check_name(self, node: ast.AST, name: str, *, binding: bool = False) -> None:
        if binding and name in self.aliases:
            self.fail(
                node, f"rebinding `{name}`", "imported names cannot be reused for other values"
            )
        if name in DENIED_NAMES:
            self.fail(node, f"`{name}`", "this builtin is not available in torch-code")
        if name.startswith("__"):
            self.fail(node, f"name `{name}`", "double-underscore names are off limits")

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.check_name(node, node.name, binding=True)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _DUNDER_TEXT.search(node.value):
            self.fail(node, "a string naming a dunder", "dunder names cannot appear in strings")

    def visit_Global(self, node: ast.AST) -> None:
        self.fail(node, "`global`/`nonlocal`", "functions may not rebind outer names")

    visit_Nonlocal = visit_Global

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        rooted = isinstance(base, ast.Name) and base.id in self.aliases
        if rooted:  # resolve torch.x.y step by step on the real module
            obj, dotted = self.aliases[base.id], base.id
            for attr in chain:
                # Every name is checked, also past the first non-module: `nn.Module.forward`
                # is a function whose `.__globals__` would otherwise go unchecked.
                self.check_attr_name(node, attr, module_rooted=True)
                if isinstance(obj, types.ModuleType):
                    obj = self.resolve(node, obj, attr, dotted)
                    dotted += "." + attr
            if isinstance(node.ctx, ast.Store):
                self.fail(
                    node,
                    f"assigning to `{base.id}.{'.'.join(chain)}`",
                    "library modules and classes are shared and may not be modified",
                )
            if isinstance(obj, types.ModuleType):  # this node is the outermost of its chain
                self.fail(
                    node,
                    f"module `{base.id}.{'.'.join(chain)}` used as a value",
                    "use modules only as `module.attribute`",
                )
            return  # the whole chain is checked; the base Name is an alias used correctly
        on_self = (
            isinstance(node.value, ast.Name)
            and bool(self.self_names)
            and node.value.id == self.self_names[-1]
        )
        super_init = (
            isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "super"
        )
        self.check_attr_name(node, node.attr, on_self=on_self, super_init=super_init)
        if (
            isinstance(node.value, ast.Name)
            and node.value.id in self.class_names
            and node.attr in self.method_names
        ):
            self.fail(
                node,
                f"`{node.value.id}.{node.attr}`",
                "call methods through `self`; through the class they run on any object",
            )
        if isinstance(node.ctx, ast.Store) and not on_self:
            self.fail(
                node, f"assigning to `.{node.attr}`", "only `self.name = ...` may be assigned"
            )
        self.visit(node.value)


def _is_constant_assign(stmt: ast.Assign | ast.AnnAssign) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    if not all(isinstance(t, ast.Name) for t in targets) or stmt.value is None:
        return False
    allowed = (
        ast.Constant,
        ast.Tuple,
        ast.List,
        ast.Dict,
        ast.Set,
        ast.UnaryOp,
        ast.BinOp,
        ast.Load,
        ast.unaryop,
        ast.operator,
    )
    return all(isinstance(n, allowed) for n in ast.walk(stmt.value))


def check_source(source: str) -> ast.Module:
    """Parse ``source`` and refuse anything outside the torch-code allow-list.

    Returns:
        The parsed module.

    Raises:
        ForbiddenCode: a forbidden construct, naming its line and the rule it breaks.
        ArchitectureError: a syntax error or a missing ``class Net``.

    """
    tree = parse_source(source)
    try:
        _Checker().check_module(tree)
    except RecursionError:  # a legal parse can still nest deeper than the checker recurses
        raise ArchitectureError("the source nests too deeply to be checked") from None
    return tree
