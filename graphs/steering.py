"""Human steering (``--interactive``): the questions asked at a pause and the answers' checks.

The search graph pauses in ``graphs.nodes.steer`` (a LangGraph interrupt) after every step. The
runner then shows the step's children and reads one line: Enter or ``a`` accepts, ``h TEXT`` gives
the Designer a hint for the next step, ``e ARCH`` evaluates ARCH next instead of asking the
Designer (``e`` alone asks for it on the next line), ``s`` stops (resumable). Lines come from
standard input, so a script can drive a run (``printf 'h widen\\ns\\n' | python -m graphs.search
--interactive --plain``); at end of input every further pause is accepted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from graphs.events import fmt_score
from tools.spaces import ArchitectureError, SearchSpace

HELP = ("[Enter]/a accept · h TEXT hint for the Designer · e ARCH evaluate ARCH next · "
        "s stop (resumable)")
#: A hint longer than this is cut: it goes into every prompt of the next step.
MAX_HINT_CHARS = 500
_ACTIONS = {"a": "accept", "accept": "accept", "h": "hint", "hint": "hint", "e": "edit",
            "edit": "edit", "s": "stop", "stop": "stop", "q": "stop", "quit": "stop"}


def parse_answer(line: str) -> tuple[dict | None, str | None]:
    """Parse one typed line into ``({"action", "text"}, None)``, or ``(None, why it is not one)``."""
    text = line.strip()
    if not text:
        return {"action": "accept", "text": ""}, None
    word, _, rest = text.partition(" ")
    action = _ACTIONS.get(word.lower())
    if action is None:
        return None, f"unknown answer {word!r}; {HELP}"
    rest = rest.strip()
    if action == "hint" and not rest:
        return None, "a hint needs text: h widen the first cell"
    return {"action": action, "text": rest[:MAX_HINT_CHARS] if action == "hint" else rest}, None


class HumanAnswers:
    """Answers the graph's pauses: from a list (a replay) or by asking on the terminal.

    Args:
        trace: the run's TraceWriter (prints the question above or instead of the live view).
        space: checks an edited architecture before the graph sees it.
        scripted: answers to give in order instead of asking (None: read standard input).
        read_line: reads one line; returns None at end of input (default: ``sys.stdin``).
    """

    def __init__(self, trace: Any, space: SearchSpace, scripted: list[dict] | None = None,
                 read_line: Callable[[], str | None] | None = None) -> None:
        self.trace, self.space = trace, space
        self.scripted = list(scripted) if scripted is not None else None
        self.read_line = read_line or _stdin_line
        self.end_of_input = False

    def ask(self, pause: dict) -> dict:
        """Return the answer to one pause (``graphs.nodes.steer``'s interrupt value)."""
        if self.scripted is not None:
            return self.scripted.pop(0) if self.scripted else {"action": "accept", "text": ""}
        suspend = getattr(self.trace, "suspend_live", None)
        if suspend:
            suspend()  # a prompt under a redrawing live view would be overwritten
        self._show(pause)
        while True:
            if self.end_of_input:
                return {"action": "accept", "text": ""}
            line = self._read("steer> ")
            if line is None:
                self.trace.print_line("end of input: accepting this and every further step")
                return {"action": "accept", "text": ""}
            answer, problem = parse_answer(line)
            if answer is None:
                self.trace.print_line(problem)
                continue
            if answer["action"] == "edit" and not answer["text"]:
                arch = self._read("architecture> ")
                if arch is None:
                    continue
                answer["text"] = arch.strip()
            if answer["action"] == "edit":
                problem = self._check(answer["text"])
                if problem:
                    self.trace.print_line(f"not a valid architecture ({problem}); try again")
                    continue
            return answer

    def _read(self, prompt: str) -> str | None:
        self.trace.print_line(prompt)
        line = self.read_line()
        if line is None:
            self.end_of_input = True
        return line

    def _check(self, arch: str) -> str | None:
        try:
            self.space.validate(arch)
        except (ArchitectureError, ValueError, TypeError, RecursionError) as exc:
            return str(exc)
        return None

    def _show(self, pause: dict) -> None:
        say = self.trace.print_line
        say(f"== paused after iteration {pause.get('iteration')} (--interactive) ==")
        for child in pause.get("children") or []:
            outcome = (f"score {fmt_score(child['score'])}" if child.get("score") is not None
                       else f"failed: {child.get('error')}")
            say(f"slot {child.get('slot')}: child {child.get('child')}  {outcome}")
            say(f"  parent {child['parent']['arch']}  score {fmt_score(child['parent']['score'])}")
            if child.get("suggestion"):
                say(f"  reflector suggests: {child['suggestion']}")
        say(f"best so far: {pause.get('best')}")
        say(HELP)


def _stdin_line() -> str | None:
    line = sys.stdin.readline()
    return None if line == "" else line.rstrip("\n")
