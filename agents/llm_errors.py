"""Typed failures of LLM calls, and the one place that keeps API keys out of their messages."""

from __future__ import annotations

import json
import os
import re

from agents.embedded import EmbeddedModelError

KINDS = (
    "rate_limit",
    "timeout",
    "connection",
    "refusal",
    "empty",
    "truncated",
    "malformed",
    "api",
    "unavailable",
)
_RETRYABLE = frozenset({"rate_limit", "timeout", "connection", "empty", "truncated"})
_SECRET_ENV = ("OPENAI_API_KEY", "RZNAS_OPENAI_COMPATIBLE_API_KEY")
_KEY_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-\.=]{8,})")


def redact(text: str) -> str:
    """Return ``text`` with API keys (from the environment, or anything key-shaped) masked."""
    for var in _SECRET_ENV:
        value = os.environ.get(var)
        if value and len(value) >= 6:
            text = text.replace(value, "[REDACTED]")
    return _KEY_LIKE.sub("[REDACTED]", text)


class ModelSpecError(ValueError):
    """A provider string is malformed or its provider unknown; the message lists valid forms."""


class LLMError(Exception):
    """A failed LLM call, typed so the graph can route on it.

    Attributes:
        kind: one of ``KINDS``.
        message: what went wrong and what to do; never contains an API key.
        retryable: whether trying again may help (``complete`` already retried it if so).
        text: the raw model text, when the model answered (malformed, truncated, refusal).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retryable: bool | None = None,
        text: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown LLMError kind {kind!r}; use one of {KINDS}")
        self.kind = kind
        self.message = redact(message)
        self.retryable = kind in _RETRYABLE if retryable is None else retryable
        self.text = text
        self.retry_after = retry_after
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"LLMError(kind={self.kind!r}, retryable={self.retryable}, message={self.message!r})"

    def __reduce__(self):  # keyword-only fields survive pickling (worker processes, checkpoints)
        return _rebuild_llm_error, (
            self.kind,
            self.message,
            self.retryable,
            self.text,
            self.retry_after,
        )


def _rebuild_llm_error(kind, message, retryable, text, retry_after) -> LLMError:
    return LLMError(kind, message, retryable=retryable, text=text, retry_after=retry_after)


def classify_exception(exc: BaseException, where: str) -> LLMError | None:
    """Map a client exception (openai SDK, httpx, builtins, the fake's) to an ``LLMError``.

    Returns None for exceptions that are not LLM-call failures (programming errors propagate).
    """
    if isinstance(exc, LLMError):
        return exc
    name = type(exc).__name__
    # By the names of the whole class chain: langchain-openai re-raises the SDK's errors as its
    # own subclasses (OpenAIConnectionError, OpenAITimeoutError, ...).
    lineage = {cls.__name__ for cls in type(exc).__mro__}
    detail = " ".join(str(exc).split())[:300] or name
    if isinstance(exc, TimeoutError) or any("Timeout" in n for n in lineage):
        return LLMError("timeout", f"{where} did not answer in time ({detail})")
    if isinstance(exc, ConnectionError) or lineage & {"APIConnectionError", "ConnectError"}:
        return LLMError("connection", f"cannot connect to {where} ({detail})")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        try:
            retry_after = float(headers.get("retry-after", ""))
        except (TypeError, ValueError):
            retry_after = None
        if status == 429:
            if "insufficient_quota" in detail:
                return LLMError(
                    "rate_limit",
                    f"{where}: quota exhausted, check your plan and billing ({detail})",
                    retryable=False,
                )
            return LLMError(
                "rate_limit",
                f"{where} is rate limiting requests ({detail})",
                retry_after=retry_after,
            )
        if status in (401, 403):
            return LLMError(
                "unavailable",
                f"{where} rejected the API key (HTTP {status}); check the key "
                f"variable ({' or '.join(_SECRET_ENV)})",
                retryable=False,
            )
        if status == 404:
            return LLMError(
                "unavailable",
                f"{where} does not know this model or endpoint (HTTP 404): {detail}",
                retryable=False,
            )
        if status == 408:
            return LLMError("timeout", f"{where} timed out the request (HTTP 408)")
        return LLMError("api", f"{where} returned HTTP {status}: {detail}", retryable=status >= 500)
    if isinstance(exc, EmbeddedModelError):
        return LLMError("unavailable", str(exc), retryable=False)
    if isinstance(exc, json.JSONDecodeError):  # the body stopped mid-JSON: a resend usually works
        return LLMError("truncated", f"{where} sent a response cut off in transit ({detail})")
    if isinstance(exc, ValueError):  # langchain-openai's reaction to an error body with HTTP 200
        return LLMError("api", f"{where} sent an unusable response: {detail}", retryable=False)
    return None
