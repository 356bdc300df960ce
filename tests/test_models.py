"""The chat-model layer: provider strings, fakes, structured output, retries, usage, secrets.

Run: .venv/bin/python -m pytest -q tests/test_models.py
The openai-compatible path is exercised end to end against a tiny HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import pickle
import socket
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from agents.fake import ScriptExhaustedError
from agents.llm_cache import LLMCache
from agents.models import (
    LLMError,
    ModelSpecError,
    check_model,
    load_chat_model,
    parse_spec,
    scripted_model,
)
from agents.pricing import BUILTIN_PRICES, PriceTableError, load_price_overrides, price_for
from tests.openai_stub import StubServer, completion, error_body

FIXTURES = Path(__file__).parent / "fixtures"
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
MSGS = [
    {"role": "system", "content": "You mutate NB201 cells."},
    {"role": "user", "content": '{"arch": "x"}'},
]


class Proposal(BaseModel):
    arch: str
    rationale: str


def valid(rationale: str = "r") -> str:
    return json.dumps({"arch": ARCH, "rationale": rationale})


# --- provider strings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "provider", "model", "base_url"),
    [
        ("openai:gpt-4o", "openai", "gpt-4o", None),
        (
            "openai-compatible:http://127.0.0.1:8000/v1:qwen2.5-coder",
            "openai-compatible",
            "qwen2.5-coder",
            "http://127.0.0.1:8000/v1",
        ),
        # Ollama model tags contain ':' too; the URL ends at the first ':' after its path.
        (
            "openai-compatible:http://localhost:11434/v1:qwen2.5-coder:1.5b",
            "openai-compatible",
            "qwen2.5-coder:1.5b",
            "http://localhost:11434/v1",
        ),
        (
            "openai-compatible:https://llm.example.org/v1/:m",
            "openai-compatible",
            "m",
            "https://llm.example.org/v1",
        ),
        (
            "openai-compatible:http://[::1]:8000/v1:m",
            "openai-compatible",
            "m",
            "http://[::1]:8000/v1",
        ),
        (
            "openai-compatible:http://gpu-box:8000:m",
            "openai-compatible",
            "m",
            "http://gpu-box:8000",
        ),
        ("local", "local", "", None),
        ("  local  ", "local", "", None),
    ],
)
def test_provider_strings_parse(spec, provider, model, base_url):
    parsed = parse_spec(spec)
    assert (parsed.provider, parsed.model, parsed.base_url) == (provider, model, base_url)


def test_local_path_and_fake_path_parse(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(16))
    assert parse_spec(f"local:{gguf}").model == str(gguf.resolve())
    model = load_chat_model(f"local:{gguf}")
    assert model.name == f"local:{gguf.resolve()}" and not model.is_fake
    fake = load_chat_model(f"fake:{FIXTURES / 'fake_roles.json'}")
    assert fake.is_fake and fake.name.endswith("(FAKE)") and "fake_roles.json" in fake.name
    assert load_chat_model("local").name == "local:qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert load_chat_model("openai:gpt-4o").name == "openai:gpt-4o"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("anthropic:claude-3", "unknown provider 'anthropic'"),
        ("gpt-4o", "unknown provider 'gpt-4o'"),
        ("", "empty model string"),
        ("openai:", "missing the model name"),
        ("openai-compatible:http://127.0.0.1:8000/v1", "missing ':<model>'"),
        ("openai-compatible:127.0.0.1:8000:m", "must start with http://"),
        ("openai-compatible:http://user:pw@host/v1:m", "RZNAS_OPENAI_COMPATIBLE_API_KEY"),
        ("openai-compatible:http://h:8000/v1:Qwen/Qwen2.5-7B:x", None),
        ("local:/no/such/model.gguf", "GGUF file not found: /no/such/model.gguf"),
        ("fake:/no/such/script.json", "fake script not found"),
    ],
)
def test_bad_provider_strings_are_clear(spec, problem):
    if problem is None:  # a model id with '/' and ':' is fine
        assert parse_spec(spec).model == "Qwen/Qwen2.5-7B:x"
        return
    with pytest.raises(ModelSpecError) as info:
        load_chat_model(spec)
    message = str(info.value)
    assert problem in message and "\n" not in message  # a CLI prints it as one line
    for form in (
        "openai:<model>",
        "openai-compatible:<base_url>:<model>",
        "local:<path.gguf>",
        "fake:<script.json>",
    ):
        assert form in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2", "not valid JSON"),
        ('[{"error": "oops"}]', "unknown error 'oops'"),
        ('[{"txt": "x"}]', "unknown keys ['txt']"),
        ("[42]", "must be a string or an object"),
        ('{"replies": [], "repeat": true}', "repeat needs at least one reply"),
        ('{"designer": "x"}', "expected a list of replies"),
    ],
)
def test_bad_fake_scripts_name_the_entry(tmp_path, content, problem):
    script = tmp_path / "s.json"
    script.write_text(content)
    with pytest.raises(ModelSpecError, match="s.json") as info:
        load_chat_model(f"fake:{script}")
    assert problem in str(info.value)


# --- scripted fake: structured output and failures ----------------------------------------------


def test_json_reply_is_parsed_from_fences_and_prose():
    model = scripted_model(
        [f"Sure, here it is:\n```json\n{valid('fenced')}\n```\nGood luck!", valid("bare")]
    )
    first = model.complete(MSGS, role="designer", schema=Proposal)
    assert isinstance(first.parsed, Proposal) and first.parsed.rationale == "fenced"
    assert first.text.startswith("Sure, here it is")  # the raw text is kept as the model wrote it
    assert model.complete(MSGS, role="designer", schema=Proposal).parsed.rationale == "bare"
    sent = model.scripted_backend().calls[0]
    assert sent == MSGS


def test_free_text_without_schema():
    reply = scripted_model(["just words"]).complete(MSGS, role="reflector")
    assert reply.text == "just words" and reply.parsed is None and reply.input_tokens > 0


@pytest.mark.parametrize(
    ("text", "kind", "fragment"),
    [
        ("I think you should widen the network.", "malformed", "no JSON object"),
        ('{"arch": 3}', "malformed", "does not match Proposal"),
        ('{"arch": "|nor_conv_3x3~0|+|", "rationale": "cut', "truncated", "stops before it closes"),
    ],
)
def test_unusable_replies_are_typed(text, kind, fragment):
    model = scripted_model([text] * 4, max_retries=3)
    with pytest.raises(LLMError) as info:
        model.complete(MSGS, role="designer", schema=Proposal)
    err = info.value
    assert err.kind == kind and fragment in err.message
    assert err.text == text  # the raw reply travels with the error
    assert text.split()[0] in err.message  # and a shortened copy is in the message
    assert err.retryable == (kind == "truncated")


def test_every_scripted_failure_maps_to_its_kind():
    expected = ["timeout", "connection", "api", "empty", "truncated", "refusal", "malformed"]
    model = load_chat_model(f"fake:{FIXTURES / 'fake_failures.json'}", max_retries=0)
    for kind in expected:
        with pytest.raises(LLMError) as info:
            model.complete(MSGS, role="designer", schema=Proposal)
        assert info.value.kind == kind
    assert (
        model.complete(MSGS, role="designer", schema=Proposal).parsed.rationale == "after the storm"
    )
    assert info.value.retryable is False  # malformed is the graph's to handle (re-prompt), not ours


def test_refusal_keeps_the_refusal_text():
    model = scripted_model([{"error": "refusal", "text": "I won't design networks."}])
    with pytest.raises(LLMError) as info:
        model.complete(MSGS, role="designer", schema=Proposal)
    assert info.value.kind == "refusal" and not info.value.retryable
    assert "I won't design networks." in info.value.message


def test_rate_limit_then_success_counts_the_retry():
    model = scripted_model([{"error": "rate_limit"}, {"error": "server"}, valid()], max_retries=3)
    reply = model.complete(MSGS, role="designer", schema=Proposal)
    assert reply.attempts == 3 and reply.parsed.arch == ARCH
    usage = model.usage()["designer"]
    assert (
        usage["calls"] == 1
        and usage["attempts"] == 3
        and usage["retries"] == 2
        and usage["failures"] == 0
    )


def test_rate_limit_exhausted_raises_after_max_retries():
    model = scripted_model([{"error": "rate_limit"}] * 3, max_retries=2)
    with pytest.raises(LLMError) as info:
        model.complete(MSGS, role="designer")
    assert info.value.kind == "rate_limit" and info.value.retryable
    assert len(model.scripted_backend().calls) == 3  # first try + 2 retries, no more
    assert model.usage()["designer"]["failures"] == 1


def test_truncated_retry_changes_the_seed():
    model = scripted_model([{"error": "truncated"}, valid()], max_retries=1)
    model.complete(MSGS, role="designer", schema=Proposal, seed=7)
    seeds = [kw["seed"] for kw in model.scripted_backend().call_kwargs]
    assert seeds[0] == 7 and seeds[1] != 7  # the same seed would just truncate again


def test_slow_reply_times_out():
    model = scripted_model([{"sleep": 5, "text": valid()}], timeout_s=0.05, max_retries=0)
    start = time.monotonic()
    with pytest.raises(LLMError) as info:
        model.complete(MSGS, role="designer")
    assert info.value.kind == "timeout" and time.monotonic() - start < 2


def test_script_running_out_raises_instead_of_cycling():
    model = scripted_model([valid()])
    model.complete(MSGS, role="designer")
    with pytest.raises(ScriptExhaustedError, match="called 2 times but its script has 1 replies"):
        model.complete(MSGS, role="designer")


def test_repeat_cycles_and_roles_split():
    demo = load_chat_model(f"fake:{FIXTURES / 'fake_demo_repeat.json'}")
    assert (
        len({demo.complete(MSGS, role="designer", schema=Proposal, seed=i).text for i in range(3)})
        == 1
    )
    both = load_chat_model(f"fake:{FIXTURES / 'fake_roles.json'}")
    critique = both.complete(MSGS, role="reflector")
    assert "what_changed" in critique.text
    first = both.complete(MSGS, role="designer", schema=Proposal)
    assert first.parsed.rationale.startswith("more 3x3")
    assert (
        both.complete(MSGS, role="designer", schema=Proposal).attempts == 2
    )  # scripted rate limit
    with pytest.raises(LLMError) as info:
        both.complete(MSGS, role="critic")
    assert info.value.kind == "unavailable" and "critic" in info.value.message


def test_request_options_reach_the_model():
    model = scripted_model([valid()])
    model.complete(MSGS, role="designer", temperature=0.2, seed=11, max_tokens=99)
    kwargs = model.scripted_backend().call_kwargs[0]
    assert (kwargs["temperature"], kwargs["seed"], kwargs["max_tokens"]) == (0.2, 11, 99)


def test_messages_must_be_role_content_dicts():
    with pytest.raises(ValueError, match="messages\\[0\\]"):
        scripted_model([valid()]).complete([{"role": "robot", "content": "x"}], role="designer")


# --- cache and usage ----------------------------------------------------------------------------


def test_cache_hit_skips_the_model(tmp_path):
    cache = LLMCache(tmp_path / "llm.sqlite")
    model = scripted_model([valid("first"), valid("second")], cache=cache)
    fresh = model.complete(MSGS, role="designer", schema=Proposal, seed=1)
    again = model.complete(MSGS, role="designer", schema=Proposal, seed=1)
    assert not fresh.cached and again.cached and again.cost_usd == 0.0
    assert again.text == fresh.text and again.parsed == fresh.parsed
    assert len(model.scripted_backend().calls) == 1
    other_seed = model.complete(MSGS, role="designer", schema=Proposal, seed=2)
    assert other_seed.parsed.rationale == "second" and not other_seed.cached
    assert model.usage()["designer"]["cache_hits"] == 1


def test_cached_malformed_reply_replays_as_malformed(tmp_path):
    cache = LLMCache(tmp_path / "llm.sqlite")
    model = scripted_model(["no json here"], cache=cache)
    for _ in range(2):  # the second time comes from the cache, the script has one reply only
        with pytest.raises(LLMError, match="no JSON object"):
            model.complete(MSGS, role="designer", schema=Proposal)
    assert len(cache) == 1


def test_cache_is_shared_across_model_objects(tmp_path):
    path = tmp_path / "llm.sqlite"
    scripted_model([valid("paid once")], cache=LLMCache(path)).complete(
        MSGS, role="designer", schema=Proposal
    )
    resumed = scripted_model([], cache=LLMCache(path))  # a resumed run: nothing left to pay for
    reply = resumed.complete(MSGS, role="designer", schema=Proposal)
    assert reply.cached and reply.parsed.rationale == "paid once"


def test_usage_and_cost_per_role():
    model = scripted_model(
        {"designer": [valid()] * 2, "reflector": ["ok"]}, prices={"fake:inline": [1.0, 2.0]}
    )
    a = model.complete(MSGS, role="designer", schema=Proposal)
    model.complete(MSGS, role="designer", schema=Proposal, seed=1)
    model.complete(MSGS, role="reflector")
    usage = model.usage()
    assert set(usage) == {"designer", "reflector"}
    assert usage["designer"]["calls"] == 2 and usage["reflector"]["calls"] == 1
    assert usage["designer"]["input_tokens"] == 2 * a.input_tokens
    assert a.cost_usd == pytest.approx((a.input_tokens * 1.0 + a.output_tokens * 2.0) / 1e6)
    assert usage["designer"]["cost_usd"] == pytest.approx(2 * a.cost_usd)


def test_price_table(tmp_path, monkeypatch):
    monkeypatch.delenv("RZNAS_PRICES", raising=False)
    none = load_price_overrides()
    assert (
        price_for("openai:gpt-4o", "gpt-4o", billed=True, overrides=none)
        == BUILTIN_PRICES["gpt-4o"]
    )
    dated = price_for(
        "openai:gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18", billed=True, overrides=none
    )
    assert dated == BUILTIN_PRICES["gpt-4o-mini"]
    assert price_for("openai:brand-new", "brand-new", billed=True, overrides=none) is None
    assert price_for("local:x", "x", billed=False, overrides=none).input == 0.0
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"gpt-4o": {"input": 1, "output": 2}, "my-vllm-model": [0.1, 0.2]}))
    monkeypatch.setenv("RZNAS_PRICES", str(table))
    overrides = load_price_overrides({"gpt-4o": [3, 4]})
    assert (
        price_for("openai:gpt-4o", "gpt-4o", billed=True, overrides=overrides).input == 3.0
    )  # dict wins
    assert (
        price_for(
            "openai-compatible:http://h/v1:my-vllm-model",
            "my-vllm-model",
            billed=False,
            overrides=overrides,
        ).output
        == 0.2
    )
    with pytest.raises(PriceTableError, match="'bad'"):
        load_price_overrides({"bad": "cheap"})


# --- openai-compatible over HTTP (the stub server is in tests/openai_stub.py) --------------------


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


def test_server_reported_prompt_cache_reaches_the_reply(stub):
    model = load_chat_model(f"openai-compatible:{stub.url}:m", backoff_base=0.01)
    stub.add(200, completion(valid("cached"), cached_tokens=960))
    reply = model.complete(MSGS, role="designer", schema=Proposal, temperature=0.4, seed=5)
    assert (reply.input_tokens, reply.prompt_cached_tokens) == (1000, 960)


def test_openai_compatible_end_to_end(stub, tmp_path):
    model = load_chat_model(
        f"openai-compatible:{stub.url}:m", prices={"m": [2.0, 4.0]}, backoff_base=0.01
    )
    check_model(model)  # GET /v1/models answers
    stub.add(429, error_body("slow down", "rate_limit_error"), headers={"retry-after": "0.01"})
    stub.add(200, completion(valid("over http")))
    reply = model.complete(
        MSGS, role="designer", schema=Proposal, temperature=0.4, seed=5, max_tokens=77
    )
    assert reply.parsed.rationale == "over http" and reply.attempts == 2
    assert (reply.input_tokens, reply.output_tokens) == (1000, 50)
    assert reply.prompt_cached_tokens == 0  # the server reported no prompt cache
    assert reply.cost_usd == pytest.approx((1000 * 2.0 + 50 * 4.0) / 1e6)
    sent = stub.requests[-1]["body"]
    assert sent["model"] == "m" and sent["temperature"] == 0.4 and sent["seed"] == 5
    assert 77 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))
    assert sent["messages"] == MSGS
    schema = sent["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["schema"]["required"] == [
        "arch",
        "rationale",
    ]
    assert model.usage()["designer"]["retries"] == 1


def _local_model_on(stub, monkeypatch):
    """The ``local`` model, its llama.cpp server replaced by the stub (same request path)."""
    from agents import models

    monkeypatch.setattr(models, "_local_url", lambda gguf: f"{stub.url}/v1")
    monkeypatch.setattr(models.embedded, "slot_prefixes", lambda path: None)
    return load_chat_model("local", backoff_base=0.01)


def test_local_model_asks_llama_cpp_for_compact_json(stub, monkeypatch):
    model = _local_model_on(stub, monkeypatch)
    stub.add(200, completion(valid("compact")))
    reply = model.complete(MSGS, role="designer", schema=Proposal, temperature=0.2, seed=1,
                           max_tokens=50)
    assert reply.parsed.rationale == "compact"
    sent = stub.requests[-1]["body"]
    assert "response_format" not in sent  # llama.cpp's server drops x-guidance from there
    import xllamacpp

    spec = {"x-guidance": {"whitespace_flexible": False, "key_separator": ": ",
                           "item_separator": ", "}, **Proposal.model_json_schema()}
    assert sent["grammar"] == xllamacpp.json_schema_to_grammar(spec)
    if sent["grammar"].startswith("%llguidance"):  # the wheels on PyPI: llguidance reads the key
        rule = sent["grammar"].split("\n", 1)[1]
        assert json.loads(rule.removeprefix("start: %json ")) == spec


def test_local_model_falls_back_to_response_format_when_no_grammar_is_made(stub, monkeypatch):
    import xllamacpp

    def broken(schema):
        raise RuntimeError("unsupported schema")

    monkeypatch.setattr(xllamacpp, "json_schema_to_grammar", broken)
    model = _local_model_on(stub, monkeypatch)
    stub.add(200, completion(valid("portable")))
    model.complete(MSGS, role="designer", schema=Proposal, temperature=0.2, seed=1, max_tokens=50)
    sent = stub.requests[-1]["body"]
    assert "grammar" not in sent
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["arch", "rationale"]


@pytest.mark.parametrize(
    ("status", "body", "finish", "kind"),
    [
        (200, completion('{"arch": "|nor_conv', finish="length"), None, "truncated"),
        (200, completion(None, refusal="I can't help with that."), None, "refusal"),
        (200, completion(""), None, "empty"),
        (500, error_body("boom", "server_error"), None, "api"),
        (400, error_body("context length exceeded", "invalid_request_error"), None, "api"),
        (404, error_body("model 'm' not found", "not_found"), None, "unavailable"),
    ],
)
def test_openai_compatible_failures(stub, status, body, finish, kind):
    for _ in range(2):
        stub.add(status, body)
    model = load_chat_model(f"openai-compatible:{stub.url}:m", max_retries=1, backoff_base=0.001)
    with pytest.raises(LLMError) as info:
        model.complete(MSGS, role="designer", schema=Proposal)
    assert info.value.kind == kind
    retried = kind in ("truncated", "empty", "api") and status != 400
    assert len(stub.requests) == (2 if retried else 1)


def test_openai_compatible_timeout(stub):
    stub.add(200, completion(valid()), delay=3)
    model = load_chat_model(f"openai-compatible:{stub.url}:m", timeout_s=0.3, max_retries=0)
    start = time.monotonic()
    with pytest.raises(LLMError) as info:
        model.complete(MSGS, role="designer")
    assert info.value.kind == "timeout" and time.monotonic() - start < 2.5


def test_openai_provider_uses_key_and_builtin_price(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key-000000000000")
    monkeypatch.setenv(
        "OPENAI_BASE_URL", stub.url
    )  # the openai SDK honours it; here it points at the stub
    stub.add(200, completion(valid()))
    model = load_chat_model("openai:gpt-4o")
    reply = model.complete(MSGS, role="designer", schema=Proposal)
    price = BUILTIN_PRICES["gpt-4o"]
    assert reply.cost_usd == pytest.approx((1000 * price.input + 50 * price.output) / 1e6)
    assert stub.requests[-1]["headers"]["authorization"] == "Bearer sk-test-openai-key-000000000000"


def test_missing_openai_key_is_named(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = load_chat_model("openai:gpt-4o")
    for call in (lambda: check_model(model), lambda: model.complete(MSGS, role="designer")):
        with pytest.raises(LLMError) as info:
            call()
        assert info.value.kind == "unavailable" and "OPENAI_API_KEY" in info.value.message


def test_unreachable_server_fails_fast():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = load_chat_model(f"openai-compatible:http://127.0.0.1:{port}/v1:m")
    start = time.monotonic()
    with pytest.raises(LLMError) as info:
        check_model(model, timeout_s=3)
    assert time.monotonic() - start < 5
    assert info.value.kind == "unavailable"
    assert f"127.0.0.1:{port}" in info.value.message and "server running" in info.value.message


def test_api_keys_never_leak(stub, tmp_path, monkeypatch):
    secret = "planted-secret-7f3a9c2e41d8b6"
    monkeypatch.setenv("RZNAS_OPENAI_COMPATIBLE_API_KEY", secret)
    echo = lambda handler: error_body(f"bad key {handler.headers['Authorization']} ({secret})")  # noqa: E731
    stub.add(401, echo)  # check_model's GET /models
    stub.add(401, echo)
    stub.add(200, completion(valid()))
    cache_path = tmp_path / "llm.sqlite"
    model = load_chat_model(f"openai-compatible:{stub.url}:m", cache=LLMCache(cache_path))
    errors = []
    for call in (lambda: check_model(model), lambda: model.complete(MSGS, role="designer")):
        with pytest.raises(LLMError) as info:
            call()
        errors.append(info.value)
    assert all(e.kind == "unavailable" for e in errors)
    reply = model.complete(MSGS, role="designer", schema=Proposal)
    assert stub.requests[-1]["headers"]["authorization"] == f"Bearer {secret}"  # it was really sent
    for text in (
        [str(e) for e in errors]
        + [repr(e) for e in errors]
        + [model.name, repr(reply), str(model.usage())]
    ):
        assert secret not in text
    blob = cache_path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("llm.sqlite-*"))
    assert secret.encode() not in blob and b"planted" not in blob


def test_llm_error_pickles_and_redacts(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-abcdefgh12345678")
    err = LLMError(
        "malformed", "saw sk-proj-abcdefgh12345678 and Bearer tok_0123456789", text="raw"
    )
    assert "abcdefgh" not in err.message and "tok_0123456789" not in err.message
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.kind, copy.message, copy.retryable, copy.text) == (
        "malformed",
        err.message,
        False,
        "raw",
    )
    with pytest.raises(ValueError, match="unknown LLMError kind"):
        LLMError("oops", "x")


def test_openai_key_is_never_sent_to_a_compatible_server(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key-111111111111")
    monkeypatch.delenv("RZNAS_OPENAI_COMPATIBLE_API_KEY", raising=False)
    stub.add(200, completion(valid()))
    load_chat_model(f"openai-compatible:{stub.url}:m").complete(MSGS, role="designer")
    assert "sk-test-openai-key" not in stub.requests[-1]["headers"]["authorization"]
    monkeypatch.setenv("RZNAS_OPENAI_COMPATIBLE_API_KEY", "server-key")
    stub.add(200, completion(valid()))
    load_chat_model(f"openai-compatible:{stub.url}:m").complete(MSGS, role="designer")
    assert stub.requests[-1]["headers"]["authorization"] == "Bearer server-key"
