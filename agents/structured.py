"""Pull one JSON object out of a model's text and validate it against a pydantic schema.

Constrained decoding (OpenAI, llama.cpp, vLLM) returns bare JSON, but fakes and servers that
ignore ``response_format`` wrap it in code fences or prose; the first JSON object in the text is
taken either way. Failures become ``LLMError``: ``truncated`` when the JSON never closes (the
reply was cut off), ``malformed`` otherwise, with the raw text kept.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from agents.llm_errors import LLMError

_SHOWN_CHARS = 400


def _error(kind: str, message: str, text: str) -> LLMError:
    return LLMError(kind, message, text=text)


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN_CHARS else flat[:_SHOWN_CHARS] + "..."


def _is_unterminated(text: str) -> bool:
    """Return True when a ``{`` opened in ``text`` is still open at its end (a cut-off reply)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if depth == 0:  # prose between objects: quotes and brackets there mean nothing
            depth = 1 if ch == "{" else 0
        elif in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return depth > 0


def first_json_object(text: str) -> dict | None:
    """Return the first JSON object in ``text``, ignoring code fences and prose around it."""
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos >= 0:
        try:
            value, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                return value
        pos = text.find("{", pos + 1)
    return None


def parse_reply(
    text: str, schema: type[BaseModel], *, on_truncated_only: bool = False
) -> BaseModel | None:
    """Return ``text`` parsed into ``schema``.

    Args:
        text: the model's raw reply.
        schema: the pydantic model to validate against.
        on_truncated_only: only check for cut-off JSON (raise ``truncated`` or return None).

    Raises:
        LLMError: ``truncated`` if the JSON object never closes, ``malformed`` if there is no JSON
            object or it does not fit the schema; the raw text is in the message (shortened)
            and in ``.text`` (whole).
    """
    obj = first_json_object(text)
    if obj is None and _is_unterminated(text):
        raise _error("truncated", f"the JSON reply stops before it closes: {_shown(text)}", text)
    if on_truncated_only:
        return None
    if obj is None:
        raise _error("malformed", f"no JSON object in the reply: {_shown(text)}", text)
    try:
        return schema.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors()[:3]
        )
        raise _error(
            "malformed",
            f"the reply does not match {schema.__name__} ({problems}): {_shown(text)}",
            text,
        ) from None
