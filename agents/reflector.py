"""The Reflector: one LLM call that explains a mutation's outcome and suggests the next one.

It sees the parent, the child and both scores (or why the child failed), the change as the space
reports it, the Designer's rationale and recent history, and answers with a :class:`Reflection`
(what changed, why it likely helped or hurt under this proxy, what to try next). The verdict
(better, worse, unchanged, failed) is computed here from the proxy's direction and stated in the
prompt, so a small model does not have to get the comparison right by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agents.formatting import (
    as_json,
    change_line,
    history_line,
    one_line,
    proxy_source,
    score_note,
    score_type,
    short_arch,
    shown_score,
)
from agents.models import LLMError, LLMReply
from agents.schemas import Reflection, describe_schema
from prompts import Prompt
from tools.spaces import SearchSpace

if TYPE_CHECKING:
    from agents.models import ChatModel
    from tools.proxies import ProxySpec

#: How many recent candidates the Reflector sees by default. The paper's Reflector sees only the
#: step itself; two lines keep its suggestion off what was just tried, and on 2 CPU cores each
#: line costs the embedded model about 1.5 s of prompt processing.
HISTORY_LENGTH = 2
#: Failure messages are cut to this many characters in the prompt.
ERROR_CHARS = 400


@dataclass
class ReflectRequest:
    """One mutation to reflect on."""

    parent_arch: str
    parent_score: float | None
    child_arch: str | None
    child_score: float | None
    child_error: str | None
    rationale: str = ""
    changes: list[str] = field(default_factory=list)  # space.diff(parent, child)
    history: list[dict] = field(default_factory=list)  # {"arch", "score", "error"}, newest last
    iteration: int = 0


@dataclass
class ReflectResult:
    """The outcome of one Reflector call; ``error`` says why ``reflection`` is None."""

    ok: bool
    reflection: Reflection | None
    error: str | None
    reply: LLMReply | None
    messages: list[dict[str, str]]
    error_kind: str | None = None


class Reflector:
    """Critique mutations with a chat model.

    Args:
        model: the chat model.
        space: the search space (its text description goes into the fixed system message).
        dataset: the dataset name shown in the prompt.
        proxy: the primary zero-cost proxy.
        prompt: the template (``load_prompt("reflector@v1")``).
        max_tokens: the reply's token limit.
        history_length: how many recent candidates to show (0 hides them).
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        space: SearchSpace,
        dataset: str,
        proxy: ProxySpec,
        prompt: Prompt,
        max_tokens: int = 200,
        history_length: int = HISTORY_LENGTH,
    ):
        self.model, self.space, self.dataset, self.proxy = model, space, dataset, proxy
        self.prompt, self.max_tokens = prompt, max_tokens
        self.history_length = max(0, history_length)
        self._static = {
            "space": space.name,
            "dataset": dataset,
            "proxy_name": proxy.name,
            "proxy_summary": proxy.summary or "(no summary)",
            "score_note": score_note(proxy),
            "arch_format": space.arch_format or "the space's architecture notation",
            "space_text": space.describe_text().strip(),
            "proxy_code": proxy_source(proxy),
            "output_format": describe_schema(Reflection),
        }

    def messages(self, request: ReflectRequest) -> list[dict[str, str]]:
        """Render the chat messages for ``request`` (system message first, then the user message)."""
        child: dict = {"arch": request.child_arch}
        if request.child_error:
            child["error"] = one_line(request.child_error)[:ERROR_CHARS]
        else:
            child["score"] = shown_score(request.child_score, self.proxy)
        values = {
            **self._static,
            "parent_json": as_json(
                {
                    "arch": request.parent_arch,
                    "type": score_type(self.proxy),
                    "score": shown_score(request.parent_score, self.proxy),
                }
            ),
            "child_json": as_json(child),
            # reflector@v2: the change already names the child; its string only when none is known
            "child_result": as_json(
                child if not request.changes else {k: v for k, v in child.items() if k != "arch"}
            ),
            "changes": "; ".join(request.changes) if request.changes else "(not reported)",
            "rationale": one_line(request.rationale) or "(none given)",
            "outcome": self.outcome(request),
            "history": "\n".join(
                history_line(h, self.proxy)
                for h in (request.history[-self.history_length :] if self.history_length else [])
            ),
            "recent_changes": "\n".join(
                change_line(h, request.parent_arch, self.space, self.proxy)
                for h in (request.history[-self.history_length :] if self.history_length else [])
            ),
        }
        return self.prompt.render_messages(**values)

    def outcome(self, request: ReflectRequest) -> str:
        """Say in one sentence whether the child failed, improved, got worse or tied."""
        if request.child_error or request.child_arch is None:
            return (
                "the child FAILED and was not added to the population: "
                + one_line(request.child_error or "no child was produced")[:ERROR_CHARS]
            )
        old, new = request.parent_score, request.child_score
        if new is None or not math.isfinite(new):
            return "the child has no usable score."
        if old is None or not math.isfinite(old):
            return f"the child scored {shown_score(new, self.proxy)}; the parent has no score to compare."
        shown_old, shown_new = shown_score(old, self.proxy), shown_score(new, self.proxy)
        if new == old:
            return (
                f"the score did not change ({shown_new}): the change did not matter to this proxy."
            )
        better = (new > old) == self.proxy.higher_is_better
        direction = "rose" if new > old else "fell"
        verdict = "BETTER than the parent" if better else "WORSE than the parent"
        return f"the score {direction} from {shown_old} to {shown_new}: the child is {verdict}."

    def reflect(self, request: ReflectRequest, *, temperature: float, seed: int) -> ReflectResult:
        """Ask the model to critique one mutation; never raises for model problems.

        Returns:
            A :class:`ReflectResult` with the validated :class:`Reflection`, or ``ok`` False with
            ``error`` (and ``error_kind``, an ``LLMError`` kind) when the call or its reply failed.
        """
        messages = self.messages(request)
        try:
            reply = self.model.complete(
                messages,
                role="reflector",
                schema=Reflection,
                temperature=temperature,
                seed=seed,
                max_tokens=self.max_tokens,
            )
        except LLMError as err:
            return ReflectResult(
                False, None, f"{err.kind}: {err.message}", None, messages, err.kind
            )
        parsed = reply.parsed
        if not isinstance(parsed, Reflection):
            try:
                parsed = Reflection.model_validate_json(reply.text)
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "reply"
                return ReflectResult(
                    False,
                    None,
                    f"malformed: {where}: {first.get('msg')}",
                    reply,
                    messages,
                    "malformed",
                )
        return ReflectResult(True, parsed, None, reply, messages, None)


def reflection_text(reflection: Reflection | None) -> str | None:
    """Return the one-paragraph form of a reflection the Designer sees (None stays None)."""
    return reflection.as_text() if reflection is not None else None


__all__ = [
    "ReflectRequest",
    "ReflectResult",
    "Reflection",
    "Reflector",
    "reflection_text",
    "short_arch",
]
