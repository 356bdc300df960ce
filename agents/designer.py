"""The Designer: one LLM call that mutates a parent architecture, checked against the space.

The prompt follows the paper's layout. The system message is fixed for a whole run (role, the
space in words and in code, the mutation rule, the proxy's code, the reply format and one made-up
worked example), so a local model keeps it as a cached prefix; everything that varies per call
(parent, scores, reflection, history, why earlier attempts were rejected) goes into the user
message. :class:`PromptSwitches` removes sections for ablations without editing a template.

:meth:`Designer.propose` never raises for model or validation problems: it returns a
:class:`DesignResult` whose ``reason`` is written to be shown to the model on the next attempt.
Retrying, and falling back to a random mutation, is the graph's job.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from agents.edits import blocked_edits, partition_edits, restricted_schema, worked_example
from agents.formatting import (
    as_json,
    change_line,
    entry_line,
    front_lines,
    history_line,
    one_line,
    proxy_source,
    relative_arch,
    score_note,
    score_type,
    scored_arch,
    short_arch,
    shown_score,
)
from agents.models import LLMError, LLMReply
from agents.schemas import WholeProposal, describe_schema, edit_proposal_schema
from prompts import Prompt
from tools.spaces import ArchitectureError, SearchSpace

if TYPE_CHECKING:
    from agents.models import ChatModel
    from tools.proxies import ProxySpec

OUTPUT_FORMS = ("edit", "whole")
#: Model-error messages are cut to this many characters before they become feedback.
REASON_CHARS = 240
#: The made-up score the worked example shows for its parent.
EXAMPLE_SCORE = 2.5


@dataclass(frozen=True)
class PromptSwitches:
    """Ablation switches for the Designer prompt (the paper's text/code levels, reflection, history).

    Attributes:
        text_description: include the space described in words.
        code_description: include the source code of the space's operations and network.
        proxy_code: include the proxy's source code (its summary and direction stay).
        reflection: include the latest reflection and the earlier lessons.
        history_length: how many recent candidates to show (0 hides them and the best so far).
        output_form: ``edit`` (a one-operation edit applied by the space) or ``whole`` (the whole
            child architecture). Spaces without an edit schema always use ``whole``.
        lessons: how many earlier reflection suggestions to list besides the latest one.
        restrict_edits: in the ``edit`` form on spaces whose edits can be enumerated (nb201),
            send a per-call JSON schema that admits only the edits that would be accepted, so a
            constrained decoder (llama.cpp, vLLM) cannot propose a no-op, rule-breaking or
            repeated edit. ``None`` (auto) turns it on except for ``openai:`` models, whose
            structured outputs do not promise to accept a root ``anyOf``.
        pareto: show the Pareto front (score versus params and FLOPs) in templates that take it
            (designer@v5 and later); off renders them as the version before.
    """

    text_description: bool = True
    code_description: bool = True
    proxy_code: bool = True
    reflection: bool = True
    history_length: int = 3
    output_form: str = "edit"
    lessons: int = 3
    restrict_edits: bool | None = None
    pareto: bool = False

    def __post_init__(self) -> None:
        if self.output_form not in OUTPUT_FORMS:
            raise ValueError(f"output_form must be one of {OUTPUT_FORMS}, got {self.output_form!r}")
        if self.history_length < 0 or self.lessons < 0:
            raise ValueError("history_length and lessons must be >= 0")


@dataclass
class DesignRequest:
    """What the Designer sees in one call (the per-call part of the prompt)."""

    parent_arch: str
    parent_score: float | None
    iteration: int
    latest_reflection: str | None = None
    lessons: list[str] = field(default_factory=list)  # earlier suggestions, newest last
    history: list[dict] = field(default_factory=list)  # {"arch", "score", "error"}, newest last
    best: dict | None = None  # {"arch", "score"}
    feedback: list[str] = field(default_factory=list)  # why earlier attempts in this step failed
    pareto: list[dict] = field(default_factory=list)  # graphs.pareto points, by params ascending
    human_hint: str | None = None  # typed by a human at the last pause (--interactive)


@dataclass
class DesignResult:
    """The outcome of one Designer call.

    ``error_kind`` is an ``LLMError`` kind (``malformed``, ``refusal``, ``timeout`` ...) or one of
    ``invalid``, ``same_as_parent``, ``duplicate``; ``reason`` explains it in words fit to show the
    model on the next attempt.
    """

    ok: bool
    child: str | None
    canonical: str | None
    edit: dict | None
    rationale: str
    reason: str | None
    reply: LLMReply | None
    messages: list[dict[str, str]]
    error_kind: str | None


class Designer:
    """Propose mutations of a parent architecture with a chat model.

    Args:
        model: the chat model (``agents.models.load_chat_model``).
        space: the search space; it validates and canonicalises every proposal.
        dataset: the dataset name shown in the prompt.
        proxy: the primary zero-cost proxy (scores, direction, log scale, source code).
        prompt: the template (``load_prompt("designer@v1")``).
        switches: ablation switches.
        budgets: a line on resource limits (params, FLOPs) for the prompt; empty for none.
        max_tokens: the reply's token limit.
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        space: SearchSpace,
        dataset: str,
        proxy: ProxySpec,
        prompt: Prompt,
        switches: PromptSwitches = PromptSwitches(),
        budgets: str = "",
        max_tokens: int = 200,
    ):
        self.model, self.space, self.dataset, self.proxy = model, space, dataset, proxy
        self.prompt, self.switches, self.budgets, self.max_tokens = (
            prompt,
            switches,
            budgets,
            max_tokens,
        )
        #: The form actually used: spaces that take no edits always get whole architectures.
        self.output_form = (
            "edit" if switches.output_form == "edit" and space.edit_schema else "whole"
        )
        self.schema: type[BaseModel] = (
            edit_proposal_schema(space.edit_schema) if self.output_form == "edit" else WholeProposal
        )
        self._static = self._static_values()

    # -- prompt ---------------------------------------------------------------------------------

    def _static_values(self) -> dict[str, str]:
        s = self.switches
        example = worked_example(self.space, self.output_form)
        proxy_type = score_type(self.proxy)
        return {
            "space": self.space.name,
            "dataset": self.dataset,
            "proxy_name": self.proxy.name,
            "proxy_summary": self.proxy.summary or "(no summary)",
            "score_note": score_note(self.proxy),
            "budgets": self.budgets.strip(),
            "arch_format": self.space.arch_format or "the space's architecture notation",
            "space_text": self.space.describe_text().strip() if s.text_description else "",
            "space_code": self.space.describe_code().strip() if s.code_description else "",
            "proxy_code": proxy_source(self.proxy) if s.proxy_code else "",
            "edit_form": self.output_form == "edit",
            "whole_form": self.output_form == "whole",
            "output_format": describe_schema(self.schema),
            "example_input": as_json(
                {"arch": example[0], "type": proxy_type, "score": EXAMPLE_SCORE}
            )
            if example
            else "",
            "example_output": as_json(example[1]) if example else "",
        }

    def messages(
        self, request: DesignRequest, seen: AbstractSet[str] = frozenset()
    ) -> list[dict[str, str]]:
        """Render the chat messages for ``request`` (system message first, then the user message).

        ``seen`` (canonical forms already evaluated) only matters to templates that list the
        blocked edits of the parent (``$blocked_edits`` in designer@v2, ``$edits_to_avoid`` in
        designer@v3, which lists them only when the decoding is not restricted to allowed edits).
        """
        s = self.switches
        show_history = s.history_length > 0
        recent = request.history[-s.history_length :] if show_history else []
        lessons = [x for x in request.lessons if x and x != request.latest_reflection]
        lessons = lessons[-s.lessons :] if s.lessons else []
        values = {
            **self._static,
            "parent_json": as_json(
                {
                    "arch": request.parent_arch,
                    "type": score_type(self.proxy),
                    "score": shown_score(request.parent_score, self.proxy),
                }
            ),
            "best_json": as_json(
                {
                    "arch": short_arch(request.best["arch"]),
                    "score": shown_score(request.best.get("score"), self.proxy),
                }
            )
            if show_history and request.best
            else "",
            "history": "\n".join(history_line(h, self.proxy) for h in recent),
            "lessons": "\n".join(f"- {one_line(x)}" for x in lessons) if s.reflection else "",
            "reflection": one_line(request.latest_reflection or "") if s.reflection else "",
            "blocked_edits": blocked_edits(self.space, request.parent_arch, seen)
            if self.output_form == "edit" and "blocked_edits" in self.prompt.variables
            else "",
            # designer@v3: the same list, but only when the decoder cannot exclude those edits
            "edits_to_avoid": blocked_edits(self.space, request.parent_arch, seen)
            if "edits_to_avoid" in self.prompt.variables
            and self.output_form == "edit"
            and not self._restricts()
            else "",
            "best_relative": relative_arch(request.best["arch"], request.parent_arch, self.space)
            + f" (score {shown_score(request.best.get('score'), self.proxy)})"
            if show_history and request.best
            else "",
            "recent_changes": "\n".join(
                change_line(h, request.parent_arch, self.space, self.proxy)
                for h in recent
                if h.get("arch") != request.parent_arch  # the parent is already shown above
            )
            if "recent_changes" in self.prompt.variables
            else "",
            # designer@v4: the best is marked in the recent list instead of written out twice
            **(self._best_and_recent(request, recent if show_history else [])
               if "recent_marked" in self.prompt.variables else {}),
            "human_hint": one_line(request.human_hint or "")
            if "human_hint" in self.prompt.variables
            else "",
            "feedback": "\n".join(
                f"{i}. {one_line(text)}" for i, text in enumerate(request.feedback, start=1)
            ),
            # designer@v6: the best and the recent candidates written the same whatever the parent
            "parent_entry": scored_arch(request.parent_arch, request.parent_score, self.proxy),
            "best_entry": scored_arch(short_arch(request.best["arch"]),
                                      request.best.get("score"), self.proxy)
            if show_history and request.best and request.best.get("arch")
            and "best_entry" in self.prompt.variables
            else "",
            "recent_entries": "\n".join(entry_line(h, self.proxy) for h in recent)
            if "recent_entries" in self.prompt.variables
            else "",
            # designer@v5: the front, only when switched on (else the prompt renders as v4)
            "pareto": front_lines(request.pareto, self.proxy)
            if s.pareto and "pareto" in self.prompt.variables and request.pareto
            else "",
        }
        return self.prompt.render_messages(**values)

    def _best_and_recent(self, request: DesignRequest, recent: list[dict]) -> dict[str, str]:
        """``best_line`` and ``recent_marked`` (designer@v4): the best written once.

        When the best so far is one of the recent candidates shown, its line says so and the
        separate best line is left out (an NB201 string costs a small model ~50 prompt tokens,
        read on every call); otherwise the best gets its own line, as in v3.
        """
        shown = [h for h in recent if h.get("arch") != request.parent_arch]
        best = request.best if request.best and request.best.get("arch") else None
        marked = best is not None and best["arch"] != request.parent_arch and any(
            h.get("arch") == best["arch"] for h in shown)
        lines = []
        for h in shown:
            line = change_line(h, request.parent_arch, self.space, self.proxy)
            if marked and h.get("arch") == best["arch"]:
                line += " (best so far)"
                marked = False  # once, if the history repeats it
            lines.append(line)
        best_line = ""
        if best is not None and not any(line.endswith(" (best so far)") for line in lines):
            best_line = (relative_arch(best["arch"], request.parent_arch, self.space)
                         + f" (score {shown_score(best.get('score'), self.proxy)})")
        return {"best_line": best_line, "recent_marked": "\n".join(lines)}

    def _reply_limit(self, parent: str) -> int:
        """``max_tokens`` for an edit; in the whole form, room for the child written out in full.

        A child is about as long as its parent (a DARTS genotype is ~170 tokens, a torch-code
        source many more), at no fewer than ~3 characters per token, plus the rationale.
        """
        if self.output_form != "whole":
            return self.max_tokens
        return max(self.max_tokens, len(parent) // 2 + self.max_tokens)

    def _restricts(self) -> bool:
        wanted = self.switches.restrict_edits
        if wanted is None:
            wanted = not str(getattr(self.model, "spec", "")).startswith("openai:")
        return wanted and self.output_form == "edit"

    def _call_schema(self, parent: str, seen: AbstractSet[str]) -> type[BaseModel]:
        """Return the schema for one call: restricted to the accepted edits where possible."""
        if not self._restricts():
            return self.schema
        split = partition_edits(self.space, parent, seen)
        if not split or not split[0]:  # nothing left to allow: let the rejection explain why
            return self.schema
        return restricted_schema(self.schema, self.space, split[0])

    # -- the call -------------------------------------------------------------------------------

    def propose(
        self, request: DesignRequest, *, seen: set[str], temperature: float, seed: int
    ) -> DesignResult:
        """Ask the model for one mutation of ``request.parent_arch`` and check it.

        Args:
            request: the parent, its score, reflection, history and earlier rejections.
            seen: canonical forms already evaluated; proposing one of them is rejected.
            temperature: sampling temperature for this call.
            seed: sampling seed for this call.

        Returns:
            A :class:`DesignResult`; ``ok`` is False (with ``error_kind`` and ``reason``) when the
            model failed or the child is invalid, identical to the parent or already evaluated.
        """
        messages = self.messages(request, seen)
        try:
            reply = self.model.complete(
                messages,
                role="designer",
                schema=self._call_schema(request.parent_arch, seen),
                temperature=temperature,
                seed=seed,
                max_tokens=self._reply_limit(request.parent_arch),
            )
        except LLMError as err:
            return _failed(messages, None, err.kind, _llm_reason(err))
        parsed = reply.parsed
        if not isinstance(parsed, self.schema):
            try:  # a model layer that did not parse: do it here rather than lose the reply
                parsed = self.schema.model_validate_json(reply.text)
            except ValidationError as err:
                reason = (
                    "your reply was not one JSON object in the required format: "
                    + _first_error(err)
                )
                return _failed(messages, reply, "malformed", reason)
        rationale = " ".join(str(getattr(parsed, "rationale", "")).split())
        edit: dict[str, Any] | None = None
        try:
            if self.output_form == "edit":
                edit = parsed.model_dump(exclude={"rationale"})
                what = f"edit {as_json(edit)}"
                edit_obj = self.space.edit_schema.model_validate(edit)
                child = self.space.validate(self.space.apply_edit(request.parent_arch, edit_obj))
            else:
                what = f"architecture {short_arch(parsed.arch)!r}"
                child = self.space.validate(parsed.arch)
            canonical = self.space.canonical(child)
            parent_canonical = self.space.canonical(request.parent_arch)
        except ValidationError as err:
            problem = _first_error(err)
            return _failed(
                messages, reply, "invalid", f"{what} is invalid: {problem}", edit, rationale
            )
        except ArchitectureError as err:
            return _failed(messages, reply, "invalid", f"{what} is invalid: {err}", edit, rationale)
        except (ValueError, TypeError, RecursionError) as err:
            # Model-written text is untrusted: a space that trips over it must not end the search.
            problem = f"{type(err).__name__}: {err}"
            return _failed(
                messages, reply, "invalid", f"{what} is invalid: {problem}", edit, rationale
            )
        if canonical == parent_canonical:
            reason = (
                f"{what} gives a network identical to the parent (same canonical form); "
                "change something that alters the computation"
            )
            return _failed(
                messages, reply, "same_as_parent", reason, edit, rationale, child, canonical
            )
        if canonical in seen:
            reason = (
                f"{what} gives {short_arch(child)}, which was already evaluated; "
                "propose a different mutation"
            )
            return _failed(messages, reply, "duplicate", reason, edit, rationale, child, canonical)
        return DesignResult(True, child, canonical, edit, rationale, None, reply, messages, None)


def _failed(
    messages: list[dict[str, str]],
    reply: LLMReply | None,
    kind: str,
    reason: str,
    edit: dict | None = None,
    rationale: str = "",
    child: str | None = None,
    canonical: str | None = None,
) -> DesignResult:
    return DesignResult(False, child, canonical, edit, rationale, reason, reply, messages, kind)


def _llm_reason(err: LLMError) -> str:
    message = one_line(err.message)
    if len(message) > REASON_CHARS:  # the reason goes back into the next prompt: keep it short
        message = message[:REASON_CHARS] + "..."
    if err.kind in ("malformed", "truncated", "empty"):
        return f"your reply could not be used ({err.kind}): {message}; answer with one short JSON object"
    return f"the model call failed ({err.kind}): {message}"


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "reply"
    return f"{where}: {first.get('msg', 'invalid')}"


__all__ = [
    "DesignRequest",
    "DesignResult",
    "Designer",
    "PromptSwitches",
    "blocked_edits",
    "worked_example",
]
