"""The Reflector against scripted models: its prompt, its verdicts and its failure handling."""

from __future__ import annotations

import json

import pytest

from agents.models import scripted_model
from agents.reflector import Reflection, Reflector, ReflectRequest, reflection_text
from prompts import load_prompt
from tests.toy_space import TOY_LOG_PROXY, TOY_PROXY, ToySpace
from tools.proxies import ProxySpec

GOOD = {
    "what_changed": "slot 1 went from pool to conv",
    "why": "a conv adds weights, and this proxy counts weights",
    "suggestion": "turn the skip in slot 2 into a conv",
}


def make(replies, proxy=TOY_LOG_PROXY):
    model = scripted_model(replies, max_retries=0)
    reflector = Reflector(
        model, space=ToySpace(), dataset="cifar10", proxy=proxy, prompt=load_prompt("reflector@v1")
    )
    return model, reflector


def request(**kw) -> ReflectRequest:
    base = {
        "parent_arch": "conv-pool-skip",
        "parent_score": 1000.0,
        "child_arch": "conv-conv-skip",
        "child_score": 1e5,
        "child_error": None,
        "rationale": "more  weights\nhelp",
        "changes": ["slot 1: pool -> conv"],
        "history": [{"arch": "pool-pool-pool", "score": 10.0, "error": None}],
        "iteration": 4,
    }
    return ReflectRequest(**{**base, **kw})


def test_valid_reflection_and_what_the_model_saw():
    model, reflector = make([json.dumps(GOOD)])
    result = reflector.reflect(request(), temperature=0.3, seed=5)
    assert result.ok and result.error is None and result.reflection == Reflection(**GOOD)
    assert model.scripted_backend("reflector").calls == [result.messages]
    system, user = (m["content"] for m in result.messages)
    assert "TOY-TEXT" in system and "TOY-PROXY-CODE" in system and "log10" in system
    assert '"arch": "conv-pool-skip", "type": "toylog, log10", "score": 3.0' in user
    assert '"arch": "conv-conv-skip", "score": 5.0' in user
    assert "slot 1: pool -> conv" in user and "more weights help" in user
    assert "rose from 3.0 to 5.0" in user and "BETTER" in user and "pool-pool-pool" in user


def test_system_message_is_identical_across_calls():
    model, reflector = make([json.dumps(GOOD)] * 2)
    reflector.reflect(request(), temperature=0.3, seed=5)
    reflector.reflect(
        request(parent_arch="skip-skip-skip", child_error="boom", child_score=None),
        temperature=0.9,
        seed=6,
    )
    first, second = model.scripted_backend("reflector").calls
    assert first[0] == second[0] and first[1] != second[1]


def test_failed_child_is_reported_as_failure():
    _, reflector = make([])
    user = reflector.messages(
        request(child_score=None, child_error="RuntimeError: shapes do not match")
    )[-1]["content"]
    assert "FAILED" in user and "shapes do not match" in user and '"error"' in user


def test_verdict_follows_the_proxy_direction():
    lower = ProxySpec(
        "loss", TOY_PROXY.fn, higher_is_better=False, summary="a loss; lower is better"
    )
    _, reflector = make([], proxy=lower)
    assert "BETTER" in reflector.outcome(request(parent_score=2.0, child_score=1.0))
    assert "WORSE" in reflector.outcome(request(parent_score=1.0, child_score=2.0))
    assert "did not change" in reflector.outcome(request(parent_score=1.0, child_score=1.0))


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("The change helped.", "malformed"),
        (json.dumps({**GOOD, "why": "w" * 500}), "malformed"),
        ({"error": "refusal"}, "refusal"),
        ({"error": "timeout"}, "timeout"),
        ({"error": "rate_limit"}, "rate_limit"),
    ],
)
def test_failures_never_raise(reply, kind):
    _, reflector = make([reply])
    result = reflector.reflect(request(), temperature=0.3, seed=0)
    assert not result.ok and result.reflection is None
    assert result.error_kind == kind and result.error.startswith(kind)


def test_as_text_is_one_paragraph_for_the_designer():
    text = Reflection(**GOOD).as_text()
    assert text == (
        "Change: slot 1 went from pool to conv. Effect: a conv adds weights, and this proxy counts "
        "weights. Next: turn the skip in slot 2 into a conv."
    )
    assert reflection_text(None) is None and reflection_text(Reflection(**GOOD)) == text


def test_history_length_shows_only_the_newest_candidates_and_zero_hides_them():
    history = [{"arch": f"arch-{i}", "score": float(i), "error": None} for i in range(6)]
    for length, shown in ((2, ["arch-4", "arch-5"]), (0, [])):
        model = scripted_model([], max_retries=0)
        reflector = Reflector(model, space=ToySpace(), dataset="cifar10", proxy=TOY_PROXY,
                              prompt=load_prompt("reflector@v1"), history_length=length)
        user = reflector.messages(request(history=history))[1]["content"]
        assert [f"arch-{i}" for i in range(6) if f"arch-{i}" in user] == shown
        assert ("Recent candidates" in user) == bool(shown)


def test_v2_names_the_child_by_its_change_and_history_by_changes():
    model = scripted_model([], max_retries=0)
    reflector = Reflector(model, space=ToySpace(), dataset="cifar10", proxy=TOY_PROXY,
                          prompt=load_prompt("reflector@v2"))
    history = [{"arch": "conv-pool-pool", "score": 7.0, "error": None}]
    user = reflector.messages(request(history=history))[1]["content"]
    assert "Change: slot 1: pool -> conv" in user
    assert "conv-conv-skip" not in user  # the change already says what the child is
    assert "- conv-pool-pool: score 7.0" in user  # ToySpace's diff is not shorter than the arch
    unreported = reflector.messages(request(changes=[]))[1]["content"]
    assert '"arch": "conv-conv-skip"' in unreported  # no change reported: the string is needed
    failed = reflector.messages(request(child_score=None, child_error="too big"))[1]["content"]
    assert '"error": "too big"' in failed
