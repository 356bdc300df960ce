"""Structured outputs of the Designer and the Reflector (pydantic models).

Every free-text field is length-capped: a constrained decoder then cannot ramble until
``max_tokens`` cuts the JSON in half, and a model that ignores the cap fails validation (a typed
``malformed`` error) instead of flooding the next prompt. The free text comes *after* the fields
that matter, so a decoder that emits fields in schema order commits to the edit first.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

#: Longest rationale the Designer may give (characters). Every generated token costs ~0.1 s on
#: 2 CPU cores, so the caps are tight; the prompts ask for one short sentence anyway.
RATIONALE_MAX = 80
#: Longest whole architecture accepted in the "whole" output form (characters; torch-code source).
ARCH_MAX = 8000
#: Caps of the Reflector's three fields (characters).
REFLECTION_MAX = {"what_changed": 60, "why": 120, "suggestion": 100}

_RATIONALE = Field(
    max_length=RATIONALE_MAX,
    description="why this change should raise the score, in one short sentence",
)


class WholeProposal(BaseModel):
    """A Designer proposal in the ``whole`` form: the child architecture written out in full."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field(
        min_length=1,
        max_length=ARCH_MAX,
        description="the complete child architecture in the space's notation",
    )
    rationale: str = _RATIONALE


@cache
def edit_proposal_schema(edit_schema: type[BaseModel]) -> type[BaseModel]:
    """Return ``edit_schema``'s fields plus a capped ``rationale``, in that order.

    The result subclasses ``edit_schema``, so its validators and ``Literal`` choices carry over and
    constrained decoding can only emit legal edit values.
    """
    return create_model(
        f"{edit_schema.__name__}Proposal",
        __base__=edit_schema,
        __doc__=f"A Designer proposal in the ``edit`` form: one {edit_schema.__name__} plus a rationale.",
        rationale=(str, _RATIONALE),
    )


class Reflection(BaseModel):
    """The Reflector's critique of one mutation; its ``suggestion`` steers the next Designer call."""

    model_config = ConfigDict(extra="forbid")

    what_changed: str = Field(
        max_length=REFLECTION_MAX["what_changed"],
        description="what the mutation changed in the architecture, in a few words",
    )
    why: str = Field(
        max_length=REFLECTION_MAX["why"],
        description="why the change likely raised or lowered the score under this proxy",
    )
    suggestion: str = Field(
        max_length=REFLECTION_MAX["suggestion"],
        description="one concrete mutation to try next",
    )

    def as_text(self) -> str:
        """Return the one-paragraph form the Designer sees."""
        parts = (
            ("Change", self.what_changed),
            ("Effect", self.why),
            ("Next", self.suggestion),
        )
        return " ".join(f"{label}: {_sentence(text)}" for label, text in parts if text.strip())


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."


def describe_schema(schema: type[BaseModel]) -> str:
    """Describe a schema's fields in a few lines for a prompt: name, allowed values, meaning."""
    properties: dict[str, Any] = schema.model_json_schema().get("properties", {})
    lines = []
    for name, spec in properties.items():
        about = f" - {spec['description']}" if spec.get("description") else ""
        lines.append(f'- "{name}": {_field_type(spec)}{about}')
    return "\n".join(lines)


def _field_type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return "one of " + ", ".join(
            f'"{v}"' if isinstance(v, str) else str(v) for v in spec["enum"]
        )
    if "const" in spec:
        return f'"{spec["const"]}"'
    kind = spec.get("type", "value")
    bounds = []
    if "minimum" in spec:
        bounds.append(f">= {spec['minimum']}")
    if "exclusiveMinimum" in spec:
        bounds.append(f"> {spec['exclusiveMinimum']}")
    if "maximum" in spec:
        bounds.append(f"<= {spec['maximum']}")
    if "exclusiveMaximum" in spec:
        bounds.append(f"< {spec['exclusiveMaximum']}")
    if "maxLength" in spec and kind == "string":
        bounds.append(f"at most {spec['maxLength']} chars")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


__all__ = [
    "ARCH_MAX",
    "RATIONALE_MAX",
    "REFLECTION_MAX",
    "Reflection",
    "WholeProposal",
    "describe_schema",
    "edit_proposal_schema",
]
