"""The Designer against scripted models: what it sends, what it accepts, what it rejects and why."""

from __future__ import annotations

import json

import pytest

from agents.designer import Designer, DesignRequest, PromptSwitches, worked_example
from agents.models import load_chat_model, scripted_model
from agents.schemas import WholeProposal
from prompts import load_prompt
from tests.toy_space import TOY_LOG_PROXY, TOY_PROXY, ToySpace

PARENT = "conv-pool-skip"


def edit(slot: int, op: str, rationale: str = "more weights help") -> str:
    return json.dumps({"slot": slot, "op": op, "rationale": rationale})


def whole(arch: str, rationale: str = "swap") -> str:
    return json.dumps({"arch": arch, "rationale": rationale})


def make(replies, *, switches=None, proxy=TOY_PROXY, space=None):
    model = scripted_model(replies, max_retries=0)
    designer = Designer(
        model,
        space=space or ToySpace(),
        dataset="cifar10",
        proxy=proxy,
        prompt=load_prompt("designer@v1"),
        switches=switches or PromptSwitches(),
    )
    return model, designer


def request(parent=PARENT, score=1234.0, **kw) -> DesignRequest:
    return DesignRequest(
        parent_arch=parent, parent_score=score, iteration=kw.pop("iteration", 3), **kw
    )


def seen_calls(model):
    return model.scripted_backend("designer").calls


def test_valid_edit_gives_child_and_records_exactly_what_the_model_saw():
    model, designer = make([edit(1, "conv")])
    result = designer.propose(request(), seen={"pool-skip-skip"}, temperature=0.4, seed=7)
    assert result.ok and result.error_kind is None and result.reason is None
    assert result.child == "conv-conv-skip" and result.canonical == "conv-conv-skip"
    assert result.edit == {"slot": 1, "op": "conv"} and result.rationale == "more weights help"
    assert seen_calls(model) == [result.messages]
    assert [m["role"] for m in result.messages] == ["system", "user"]
    sent = model.scripted_backend("designer").call_kwargs[0]
    assert sent["temperature"] == 0.4 and sent["seed"] == 7 and sent["max_tokens"] == 200
    assert result.reply is not None and result.reply.text == edit(1, "conv")


def test_malformed_reply_is_rejected_with_its_kind():
    _model, designer = make(["I would change slot 1 to a convolution."])
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert not result.ok and result.error_kind == "malformed" and result.child is None
    assert "JSON" in result.reason


def test_rationale_over_the_cap_is_malformed():
    _, designer = make([edit(1, "conv", "x" * 400)])
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert result.error_kind == "malformed"


def test_edit_breaking_a_space_rule_is_invalid_with_the_space_message():
    _, designer = make([edit(0, "none")])
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert not result.ok and result.error_kind == "invalid"
    assert "slot 0 cannot be none" in result.reason and '"op": "none"' in result.reason
    assert result.edit == {"slot": 0, "op": "none"}


def test_invalid_whole_architecture_is_rejected_with_the_space_message():
    _, designer = make([whole("conv-maxpool-skip")], switches=PromptSwitches(output_form="whole"))
    assert designer.schema is WholeProposal
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert result.error_kind == "invalid"
    assert "unknown operation 'maxpool' at slot 1" in result.reason


def test_a_space_tripping_over_model_text_does_not_raise():
    class Fragile(ToySpace):
        def apply_edit(self, arch, edit):
            raise RecursionError("maximum recursion depth exceeded")

    _, designer = make([edit(1, "conv")], space=Fragile())
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert result.error_kind == "invalid" and "RecursionError" in result.reason


@pytest.mark.parametrize(
    ("reply", "form"),
    [(edit(1, "pool"), "edit"), (whole("skip-conv-pool"), "whole")],  # unchanged / permuted
)
def test_child_identical_to_parent_is_rejected(reply, form):
    _, designer = make([reply], switches=PromptSwitches(output_form=form))
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert not result.ok and result.error_kind == "same_as_parent"
    assert result.canonical == "conv-pool-skip" and "identical to the parent" in result.reason


def test_already_evaluated_child_is_rejected():
    _, designer = make([edit(2, "conv")])
    result = designer.propose(request(), seen={"conv-conv-pool"}, temperature=0.7, seed=0)
    assert not result.ok and result.error_kind == "duplicate"
    assert result.child == "conv-pool-conv" and "already evaluated" in result.reason


@pytest.mark.parametrize("kind", ["refusal", "timeout", "rate_limit", "connection", "empty"])
def test_model_failures_come_back_as_their_kind(kind):
    _, designer = make([{"error": kind}])
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert not result.ok and result.error_kind == kind
    assert result.reply is None and result.reason and result.messages


def test_feedback_of_a_rejected_attempt_reaches_the_next_call():
    model, designer = make([edit(1, "pool"), edit(1, "conv")])
    first = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert first.error_kind == "same_as_parent"
    second = designer.propose(request(feedback=[first.reason]), seen=set(), temperature=0.7, seed=1)
    assert second.ok
    calls = seen_calls(model)
    assert first.reason not in calls[0][-1]["content"]
    assert first.reason in calls[1][-1]["content"]
    assert "rejected" in calls[1][-1]["content"]


def test_reflection_and_lessons_appear_only_when_switched_on():
    req = request(latest_reflection="Try a conv in slot 2.", lessons=["Pools lower the score."])
    _, on = make([])
    user = on.messages(req)[-1]["content"]
    assert "Try a conv in slot 2." in user and "Pools lower the score." in user
    _, off = make([], switches=PromptSwitches(reflection=False))
    text = "\n".join(m["content"] for m in off.messages(req))
    assert "Try a conv in slot 2." not in text and "Pools lower the score." not in text
    assert "reflection:" not in text.lower()


def test_only_the_last_lessons_are_listed():
    req = request(
        latest_reflection="newest", lessons=[f"lesson {i}" for i in range(6)] + ["newest"]
    )
    _, designer = make([], switches=PromptSwitches(lessons=2))
    user = designer.messages(req)[-1]["content"]
    assert "lesson 4" in user and "lesson 5" in user and "lesson 3" not in user
    assert user.count("newest") == 1


@pytest.mark.parametrize(
    ("switch", "marker"),
    [
        ("text_description", "TOY-TEXT"),
        ("code_description", "TOY-CODE"),
        ("proxy_code", "TOY-PROXY-CODE"),
    ],
)
def test_switches_remove_their_section(switch, marker):
    _, on = make([])
    assert marker in on.messages(request())[0]["content"]
    _, off = make([], switches=PromptSwitches(**{switch: False}))
    system = off.messages(request())[0]["content"]
    assert marker not in system
    assert "toyproxy" in system  # the proxy's name and summary stay when its code goes


def test_history_length_limits_recent_candidates_and_zero_hides_them():
    history = [
        {"arch": f"conv-conv-{op}", "score": float(i), "error": None}
        for i, op in enumerate(["pool", "skip"])
    ]
    history.append(
        {"arch": "pool-pool-pool", "score": None, "error": "Traceback: shape mismatch\n in layer 3"}
    )
    best = {"arch": "conv-conv-conv", "score": 99.0}
    _, designer = make([], switches=PromptSwitches(history_length=2))
    user = designer.messages(request(history=history, best=best))[-1]["content"]
    assert "conv-conv-pool" not in user and "conv-conv-skip" in user
    assert '"error": "Traceback: shape mismatch in layer 3"' in user and "conv-conv-conv" in user
    _, none = make([], switches=PromptSwitches(history_length=0))
    user = none.messages(request(history=history, best=best))[-1]["content"]
    assert "conv-conv-skip" not in user and "conv-conv-conv" not in user


def test_system_message_is_identical_across_calls():
    """Nothing that varies per call may enter the system message (the prefix a local model caches)."""
    model, designer = make([edit(1, "conv"), edit(0, "pool")])
    designer.propose(request(), seen=set(), temperature=0.2, seed=1)
    designer.propose(
        request(
            "skip-none-conv",
            5.5e7,
            iteration=99,
            latest_reflection="R",
            lessons=["L"],
            history=[{"arch": "conv-conv-conv", "score": 3.0, "error": None}],
            best={"arch": "conv-conv-conv", "score": 3.0},
            feedback=["F"],
        ),
        seen=set(),
        temperature=1.0,
        seed=2,
    )
    first, second = seen_calls(model)
    assert first[0] == second[0]
    assert first[1] != second[1]
    for per_call in ("skip-none-conv", "55000000", "99", '"R"', "Latest reflection"):
        assert per_call not in second[0]["content"]


def test_log_scale_proxies_are_shown_as_log10():
    _, logged = make([], proxy=TOY_LOG_PROXY)
    messages = logged.messages(
        request(score=1234.0, history=[{"arch": "a", "score": 1e9, "error": None}])
    )
    assert "log10" in messages[0]["content"]
    assert '"type": "toylog, log10", "score": 3.091' in messages[1]["content"]
    assert '{"arch": "a", "score": 9.0}' in messages[1]["content"]
    _, raw = make([], proxy=TOY_PROXY)
    messages = raw.messages(request(score=1234.0))
    assert "log10" not in "\n".join(m["content"] for m in messages)
    assert '"type": "toyproxy", "score": 1234.0' in messages[1]["content"]


def test_whole_form_is_used_when_the_space_takes_no_edits():
    class WholeOnly(ToySpace):
        name = "toy-whole"
        edit_schema = None

    model, designer = make([whole("conv-conv-skip")], space=WholeOnly())
    assert designer.output_form == "whole" and designer.schema is WholeProposal
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert result.ok and result.child == "conv-conv-skip" and result.edit is None
    assert '"arch"' in seen_calls(model)[0][0]["content"]


def test_worked_example_is_a_real_mutation_and_not_the_answer():
    space = ToySpace()
    for form in ("edit", "whole"):
        parent, output = worked_example(space, form)
        assert space.validate(parent) == parent
        child = (
            output["arch"]
            if form == "whole"
            else space.apply_edit(
                parent, space.edit_schema(**{k: v for k, v in output.items() if k != "rationale"})
            )
        )
        assert space.canonical(child) != space.canonical(parent)
    _, designer = make([])
    system = designer.messages(request())[0]["content"]
    assert "Do not copy the example" in system


def test_fake_script_file_drives_the_designer(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"designer": [edit(2, "conv")], "reflector": []}))
    model = load_chat_model(f"fake:{script}")
    designer = Designer(
        model, space=ToySpace(), dataset="cifar10", proxy=TOY_PROXY, prompt=load_prompt("designer")
    )
    result = designer.propose(request(), seen=set(), temperature=0.7, seed=0)
    assert result.ok and result.child == "conv-pool-conv"
    assert model.scripted_backend("designer").calls == [result.messages]


# -- the real NB201 space ------------------------------------------------------------------------

NB201_PARENT = (
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
)


@pytest.fixture(scope="module")
def nb201():
    module = pytest.importorskip("tools.spaces.nb201", reason="the nb201 space is not available")
    return module.NB201Space()


def nb201_designer(replies, nb201, form="edit"):
    from tools.proxies import get_proxy

    model = scripted_model(replies, max_retries=0)
    return Designer(
        model,
        space=nb201,
        dataset="cifar10",
        proxy=get_proxy("synflow"),
        prompt=load_prompt("designer@v1"),
        switches=PromptSwitches(output_form=form),
    )


def test_nb201_edit_proposal(nb201):
    reply = json.dumps({"edge": "3<-0", "op": "nor_conv_3x3", "rationale": "use the empty edge"})
    result = nb201_designer([reply], nb201).propose(
        request(NB201_PARENT, 3.2e12), seen=set(), temperature=0.5, seed=0
    )
    assert result.ok, result.reason
    assert (
        result.child
        == "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    )
    system, user = (m["content"] for m in result.messages)
    assert '"edge": one of "1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"' in system
    assert '"score": 12.505' in user and "synflow, log10" in user


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        ({"edge": "4<-0", "op": "nor_conv_3x3", "rationale": "r"}, "malformed", "edge"),
        (
            {"edge": "3<-2", "op": "skip_connect", "rationale": "r"},
            "invalid",
            "already uses skip_connect",
        ),
    ],
)
def test_nb201_rejected_edits(nb201, reply, kind, text):
    result = nb201_designer([json.dumps(reply)], nb201).propose(
        request(NB201_PARENT), seen=set(), temperature=0.5, seed=0
    )
    assert result.error_kind == kind and text in result.reason


def test_nb201_invalid_whole_string_carries_the_space_message(nb201):
    bad = NB201_PARENT.replace("avg_pool_3x3", "max_pool_3x3")
    result = nb201_designer([whole(bad)], nb201, form="whole").propose(
        request(NB201_PARENT), seen=set(), temperature=0.5, seed=0
    )
    assert result.error_kind == "invalid" and "max_pool_3x3" in result.reason


def test_nb201_prompt_is_compact_and_names_no_top_cell(nb201):
    from tests.test_prompts import _top_nb201_cells

    designer = nb201_designer([], nb201)
    parent, output = worked_example(nb201, "edit")
    child = nb201.apply_edit(parent, nb201.edit_schema(edge=output["edge"], op=output["op"]))
    system = designer.messages(request(NB201_PARENT))[0]["content"]
    assert len(system) < 12_000  # about 3,000 tokens: the static prefix a 2-core CPU prefills once
    assert "Do not copy the example" in system and parent in system
    cells = _top_nb201_cells()
    assert not {parent, child} & cells
    assert not [c for c in cells if c in system]


def test_zen_macro_example_is_a_valid_edit():
    module = pytest.importorskip(
        "tools.spaces.zen_macro", reason="the zen-macro space is not available"
    )
    space = module.ZenMacroSpace()
    parent, output = worked_example(space, "edit")
    child = space.apply_edit(
        parent, space.edit_schema(block=output["block"], replacement=output["replacement"])
    )
    assert space.canonical(child) != space.canonical(parent)
    assert worked_example(space, "whole")[1]["arch"] == child


def test_quality_benchmark_runs_on_a_fake_model(tmp_path, capsys, nb201):
    import importlib.util
    from pathlib import Path

    pytest.importorskip("tools.spaces.torch_code", reason="get_space needs every built-in space")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "designer_quality.py"
    spec = importlib.util.spec_from_file_location("designer_quality", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    script = tmp_path / "s.json"
    good = json.dumps({"edge": "3<-0", "op": "nor_conv_3x3", "rationale": "r"})
    script.write_text(json.dumps(["no json here", good, good]))
    assert (
        bench.main(["--model", f"fake:{script}", "--calls", "2", "--proxy", "params", "--json"])
        == 0
    )
    figures = json.loads(capsys.readouterr().out)
    assert figures["calls"] == 2 and figures["model_calls"] == 3
    assert figures["valid_first_try"] == 0.5 and figures["valid_after_retries"] == 1.0
    assert figures["outcomes"] == {"malformed": 1, "ok": 2}


def test_v2_lists_the_edits_that_would_be_rejected(nb201):
    from tools.proxies import get_proxy

    parent = "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|"
    seen_child = "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_3x3~2|"
    model = scripted_model([json.dumps({"edge": "1<-0", "op": "nor_conv_3x3", "rationale": "r"})])
    designer = Designer(
        model,
        space=nb201,
        dataset="cifar10",
        proxy=get_proxy("params"),
        prompt=load_prompt("designer@v2"),
    )
    result = designer.propose(
        request(parent), seen={nb201.canonical(seen_child)}, temperature=0.5, seed=0
    )
    assert result.ok
    system, user = (m["content"] for m in model.scripted_backend("designer").calls[0])
    assert "NOT allowed" in user and "NOT allowed" not in system
    assert '- edge "2<-0": op "skip_connect"' in user  # its current operation
    assert '- edge "2<-1": any op' in user  # node 1 is all zeros: nothing on 2<-1 matters
    assert '- edge "3<-2": op "nor_conv_3x3" or "avg_pool_3x3"' in user  # current + evaluated
    v1 = nb201_designer([], nb201)
    assert "NOT allowed" not in v1.messages(request(parent))[-1]["content"]
    whole_form = Designer(
        model,
        space=nb201,
        dataset="cifar10",
        proxy=get_proxy("params"),
        prompt=load_prompt("designer@v2"),
        switches=PromptSwitches(output_form="whole"),
    )
    assert "NOT allowed" not in whole_form.messages(request(parent))[-1]["content"]


def test_v2_has_no_blocked_list_for_spaces_it_cannot_enumerate():
    module = pytest.importorskip(
        "tools.spaces.zen_macro", reason="the zen-macro space is not available"
    )
    from agents.designer import blocked_edits

    space = module.ZenMacroSpace()
    assert blocked_edits(space, worked_example(space, "edit")[0]) == ""
    assert blocked_edits(ToySpace(), "conv-pool-skip").splitlines() == [
        '- slot 0: op "conv" or "none"',
        '- slot 1: op "pool"',
        '- slot 2: op "skip"',
    ]


def test_restricted_schema_admits_only_accepted_edits(nb201):
    from types import SimpleNamespace

    from tools.proxies import get_proxy

    parent = "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|"
    seen = {nb201.canonical(parent.replace("avg_pool_3x3~2", "nor_conv_3x3~2"))}

    def designer(model, **switches):
        return Designer(
            model,
            space=nb201,
            dataset="cifar10",
            proxy=get_proxy("params"),
            prompt=load_prompt("designer@v2"),
            switches=PromptSwitches(**switches),
        )

    schema = designer(scripted_model([]))._call_schema(parent, seen)
    assert issubclass(schema, designer(scripted_model([])).schema)
    options = {
        o["properties"]["edge"]["const"]: o["properties"]["op"]["enum"]
        for o in schema.model_json_schema()["anyOf"]
    }
    assert "2<-1" not in options and "3<-1" not in options  # dead edges: nothing would change
    assert options["3<-2"] == ["none", "skip_connect", "nor_conv_1x1"]  # not current, not seen
    assert "skip_connect" not in options["2<-0"]
    assert len(options) == 4
    base = designer(scripted_model([])).schema
    assert designer(scripted_model([]), restrict_edits=False)._call_schema(parent, seen) is base
    openai = SimpleNamespace(spec="openai:gpt-4o")  # auto: off for OpenAI's structured outputs
    assert designer(openai)._call_schema(parent, seen) is base
    assert designer(openai, restrict_edits=True)._call_schema(parent, seen) is not base


def test_v3_writes_history_as_changes_and_skips_lists_the_decoder_enforces(nb201):
    from types import SimpleNamespace

    from tools.proxies import get_proxy

    parent = "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|"
    near = parent.replace("avg_pool_3x3~2", "nor_conv_3x3~2")
    far = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    history = [
        {"arch": far, "score": 2.0, "error": None},
        {"arch": parent, "score": 3.0, "error": None},
        {"arch": near, "score": None, "error": "budget: too many parameters"},
    ]

    def designer(model):
        return Designer(model, space=nb201, dataset="cifar10", proxy=get_proxy("params"),
                        prompt=load_prompt("designer@v3"))

    req = request(parent, history=history, best={"arch": parent, "score": 3.0})
    user = designer(scripted_model([])).messages(req, seen={nb201.canonical(near)})[-1]["content"]
    assert "Best so far: the parent (score 3.0)" in user
    assert f"- {far}: score 2.0" in user  # many edges differ: the string is shorter
    assert "- parent with edge 3<-2: avg_pool_3x3 -> nor_conv_3x3: failed: budget" in user
    assert "- the parent" not in user  # already shown as the parent
    assert "NOT allowed" not in user  # the restricted schema already excludes those edits
    free = designer(SimpleNamespace(spec="openai:gpt-4o"))  # no restriction: the list is shown
    assert "NOT allowed" in free.messages(req, seen={nb201.canonical(near)})[-1]["content"]


def test_whole_form_leaves_room_for_a_long_child():
    from tools.spaces import get_space
    from tools.spaces.darts import DARTS_V1, DARTS_V2

    space = get_space("darts")
    model = scripted_model([whole(DARTS_V1)], max_retries=0)
    designer = Designer(model, space=space, dataset="cifar10", proxy=TOY_PROXY,
                        prompt=load_prompt("designer@v3"),
                        switches=PromptSwitches(output_form="whole"))
    result = designer.propose(request(parent=space.validate(DARTS_V2)), seen=set(), temperature=0.2,
                              seed=1)
    assert result.ok and result.child == space.validate(DARTS_V1)
    # A genotype is ~350 characters (~170 tokens): 200 tokens would cut it off with a rationale.
    assert model.scripted_backend("designer").call_kwargs[0]["max_tokens"] >= 200 + len(DARTS_V2) // 2


def test_a_one_line_genotype_is_shown_whole_not_hashed():
    from tools.spaces import get_space
    from tools.spaces.darts import DARTS_V2

    space = get_space("darts")
    parent = space.validate(DARTS_V2)
    edit_reply = json.dumps({"cell": "normal", "node": 0, "slot": 0, "op": "dil_conv_3x3",
                             "input": 0, "rationale": "wider receptive field"})
    child = space.apply_edit(parent, space.edit_schema.model_validate(json.loads(edit_reply)))
    model = scripted_model([edit_reply], max_retries=0)
    designer = Designer(model, space=space, dataset="cifar10", proxy=TOY_PROXY,
                        prompt=load_prompt("designer@v3"), switches=PromptSwitches())
    result = designer.propose(request(parent=parent), seen={space.canonical(child)},
                              temperature=0.2, seed=1)
    assert not result.ok and result.error_kind == "duplicate"
    assert child in result.reason and "program of" not in result.reason


@pytest.mark.parametrize("best_in_recent", [True, False])
def test_v4_writes_the_best_once(best_in_recent):
    history = [{"arch": "skip-skip-skip", "score": 10.0}, {"arch": "pool-pool-pool", "score": 99.0},
               {"arch": "conv-skip-pool", "score": 50.0}]
    best = history[1] if best_in_recent else {"arch": "conv-conv-conv", "score": 500.0}
    model = scripted_model([edit(1, "conv")], max_retries=0)
    designer = Designer(model, space=ToySpace(), dataset="cifar10", proxy=TOY_PROXY,
                        prompt=load_prompt("designer@v4"), switches=PromptSwitches())
    user = designer.messages(request(history=history, best=best))[1]["content"]
    assert user.count(best["arch"]) == 1
    if best_in_recent:
        assert "Best so far" not in user
        assert "pool-pool-pool" in user.split("(best so far)")[0].splitlines()[-1]
    else:
        assert "Best so far: " in user and "(best so far)" not in user
    assert "Example" not in designer.messages(request())[0]["content"]  # v4 has no worked example


def test_darts_calls_get_a_schema_that_excludes_rejected_edits():
    from tools.spaces import get_space
    from tools.spaces.darts import DARTS_V2

    space = get_space("darts")
    parent = space.validate(DARTS_V2)  # normal node 3 reads ('skip_connect', 0), ('dil_conv_3x3', 2)
    tried = {"cell": "normal", "node": 3, "slot": 0, "op": "sep_conv_3x3", "input": 0}
    child = space.apply_edit(parent, space.edit_schema.model_validate(tried))
    designer = Designer(scripted_model([]), space=space, dataset="cifar10", proxy=TOY_PROXY,
                        prompt=load_prompt("designer@v4"), switches=PromptSwitches())
    schema = designer._call_schema(parent, {space.canonical(child)}).model_json_schema()
    options = {(o["properties"]["cell"]["const"], o["properties"]["node"]["const"],
                o["properties"]["slot"]["const"], o["properties"]["op"]["const"]):
               o["properties"]["input"]["enum"] for o in schema["anyOf"]}
    # Input 0 was evaluated, 2 is the other slot's, 5 is node 3 itself: 1, 3, 4 remain.
    assert sorted(options[("normal", 3, 0, "sep_conv_3x3")]) == [1, 3, 4]
    # The parent's own choice (skip_connect from 0) is no change, so it is not offered either.
    assert 0 not in options[("normal", 3, 0, "skip_connect")]
    assert all(set(inputs) <= {0, 1} for (_c, node, _s, _o), inputs in options.items() if node == 0)


# -- designer@v6: what a local server can reuse from the last call --------------------------------

V6_HISTORY = [{"arch": f"{a}-{b}-{c}", "score": float(10 * i)}
              for i, (a, b, c) in enumerate([("conv", "skip", "skip"), ("pool", "pool", "pool"),
                                             ("conv", "conv", "skip"), ("skip", "conv", "pool"),
                                             ("conv", "pool", "pool")], start=1)]


def _v6(prompt_id="designer@v6", proxy=TOY_PROXY, **switches) -> Designer:
    return Designer(scripted_model([], max_retries=0), space=ToySpace(), dataset="cifar10",
                    proxy=proxy, prompt=load_prompt(prompt_id), switches=PromptSwitches(**switches))


def _v6_request(step: int, parent: str = PARENT, **kw) -> DesignRequest:
    """The request of search step ``step``: the history so far, the best of it, two lessons."""
    history = V6_HISTORY[:step]
    return request(parent=parent, history=history, best=max(history, key=lambda h: h["score"]),
                   lessons=[f"lesson {i}" for i in range(step)][-3:],
                   latest_reflection=f"lesson {step - 1}", **kw)


@pytest.mark.parametrize("switches", [{}, {"history_length": 0}, {"reflection": False},
                                      {"output_form": "whole"}, {"pareto": True}])
@pytest.mark.parametrize("prompt_id", ["designer@v6", "designer@v7"])
def test_v6_and_v7_keep_v5s_system_message(switches, prompt_id):
    req = _v6_request(3, feedback=["repeated the parent"], human_hint="try pools")
    assert _v6(prompt_id, **switches).messages(req)[0] == \
        _v6("designer@v5", **switches).messages(req)[0]


@pytest.mark.parametrize("prompt_id", ["designer@v6", "designer@v7"])
def test_v6_and_v7_write_nothing_before_the_parent_that_depends_on_the_parent(prompt_id):
    one = _v6(prompt_id).messages(_v6_request(4, parent="conv-pool-skip"))[1]["content"]
    other = _v6(prompt_id).messages(_v6_request(4, parent="pool-skip-conv"))[1]["content"]
    before_one, after_one = one.split("Parent: ")
    assert before_one == other.split("Parent: ")[0]
    assert after_one.startswith("conv-pool-skip (score 1234.0)\n")
    assert "conv-pool-skip" not in before_one  # no "parent with ..." relative lines


def test_v6_next_call_repeats_the_last_ones_history_in_order():
    """Step 5 shows step 4's recent lines minus the oldest as one unbroken run of text."""
    designer = _v6(history_length=3)
    now = designer.messages(_v6_request(4))[1]["content"]
    then = designer.messages(_v6_request(5))[1]["content"]
    kept = "\n".join(f"- {h['arch']}: score {h['score']}" for h in V6_HISTORY[2:4])
    assert kept in now and kept in then
    assert then.index("Best so far") < then.index(kept) < then.index("Earlier lessons") \
        < then.index("Latest reflection") < then.index("Parent: ")


@pytest.mark.parametrize("prompt_id", ["designer@v6", "designer@v7"])
def test_v6_and_v7_show_every_fact_v5_shows(prompt_id):
    req = _v6_request(5, feedback=["repeated the parent"], human_hint="try pools")
    v5 = _v6("designer@v5", TOY_LOG_PROXY).messages(req)[1]["content"]
    v6 = _v6(prompt_id, TOY_LOG_PROXY).messages(req)[1]["content"]
    for fact in [h["arch"] for h in V6_HISTORY[2:]] + ["3.091", "1.699", "lesson 2", "lesson 4",
                                                       "try pools", "repeated the parent"]:
        assert fact in v5 and fact in v6, fact
    assert v6.count("conv-pool-pool") == 2  # the best is its own line, and in the recent list
    assert '"type"' not in v6 and v6.rstrip().endswith("Reply with the JSON object only.")


@pytest.mark.parametrize("prompt_id", ["designer@v6", "designer@v7"])
def test_v6_and_v7_write_a_program_parent_in_a_fence(prompt_id):
    program = "def build():\n    return conv(3)\n"
    user = _v6(prompt_id, output_form="whole").messages(request(parent=program, score=2.5))[1][
        "content"]
    assert "Parent: (score 2.5)\n```\ndef build():\n    return conv(3)\n```" in user


def test_v7_is_v6_with_the_reflection_moved_after_the_parent():
    """The Reflector's suggestion is the last thing read before this step's constraints (as in
    v5); the lines before the parent, which a local server reuses, are v6's."""
    req = _v6_request(5, feedback=["repeated the parent"], human_hint="try pools")
    v6 = _v6().messages(req)[1]["content"].splitlines()
    v7 = _v6("designer@v7").messages(req)[1]["content"].splitlines()
    reflection = "Latest reflection: lesson 4"
    parent = next(line for line in v6 if line.startswith("Parent: "))
    assert reflection in v6 and reflection in v7
    v6.remove(reflection)
    v6.insert(v6.index(parent) + 1, reflection)
    assert v7 == v6
    assert v7[v7.index(parent) + 1] == reflection
