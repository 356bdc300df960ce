"""Search-space registry: one file per space, registered with ``@search_space("name")``.

A search space turns architecture strings (the field's own notation at every edge: NB201 cell
strings, Zen-NAS block strings, Python source) into networks, and gives the Designer a text and a
code description of itself. Every method that takes an architecture accepts any spelling the space
can parse and raises :class:`ArchitectureError` with a message fit to show the Designer.
"""

from __future__ import annotations

import importlib
import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel
from torch import nn


class ArchitectureError(ValueError):
    """An architecture string that the space cannot parse, or that breaks one of its rules.

    The message names the bad token or rule and says what is allowed, because it is shown to the
    Designer (and to users on the command line) verbatim.
    """


class SearchSpace(ABC):
    """One search space. Subclasses are registered with :func:`search_space`.

    Constructor keyword arguments (budgets and the like) come from the search configuration;
    every space must be constructible with no arguments.
    """

    name: ClassVar[str]
    #: Pydantic model of a one-operation edit (the paper's mutation rule), or None when the space
    #: only accepts whole architectures (``torch-code``). Fields use ``Literal`` choices wherever
    #: possible so constrained decoding can only produce legal edits.
    edit_schema: ClassVar[type[BaseModel] | None] = None
    #: One sentence on what an architecture string looks like, used in CLI errors and prompts.
    arch_format: ClassVar[str] = ""

    @abstractmethod
    def validate(self, arch: str) -> str:
        """Parse and check ``arch``; return it in the space's standard spelling or raise ArchitectureError."""

    @abstractmethod
    def canonical(self, arch: str) -> str:
        """Return one string shared by every architecture that computes the same function."""

    @abstractmethod
    def sample(self, rng: random.Random) -> str:
        """Draw a valid architecture (uniformly where the space allows)."""

    @abstractmethod
    def mutate(self, arch: str, rng: random.Random) -> str:
        """Return a random valid one-operation mutation of ``arch`` that differs from it."""

    def apply_edit(self, arch: str, edit: BaseModel) -> str:
        """Apply a one-operation edit (an ``edit_schema`` instance) and return the child's string."""
        raise ArchitectureError(f"the {self.name} space takes whole architectures, not edits")

    @abstractmethod
    def build(self, arch: str, num_classes: int) -> nn.Module:
        """Build the network for ``arch`` with a ``num_classes``-way classifier."""

    @abstractmethod
    def describe_text(self) -> str:
        """Describe the space in words for the Designer (rules, operations, notation)."""

    @abstractmethod
    def describe_code(self) -> str:
        """Return the real source of the operations and network construction (via ``inspect``)."""

    def diff(self, parent: str, child: str) -> list[str]:
        """Name the parts of ``child`` that differ from ``parent`` (for traces), e.g. ``edge 2<-1: a -> b``."""
        return [] if parent == child else [f"{parent} -> {child}"]

    def info(self) -> dict[str, Any]:
        """Return a small JSON-able summary (name, format) for reports."""
        return {"name": self.name, "arch_format": self.arch_format}


_SPACES: dict[str, type[SearchSpace]] = {}

#: Modules holding the built-in spaces; adding a space means one file plus one entry here.
BUILTIN_MODULES = ("nb201", "zen_macro", "torch_code", "darts")


def search_space(name: str):
    """Register a :class:`SearchSpace` subclass under ``name``; duplicate names raise ``KeyError``."""

    def register(cls: type[SearchSpace]) -> type[SearchSpace]:
        if name in _SPACES:
            raise KeyError(f"search space {name!r} is already registered")
        cls.name = name
        _SPACES[name] = cls
        return cls

    return register


def load_builtin() -> None:
    """Import every built-in space module so its ``@search_space`` runs."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def space_names() -> list[str]:
    """Return the registered space names, sorted."""
    load_builtin()
    return sorted(_SPACES)


def get_space(name: str, **kwargs: Any) -> SearchSpace:
    """Construct the space registered as ``name``; unknown names raise ``ValueError`` listing the choices."""
    load_builtin()
    if name not in _SPACES:
        raise ValueError(f"unknown search space {name!r}; choose one of: {', '.join(sorted(_SPACES))}")
    return _SPACES[name](**kwargs)
