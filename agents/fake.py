"""A scripted chat model for tests and demos: replies come from a FIFO, failures on demand.

A script is a list of replies. Each reply is a string (the model's text) or an object with
``text``, ``error`` (one of ``ERRORS``) and/or ``sleep`` (seconds before answering). The
top-level form ``{"replies": [...], "repeat": true}`` cycles when the list runs out (demos,
throughput benchmarks); a plain list never cycles: one call too many raises
``ScriptExhaustedError`` so unexpected extra LLM calls fail the test instead of passing silently.
A role-split object ``{"designer": [...], "reflector": [...]}`` scripts each role separately.

Transport failures are raised as the exceptions real clients raise (``TimeoutError``,
``ConnectionError``, an error with an HTTP ``status_code``), and content failures (refusal,
empty, truncated) come back as replies shaped like the OpenAI API's, so the fake drives the same
error handling as a real provider.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

ERRORS = ("rate_limit", "timeout", "connection", "server", "refusal", "empty", "truncated")
ALL_ROLES = "*"
_DEFAULT_TRUNCATED = '{"arch": "|nor_conv_3x3~0|+|skip_conn'
_DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."


class ScriptError(ValueError):
    """A fake script is malformed; the message names the file, the entry and the fix."""


class ScriptExhaustedError(RuntimeError):
    """The model was called more often than its script has replies (and ``repeat`` is off)."""


class ScriptedStatusError(Exception):
    """An HTTP error status from the fake server (429 rate limit, 500 server error)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ScriptedReply:
    """One scripted turn: text, an optional failure and an optional delay."""

    text: str = ""
    error: str | None = None
    sleep: float = 0.0


def _parse_reply(item: Any, where: str) -> ScriptedReply:
    if isinstance(item, str):
        return ScriptedReply(text=item)
    if not isinstance(item, dict):
        raise ScriptError(
            f"{where}: a reply must be a string or an object, got {type(item).__name__}"
        )
    unknown = set(item) - {"text", "error", "sleep"}
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)}; use text, error, sleep")
    error = item.get("error")
    if error is not None and error not in ERRORS:
        raise ScriptError(f"{where}: unknown error {error!r}; use one of {', '.join(ERRORS)}")
    text, sleep = item.get("text", ""), item.get("sleep", 0)
    if not isinstance(text, str):
        raise ScriptError(f"{where}: text must be a string")
    if not isinstance(sleep, (int, float)) or sleep < 0:
        raise ScriptError(f"{where}: sleep must be a non-negative number of seconds")
    if error is None and "text" not in item:
        raise ScriptError(f"{where}: a reply object needs text or error")
    return ScriptedReply(text=text, error=error, sleep=float(sleep))


def _parse_list(data: Any, where: str) -> tuple[list[ScriptedReply], bool]:
    repeat = False
    if isinstance(data, dict) and "replies" in data:
        unknown = set(data) - {"replies", "repeat"}
        if unknown:
            raise ScriptError(f"{where}: unknown keys {sorted(unknown)} next to 'replies'")
        repeat = data.get("repeat", False)
        if not isinstance(repeat, bool):
            raise ScriptError(f"{where}: repeat must be true or false")
        data = data["replies"]
    if not isinstance(data, list):
        raise ScriptError(f"{where}: expected a list of replies")
    if repeat and not data:
        raise ScriptError(f"{where}: repeat needs at least one reply")
    return [_parse_reply(r, f"{where}[{i}]") for i, r in enumerate(data)], repeat


def parse_script(data: Any, source: str = "script") -> dict[str, tuple[list[ScriptedReply], bool]]:
    """Validate a script and return ``{role: (replies, repeat)}``; ``ALL_ROLES`` serves every role.

    Raises:
        ScriptError: the script is malformed.
    """
    if isinstance(data, list) or (isinstance(data, dict) and "replies" in data):
        return {ALL_ROLES: _parse_list(data, source)}
    if isinstance(data, dict) and data:
        return {role: _parse_list(v, f"{source}:{role}") for role, v in data.items()}
    raise ScriptError(
        f'{source}: expected a list of replies, {{"replies": [...], "repeat": true}} '
        f'or {{"designer": [...], "reflector": [...]}}'
    )


def load_script(path: str | Path) -> dict[str, tuple[list[ScriptedReply], bool]]:
    """Read and validate a JSON script file (see the module docstring for the format).

    Raises:
        ScriptError: the file is missing, not JSON, or malformed.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScriptError(f"fake script not found: {path}") from None
    except OSError as exc:  # a directory, no permission: "not valid JSON" would mislead
        raise ScriptError(f"fake script {path} cannot be read ({exc.strerror}); "
                          "pass a JSON file") from None
    except ValueError as exc:
        raise ScriptError(f"fake script {path} is not valid JSON: {exc}") from None
    return parse_script(data, str(path))


def _estimate_tokens(text: str) -> int:
    # Fakes have no tokenizer; about four characters per token is OpenAI's rule of thumb.
    return max(1, len(text) // 4) if text else 0


def _role_of(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant"}.get(message.type, message.type)


class ScriptedChatModel(BaseChatModel):
    """A LangChain chat model that answers from a FIFO script and records what it was sent.

    Attributes:
        replies: the script, consumed in order.
        repeat: cycle when the script runs out (off by default: running out raises).
        timeout_s: a scripted ``sleep`` longer than this raises ``TimeoutError`` after it.
        calls: the messages of every call, as ``{"role", "content"}`` dicts.
        call_kwargs: the request options of every call (temperature, seed, max_tokens, ...).
    """

    replies: list[ScriptedReply]
    repeat: bool = False
    timeout_s: float | None = None
    calls: list[list[dict[str, str]]] = Field(default_factory=list)
    call_kwargs: list[dict[str, Any]] = Field(default_factory=list)
    _position: int = PrivateAttr(default=0)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def remaining(self) -> int:
        """Return how many scripted replies are left (before any repeat)."""
        return len(self.replies) - self._position

    def _next_reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ScriptedReply:
        with self._lock:
            self.calls.append([{"role": _role_of(m), "content": str(m.content)} for m in messages])
            self.call_kwargs.append(dict(kwargs))
            if self._position >= len(self.replies):
                if not self.repeat:
                    raise ScriptExhaustedError(
                        f"fake model called {len(self.calls)} times but its script has "
                        f'{len(self.replies)} replies; add replies or set "repeat": true'
                    )
                self._position = 0
            reply = self.replies[self._position]
            self._position += 1
            return reply

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._next_reply(messages, kwargs)
        if reply.sleep:
            if self.timeout_s is not None and reply.sleep > self.timeout_s:
                time.sleep(self.timeout_s)
                raise TimeoutError(f"request timed out after {self.timeout_s:g} s (scripted)")
            time.sleep(reply.sleep)
        if reply.error == "rate_limit":
            raise ScriptedStatusError(429, "rate limit reached (scripted)")
        if reply.error == "server":
            raise ScriptedStatusError(500, "internal server error (scripted)")
        if reply.error == "timeout":
            raise TimeoutError("request timed out (scripted)")
        if reply.error == "connection":
            raise ConnectionError("connection refused (scripted)")
        text, extra, finish = reply.text, {}, "stop"
        if reply.error == "refusal":
            text, extra = "", {"refusal": reply.text or _DEFAULT_REFUSAL}
        elif reply.error == "empty":
            text = ""
        elif reply.error == "truncated":
            text, finish = reply.text or _DEFAULT_TRUNCATED, "length"
        n_in = _estimate_tokens("\n".join(str(m.content) for m in messages))
        n_out = _estimate_tokens(text or extra.get("refusal", ""))
        message = AIMessage(
            content=text,
            additional_kwargs=extra,
            response_metadata={"finish_reason": finish, "model_name": "scripted-fake"},
            usage_metadata={
                "input_tokens": n_in,
                "output_tokens": n_out,
                "total_tokens": n_in + n_out,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
