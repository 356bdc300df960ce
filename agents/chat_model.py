"""``ChatModel``: one request interface over LangChain chat models, with retries, usage and cache.

``ChatModel.complete`` sends one request, asks for JSON-schema constrained output when a schema
is given, validates the reply with pydantic, retries transient failures with exponential backoff
and jitter, counts tokens and cost per role, and raises ``LLMError`` with a ``kind`` the graph
can route on. Build one with ``agents.models.load_chat_model``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from agents.fake import ALL_ROLES, ScriptedChatModel
from agents.llm_cache import LLMCache
from agents.llm_errors import LLMError, classify_exception
from agents.pricing import Price
from agents.structured import parse_reply


@dataclass
class LLMReply:
    """One successful completion.

    ``seconds`` is the wall time of ``complete`` including retries; ``attempts`` counts requests
    sent (0 for a cache hit, whose token counts are those of the original call and cost 0).
    ``prompt_cached_tokens`` is how many of ``input_tokens`` the server took from its own prompt
    cache, as it reports them (llama.cpp and OpenAI do; 0 when unreported or for a cache hit):
    on a CPU a call costs roughly what it reads past that cache.
    """

    text: str
    parsed: BaseModel | None
    input_tokens: int
    output_tokens: int
    seconds: float
    cached: bool
    cost_usd: float
    attempts: int = 1
    prompt_cached_tokens: int = 0


def _to_langchain(messages: list[dict[str, str]]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    out = []
    for i, m in enumerate(messages):
        if m.get("role") not in kinds or not isinstance(m.get("content"), str):
            raise ValueError(
                f"messages[{i}] must be {{'role': system|user|assistant, 'content': str}}, "
                f"got {m!r}"
            )
        out.append(kinds[m["role"]](content=m["content"]))
    return out


def _text_of(message: AIMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in message.content)


@dataclass
class _Usage:
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0


def response_format_fields(schema: type[BaseModel]) -> dict[str, Any]:
    """Return the OpenAI ``response_format`` request field for ``schema`` (not strict mode)."""
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": schema.__name__,
                "schema": schema.model_json_schema(),
                "strict": False,
            },
        }
    }


class ChatModel:
    """A chat model resolved from a provider string; see ``complete``.

    Attributes:
        spec: the provider string as the user wrote it.
        name: the resolved name shown in traces (fakes end in ``(FAKE)``).
        is_fake: True for scripted models.
        price: USD per 1M tokens, or None for a billed model missing from the price table.
    """

    def __init__(
        self,
        *,
        spec: str,
        name: str,
        is_fake: bool,
        make_backend: Callable[[str], BaseChatModel],
        cache: LLMCache | None,
        max_retries: int,
        backoff_base: float,
        price: Price | None,
        constrained: bool,
        preflight: Callable[[float], None] | None = None,
        request_hooks: Callable[[], Any] | None = None,
        schema_fields: Callable[[type[BaseModel]], dict[str, Any]] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.spec = spec
        self.name = name
        self.is_fake = is_fake
        self.price = price
        self.cache = cache
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = 30.0
        self._make_backend = make_backend
        self._constrained = constrained
        self._preflight = preflight
        # Returns an object with before_request(role, messages) -> extra body fields and
        # after_reply(role, messages, extra), or None (the embedded model's prefix store).
        self._request_hooks = request_hooks
        # Request fields that constrain a reply to a schema: OpenAI's response_format unless the
        # server has a better way (the embedded llama.cpp takes a grammar for compact JSON).
        self._schema_fields = schema_fields or response_format_fields
        self._backends: dict[str, BaseChatModel] = {}
        self._backend_lock = threading.Lock()  # held while a backend starts (seconds for local)
        self._lock = threading.Lock()
        self._usage: dict[str, _Usage] = {}

    def __repr__(self) -> str:
        return f"ChatModel({self.name!r})"

    def backend(self, role: str) -> BaseChatModel:
        """Return (creating on first use) the LangChain model serving ``role``.

        Raises:
            LLMError: the backend cannot be created (kind ``unavailable``).
        """
        with self._backend_lock:
            if role not in self._backends:
                self._backends[role] = self._make_backend(role)
            return self._backends[role]

    def usage(self) -> dict[str, dict[str, Any]]:
        """Return per-role counters (calls, attempts, retries, failures, cache hits, tokens, cost).

        Tokens and cost count billed requests only (cache hits are free); ``priced`` is False for
        a billed model whose price is unknown (its cost then reads 0).
        """
        with self._lock:
            return {
                role: {**asdict(u), "priced": self.price is not None}
                for role, u in self._usage.items()
            }

    def _account(self, role: str, **deltas: float) -> None:
        with self._lock:
            usage = self._usage.setdefault(role, _Usage())
            for key, value in deltas.items():
                setattr(usage, key, getattr(usage, key) + value)

    def _cost(self, input_tokens: int, output_tokens: int) -> float:
        return self.price.cost(input_tokens, output_tokens) if self.price else 0.0

    def _request(
        self,
        role: str,
        messages: list[dict[str, str]],
        schema: type[BaseModel] | None,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> tuple[str, int, int, int]:
        """Send one request; return (text, input, output, server-cached input tokens).

        Raises:
            LLMError: the request failed or its reply is unusable.
        """
        options: dict[str, Any] = {
            "temperature": temperature,
            "seed": seed,
            "max_tokens": max_tokens,
        }
        if schema is not None and self._constrained:
            # Sent as extra_body, not response_format=, so langchain-openai uses the plain create()
            # call: its parse() path raises on finish_reason=length and drops the partial text.
            options["extra_body"] = self._schema_fields(schema)
        chat = _to_langchain(messages)
        try:
            backend = self.backend(role)
            hooks = self._request_hooks() if self._request_hooks else None
            extra = hooks.before_request(role, messages) if hooks else {}
            if extra:
                options["extra_body"] = {**options.get("extra_body", {}), **extra}
            reply = backend.invoke(chat, **options)
        except Exception as exc:
            error = classify_exception(exc, self.name)
            if error is None:
                raise
            raise error from None
        if hooks:
            hooks.after_reply(role, messages, extra)
        text = _text_of(reply)
        usage = reply.usage_metadata or {}
        n_in, n_out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        n_cached = int((usage.get("input_token_details") or {}).get("cache_read") or 0)
        self._account(
            role, input_tokens=n_in, output_tokens=n_out, cost_usd=self._cost(n_in, n_out)
        )
        finish = reply.response_metadata.get("finish_reason")
        refusal = reply.additional_kwargs.get("refusal")
        if refusal or finish == "content_filter":
            raise LLMError(
                "refusal",
                f"{self.name} refused: {str(refusal or 'content filter')[:300]}",
                text=refusal or text,
            )
        if finish == "length":
            raise LLMError(
                "truncated",
                f"the reply hit max_tokens={max_tokens} before it ended: "
                f"{' '.join(text.split())[:300]}",
                text=text,
            )
        if not text.strip():
            raise LLMError("empty", f"{self.name} returned an empty reply")
        return text, n_in, n_out, n_cached

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        role: str,
        schema: type[BaseModel] | None = None,
        temperature: float = 0.7,
        seed: int = 0,
        max_tokens: int = 256,
    ) -> LLMReply:
        """Send a chat to the model and return its reply, parsed into ``schema`` when given.

        Transient failures (rate limit, 5xx, timeout, connection, empty or truncated output) are
        retried up to ``max_retries`` times with exponential backoff and jitter. A reply that is
        complete but does not fit ``schema`` is cached (so a replay sees the same reply) and
        raised as ``malformed``.

        Args:
            messages: ``{"role": "system"|"user"|"assistant", "content": str}`` dicts.
            role: the agent calling (``designer``, ``reflector``); usage is counted per role.
            schema: pydantic model the reply must match, or None for free text.
            temperature: sampling temperature for this call.
            seed: sampling seed (part of the cache key: vary it to get a fresh sample).
            max_tokens: cap on the reply length.

        Raises:
            LLMError: the call failed; ``kind`` says how, ``text`` holds any raw reply.
        """
        start = time.monotonic()
        self._account(role, calls=1)
        key = None
        if self.cache is not None:
            key = LLMCache.key(self.name, role, messages, schema, temperature, seed, max_tokens)
            hit = self.cache.get(key)
            if hit is not None:
                self._account(role, cache_hits=1)
                parsed = self._parse_or_raise(role, hit.text, schema)
                return LLMReply(
                    text=hit.text,
                    parsed=parsed,
                    input_tokens=hit.input_tokens,
                    output_tokens=hit.output_tokens,
                    seconds=time.monotonic() - start,
                    cached=True,
                    cost_usd=0.0,
                    attempts=0,
                )
        attempt, resamples = 0, 0
        while True:
            attempt += 1
            self._account(role, attempts=1)
            try:
                # After a cut-off or empty reply, resample with another seed: the same seed
                # reproduces the same reply on deterministic backends.
                text, n_in, n_out, n_cached = self._request(
                    role, messages, schema, temperature, seed + resamples, max_tokens
                )
                if schema is not None:  # JSON that never closes is a cut-off reply: retry it
                    parse_reply(text, schema, on_truncated_only=True)
            except LLMError as error:
                if not error.retryable or attempt > self.max_retries:
                    self._account(role, failures=1, seconds=time.monotonic() - start)
                    raise
                self._account(role, retries=1)
                resamples += error.kind in ("truncated", "empty")
                time.sleep(self._delay(attempt, error))
                continue
            if key is not None:
                self.cache.put(
                    key,
                    model=self.name,
                    role=role,
                    text=text,
                    input_tokens=n_in,
                    output_tokens=n_out,
                )
            parsed = self._parse_or_raise(role, text, schema, start=start)
            seconds = time.monotonic() - start
            self._account(role, seconds=seconds)
            return LLMReply(
                text=text,
                parsed=parsed,
                input_tokens=n_in,
                output_tokens=n_out,
                seconds=seconds,
                cached=False,
                cost_usd=self._cost(n_in, n_out),
                attempts=attempt,
                prompt_cached_tokens=n_cached,
            )

    def _parse_or_raise(
        self, role: str, text: str, schema: type[BaseModel] | None, start: float | None = None
    ) -> BaseModel | None:
        try:
            return parse_reply(text, schema) if schema is not None else None
        except LLMError:
            self._account(role, failures=1, seconds=time.monotonic() - start if start else 0.0)
            raise

    def _delay(self, attempt: int, error: LLMError) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, self.backoff_max)
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return delay * random.uniform(
            0.5, 1.0
        )  # jitter keeps parallel workers from retrying in step

    def check(self, timeout_s: float = 10) -> None:
        """Fail fast when the model cannot be used (see ``check_model``); fakes always pass."""
        if self._preflight is not None:
            self._preflight(timeout_s)

    def scripted_backend(self, role: str = ALL_ROLES) -> ScriptedChatModel:
        """Return the scripted model answering ``role`` (fakes only), to inspect ``calls``."""
        backend = self.backend(role)
        if not isinstance(backend, ScriptedChatModel):
            raise TypeError(f"{self.name} is not a scripted model")
        return backend
