"""Chat models behind one interface: provider strings, structured output, retries, cost, cache.

``load_chat_model(spec)`` turns a provider string into a ``ChatModel``:

- ``openai:<model>``: OpenAI (key from ``OPENAI_API_KEY``);
- ``openai-compatible:<base_url>:<model>``: vLLM, llama.cpp server, Ollama's ``/v1`` endpoint;
- ``local``: the embedded Qwen2.5-Coder-1.5B, served in-process (see ``agents.embedded``);
- ``local:<path.gguf>``: any GGUF file, served the same way;
- ``fake:<script.json>``: scripted replies for tests and demos (see ``agents.fake``).

``replay_model(name, cache)`` answers only from a run's LLM reply cache (a replay bundle's).

The returned ``ChatModel`` (``agents.chat_model``) validates replies against a pydantic schema,
retries transient failures, counts tokens and cost per role and raises typed ``LLMError``s.
No API key appears in an error message, the cache key or the cache file.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from agents import embedded
from agents.chat_model import ChatModel, LLMReply
from agents.fake import ALL_ROLES, ScriptedChatModel, ScriptError, load_script, parse_script
from agents.llm_cache import LLMCache
from agents.llm_errors import KINDS, LLMError, ModelSpecError, classify_exception, redact
from agents.pricing import FREE, load_price_overrides, price_for

__all__ = [
    "KINDS",
    "VALID_FORMS",
    "ChatModel",
    "LLMError",
    "LLMReply",
    "ModelSpec",
    "ModelSpecError",
    "check_model",
    "load_chat_model",
    "parse_spec",
    "redact",
    "replay_model",
    "scripted_model",
]

# One line, so a CLI can print the error as one line.
VALID_FORMS = (
    "openai:<model> (e.g. openai:gpt-4o), "
    "openai-compatible:<base_url>:<model> (e.g. openai-compatible:http://127.0.0.1:8000/v1:qwen), "
    "local (the embedded model), local:<path.gguf>, fake:<script.json> (tests and demos)"
)
# On 2 busy CPU cores a cold 4k-token prompt plus 200 output tokens can take minutes; the timeout
# of an in-process server only has to catch a hung server.
LOCAL_MIN_TIMEOUT_S = 1800.0
_URL_AND_MODEL = re.compile(
    r"^(?P<url>https?://(?:\[[0-9A-Fa-f:.]+\]|[^/:@\s]+)(?::\d+)?(?:/[^:\s]*)?)(?::(?P<model>.*))?$"
)
_URL_USERINFO = re.compile(r"(://)[^/@\s]*@")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed provider string."""

    provider: str  # openai | openai-compatible | local | fake
    model: str  # model id, absolute GGUF path ("" for the embedded model) or script path
    base_url: str | None = None


def _spec_error(spec: str, problem: str) -> ModelSpecError:
    # A password typed into a URL must not be echoed into a terminal or CI log.
    shown = redact(_URL_USERINFO.sub(r"\1[REDACTED]@", spec or ""))
    return ModelSpecError(f"bad model {shown!r}: {problem}. Valid forms: {VALID_FORMS}")


def parse_spec(spec: str) -> ModelSpec:
    """Parse a provider string (see ``VALID_FORMS``).

    Raises:
        ModelSpecError: unknown provider, missing part, missing GGUF or script file.
    """
    text = (spec or "").strip()
    provider, sep, rest = text.partition(":")
    if provider == "local":
        if not sep:
            return ModelSpec("local", "")
        path = Path(rest).expanduser()
        if not rest or not path.is_file():
            raise _spec_error(spec, f"GGUF file not found: {rest or '<empty path>'}")
        return ModelSpec("local", str(path.resolve()))
    if provider == "openai":
        if not rest.strip():
            raise _spec_error(spec, "missing the model name after 'openai:'")
        return ModelSpec("openai", rest.strip())
    if provider == "openai-compatible":
        match = _URL_AND_MODEL.match(rest)
        if "@" in rest.partition("://")[2].partition("/")[0]:
            raise _spec_error(
                spec,
                "credentials in the URL are not supported; put the key in "
                "RZNAS_OPENAI_COMPATIBLE_API_KEY",
            )
        if not match:
            raise _spec_error(
                spec, "the base URL must start with http:// or https:// (no user:password@)"
            )
        if not match["model"]:
            raise _spec_error(spec, "missing ':<model>' after the base URL")
        return ModelSpec("openai-compatible", match["model"], base_url=match["url"].rstrip("/"))
    if provider == "fake":
        if not rest:
            raise _spec_error(spec, "missing the script file after 'fake:'")
        return ModelSpec("fake", rest)
    raise _spec_error(spec, f"unknown provider {provider!r}" if text else "empty model string")


def _openai_client_key(provider: str) -> str:
    if provider == "openai":
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise LLMError(
                "unavailable",
                "OPENAI_API_KEY is not set: export your OpenAI API key as "
                "OPENAI_API_KEY, or pick another model (see docs/MODELS.md)",
                retryable=False,
            )
        return key
    # Self-hosted servers usually ignore the key; the client library insists on having one.
    # Never fall back to OPENAI_API_KEY: that would send the user's OpenAI key to a third party.
    return (os.environ.get("RZNAS_OPENAI_COMPATIBLE_API_KEY") or "not-needed").strip()


def _chat_openai(model: str, base_url: str | None, key: str, timeout_s: float) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    # max_retries=0: retries happen in ChatModel.complete, where they are counted and typed.
    return ChatOpenAI(model=model, base_url=base_url, api_key=key, timeout=timeout_s, max_retries=0)


def _probe_server(where: str, base_url: str | None, key: str, timeout_s: float) -> None:
    """List the server's models: proves it is reachable and accepts the key."""
    import openai

    client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
    try:
        client.models.list()
    except Exception as exc:
        error = classify_exception(exc, where)
        if error is None:
            raise
        if error.kind == "unavailable" and "HTTP 404" in error.message:
            return  # some servers do not implement /models; chat completions may still work
        hint = (
            " Is the server running, and is the URL right (it usually ends in /v1)?"
            if error.kind in ("connection", "timeout")
            else ""
        )
        raise LLMError("unavailable", f"{error.message}.{hint}", retryable=False) from None
    finally:
        client.close()


def _local_url(gguf: str) -> str:
    """Assemble the embedded GGUF if needed, start its server once, and return the /v1 URL."""
    try:
        path = Path(gguf) if gguf else embedded.ensure_model_file()
        return f"{embedded.server_url(path)}/v1"
    except embedded.EmbeddedModelError as exc:
        raise LLMError("unavailable", str(exc), retryable=False) from None


def _fake_factory(script: dict, timeout_s: float, where: str) -> Callable[[str], BaseChatModel]:
    fakes: dict[
        str, ScriptedChatModel
    ] = {}  # one FIFO per script entry, shared by the roles it serves

    def make(role: str) -> BaseChatModel:
        entry = role if role in script else ALL_ROLES
        if entry not in script:
            raise LLMError(
                "unavailable",
                f"{where} has no replies for role {role!r} "
                f"(it scripts: {', '.join(sorted(script))})",
                retryable=False,
            )
        if entry not in fakes:
            replies, repeat = script[entry]
            fakes[entry] = ScriptedChatModel(replies=replies, repeat=repeat, timeout_s=timeout_s)
        return fakes[entry]

    return make


def scripted_model(
    script: Any,
    *,
    label: str = "inline",
    cache: LLMCache | None = None,
    timeout_s: float = 120.0,
    max_retries: int = 3,
    backoff_base: float = 0.001,
    prices: dict | None = None,
) -> ChatModel:
    """Return a fake ``ChatModel`` answering from ``script`` (the ``fake:`` file format, in Python).

    Raises:
        ModelSpecError: the script is malformed.
    """
    try:
        parsed = parse_script(script, label)
    except ScriptError as exc:
        raise ModelSpecError(str(exc)) from None
    return _fake_model(
        f"fake:{label}",
        parsed,
        cache=cache,
        timeout_s=timeout_s,
        max_retries=max_retries,
        backoff_base=backoff_base,
        prices=prices,
    )


def _fake_model(
    spec: str,
    script: dict,
    *,
    cache: LLMCache | None,
    timeout_s: float,
    max_retries: int,
    backoff_base: float,
    prices: dict | None,
) -> ChatModel:
    name = f"{spec} (FAKE)"
    price = price_for(name, spec, billed=False, overrides=load_price_overrides(prices))
    return ChatModel(
        spec=spec,
        name=name,
        is_fake=True,
        make_backend=_fake_factory(script, timeout_s, spec),
        cache=cache,
        max_retries=max_retries,
        backoff_base=backoff_base,
        price=price,
        constrained=False,
    )


class ReplayChatModel(ChatModel):
    """A ``ChatModel`` that only answers from the LLM cache; see ``replay_model``.

    Attributes:
        replay_misses: requests the cache could not answer (each one means the replay diverged).
        replay_misses_by_role: the same, counted per role.
    """

    def __init__(self, name: str, cache: LLMCache) -> None:
        super().__init__(
            spec=f"replay:{name}",
            name=name,
            is_fake=name.endswith("(FAKE)"),
            make_backend=self._no_backend,
            cache=cache,
            max_retries=0,
            backoff_base=0.0,
            price=FREE,  # a replay answers from the cache and pays nothing
            constrained=False,
        )
        self.replay_misses = 0
        self.replay_misses_by_role: Counter[str] = Counter()
        self._miss_lock = threading.Lock()

    def _miss(self, role: str) -> LLMError:
        with self._miss_lock:
            self.replay_misses += 1
            self.replay_misses_by_role[role] += 1
        return LLMError(
            "unavailable",
            f"{role} request to {self.name} is not in the bundle's LLM cache: the replay diverged "
            "from the recorded run (another prompt, setting or code version asked something new)",
            retryable=False,
        )

    def _no_backend(self, role: str) -> BaseChatModel:
        raise LLMError("unavailable", f"{self.name} replays a recorded run: it has no backend",
                       retryable=False)

    def _request(self, role: str, *args: Any, **kwargs: Any) -> tuple[str, int, int]:
        # Reached only when the cache had no reply: never a network call or a model load.
        raise self._miss(role)


def replay_model(name: str, cache: LLMCache) -> ReplayChatModel:
    """Return a ``ChatModel`` named ``name`` that answers only from ``cache``.

    ``name`` is the resolved model name the recorded run used (``summary.json["models"]``), so
    the cache keys, which include it, match the original requests. A request the cache cannot
    answer raises ``LLMError`` kind ``unavailable`` (not retryable) and is counted in
    ``replay_misses``; nothing is sent anywhere and no model is loaded.
    """
    if cache is None:
        raise ValueError("replay_model needs the recorded run's LLM cache")
    return ReplayChatModel(name, cache)


def load_chat_model(
    spec: str,
    *,
    cache: LLMCache | None = None,
    timeout_s: float = 120.0,
    max_retries: int = 3,
    prices: dict | None = None,
    backoff_base: float | None = None,
) -> ChatModel:
    """Resolve a provider string (see ``VALID_FORMS``) into a ``ChatModel``.

    Nothing slow happens here: clients, the embedded model's assembly and its server start on
    first use or in ``check_model``.

    Args:
        spec: the provider string.
        cache: reply cache shared by all models of a run, or None for no caching.
        timeout_s: per-request timeout (local models use at least ``LOCAL_MIN_TIMEOUT_S``).
        max_retries: retries of a transient failure, on top of the first attempt.
        prices: price overrides, ``{model: {"input": usd_per_1m, "output": usd_per_1m}}``.
        backoff_base: first retry delay in seconds (default 1 s; 1 ms for fakes).

    Raises:
        ModelSpecError: the string is malformed, the provider unknown, a file missing.
    """
    parsed = parse_spec(spec)
    overrides = load_price_overrides(prices)
    if parsed.provider == "fake":
        try:
            script = load_script(parsed.model)
        except ScriptError as exc:
            raise _spec_error(spec, str(exc)) from None
        return _fake_model(
            f"fake:{parsed.model}",
            script,
            cache=cache,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base=0.001 if backoff_base is None else backoff_base,
            prices=prices,
        )
    backoff = 1.0 if backoff_base is None else backoff_base
    common = dict(
        spec=spec,
        is_fake=False,
        cache=cache,
        max_retries=max_retries,
        backoff_base=backoff,
        constrained=True,
    )
    if parsed.provider == "local":
        name = f"local:{parsed.model or embedded.MODEL_NAME}"
        local_timeout = max(timeout_s, LOCAL_MIN_TIMEOUT_S)

        def make_local(role: str) -> BaseChatModel:
            return _chat_openai(
                "local", _local_url(parsed.model), embedded.SERVER_API_KEY, local_timeout
            )

        def start_local(_timeout: float) -> None:
            _local_url(parsed.model)  # assemble the GGUF and start llama.cpp now, not mid-run

        def prefixes() -> embedded.SlotPrefixes | None:
            return embedded.slot_prefixes(
                Path(parsed.model) if parsed.model else embedded.default_model_path()
            )

        return ChatModel(
            name=name,
            make_backend=make_local,
            preflight=start_local,
            request_hooks=prefixes,
            schema_fields=embedded.compact_json_fields,
            price=price_for(
                name, parsed.model or embedded.MODEL_NAME, billed=False, overrides=overrides
            ),
            **common,
        )
    billed = parsed.provider == "openai"
    name = (
        f"openai:{parsed.model}"
        if billed
        else f"openai-compatible:{parsed.base_url}:{parsed.model}"
    )

    def make(role: str) -> BaseChatModel:
        return _chat_openai(
            parsed.model, parsed.base_url, _openai_client_key(parsed.provider), timeout_s
        )

    def preflight(probe_timeout_s: float) -> None:
        _probe_server(name, parsed.base_url, _openai_client_key(parsed.provider), probe_timeout_s)

    return ChatModel(
        name=name,
        make_backend=make,
        preflight=preflight,
        price=price_for(name, parsed.model, billed=billed, overrides=overrides),
        **common,
    )


def check_model(model: ChatModel, timeout_s: float = 10) -> None:
    """Fail fast, before a run starts, when ``model`` cannot answer.

    Checks the API key is set and the server answers (OpenAI and openai-compatible, within
    ``timeout_s``), or assembles the embedded model and starts its server (``local``; this may
    take a while the first time). Fakes always pass.

    Raises:
        LLMError: kind ``unavailable``, with a message saying what to fix.
    """
    model.check(timeout_s)
