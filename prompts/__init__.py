"""Versioned prompt templates: ``prompts/<role>/v<N>.md``, loaded by id (``designer@v1``).

A template file starts with a front-matter header and then holds the chat messages::

    ---
    version: 1
    changes: what changed against the previous version (one line)
    variables: space_text, parent_json, ...
    ---
    <!-- message:system -->
    You are ... $space_text
    <!-- if:reflection -->
    Latest reflection: $reflection
    <!-- endif -->
    <!-- message:user -->
    $parent_json

Placeholders are :class:`string.Template` ``$name`` (architecture code and JSON are full of
braces, which ``str.format`` would trip over); ``$$`` is a literal dollar. A line
``<!-- if:name -->`` ... ``<!-- endif -->`` keeps its lines only when ``name`` is truthy, so an
ablation switch removes a whole section, heading included, without a new file. Blocks may nest.

Rendering rules: every variable named in the header must be given (a missing one raises
:class:`PromptError` naming it); extra values are ignored, so one caller can feed several versions
of a template that use different subsets. The header must list exactly the names the body uses.
Messages are split on the raw template before substitution, so text inside a value (an LLM's
rationale, say) can never open a new message.

A released ``vN.md`` is never edited (``tests/prompt_hashes.json`` pins each file's sha256): a
change means a new ``v<N+1>.md`` whose ``changes`` line says what moved.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent

_ID_RE = re.compile(r"^(?P<role>[a-z][a-z0-9_-]*)@v(?P<version>[1-9][0-9]*)$")
_FILE_RE = re.compile(r"^v(?P<version>[1-9][0-9]*)\.md$")
_MESSAGE_RE = re.compile(r"^<!--\s*message:(?P<role>system|user|assistant)\s*-->\s*$")
_IF_RE = re.compile(r"^<!--\s*if:(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*-->\s*$")
_ENDIF_RE = re.compile(r"^<!--\s*endif\s*-->\s*$")
_DIRECTIVE_RE = re.compile(r"^<!--.*-->\s*$")


class PromptError(ValueError):
    """A prompt id that does not exist, a malformed template file, or a missing variable."""


@dataclass(frozen=True)
class Prompt:
    """One versioned template.

    Attributes:
        id: ``role@vN``, e.g. ``designer@v1``; stored with every result that used it.
        role: the agent it belongs to (the folder name).
        version: ``N``.
        text: the template body (everything after the header).
        sha256: hex digest of the whole file, so results can name the exact bytes they used.
        variables: the names the body uses, in header order.
        changes: the header's one line on what changed against the previous version.
    """

    id: str
    role: str
    version: int
    text: str
    sha256: str
    variables: tuple[str, ...]
    changes: str

    def render(self, **values: object) -> str:
        """Fill the template and return the whole text, message markers included.

        Raises:
            PromptError: a variable named in the header is missing.
        """
        parts = []
        for role, section in _sections(self.text, self.id):
            parts.append(f"<!-- message:{role} -->\n{self._fill(section, values)}")
        return "\n".join(parts)

    def render_messages(self, **values: object) -> list[dict[str, str]]:
        """Fill the template and return chat messages ``[{"role", "content"}, ...]``.

        Messages whose content is empty after rendering are dropped.

        Raises:
            PromptError: a variable named in the header is missing.
        """
        messages = []
        for role, section in _sections(self.text, self.id):
            content = self._fill(section, values).strip()
            if content:
                messages.append({"role": role, "content": content})
        return messages

    def _fill(self, section: str, values: dict[str, object]) -> str:
        missing = [name for name in self.variables if name not in values]
        if missing:
            raise PromptError(
                f"prompt {self.id} needs variable(s) {', '.join(missing)}; "
                f"it takes: {', '.join(self.variables)}"
            )
        kept = _apply_conditionals(section, values, self.id)
        try:
            filled = string.Template(kept).substitute({k: _text(v) for k, v in values.items()})
        except (KeyError, ValueError) as exc:  # unreachable after the load-time checks
            raise PromptError(f"prompt {self.id}: cannot substitute: {exc}") from exc
        # A removed section leaves its blank neighbours behind; keep at most one blank line.
        return re.sub(r"\n{3,}", "\n\n", filled)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    return "" if value is None else str(value)


def _sections(body: str, prompt_id: str) -> list[tuple[str, str]]:
    """Split a template body on ``<!-- message:ROLE -->`` lines."""
    sections: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        match = _MESSAGE_RE.match(line)
        if match:
            sections.append((match["role"], []))
        elif sections:
            sections[-1][1].append(line)
        elif line.strip():
            raise PromptError(
                f"prompt {prompt_id}: text before the first '<!-- message:ROLE -->' line: {line!r}"
            )
    if not sections:
        raise PromptError(f"prompt {prompt_id}: no '<!-- message:system|user|assistant -->' line")
    return [(role, "\n".join(lines)) for role, lines in sections]


def _apply_conditionals(section: str, values: dict[str, object], prompt_id: str) -> str:
    """Drop the lines of ``<!-- if:name -->`` blocks whose value is falsy."""
    kept: list[str] = []
    stack: list[bool] = []  # for each open block: is it shown?
    for line in section.splitlines():
        if_match = _IF_RE.match(line)
        if if_match:
            stack.append(bool(values.get(if_match["name"])))
        elif _ENDIF_RE.match(line):
            if not stack:
                raise PromptError(f"prompt {prompt_id}: '<!-- endif -->' without an open block")
            stack.pop()
        elif all(stack):
            kept.append(line)
    if stack:
        raise PromptError(f"prompt {prompt_id}: {len(stack)} '<!-- if:... -->' block(s) not closed")
    return "\n".join(kept)


def _used_names(body: str, prompt_id: str) -> set[str]:
    """Return the placeholder and condition names a body uses; reject unknown directives."""
    names: set[str] = set()
    for number, line in enumerate(body.splitlines(), start=1):
        if match := _IF_RE.match(line):
            names.add(match["name"])
        elif _DIRECTIVE_RE.match(line) and not (_ENDIF_RE.match(line) or _MESSAGE_RE.match(line)):
            raise PromptError(
                f"prompt {prompt_id}, body line {number}: unknown directive {line.strip()!r}; "
                "use '<!-- message:ROLE -->', '<!-- if:name -->' or '<!-- endif -->'"
            )
    for match in string.Template.pattern.finditer(body):
        if match["invalid"] is not None:
            line = body[: match.start()].count("\n") + 1
            raise PromptError(
                f"prompt {prompt_id}, body line {line}: a '$' that starts no placeholder; "
                "write '$$' for a literal dollar"
            )
        name = match["named"] or match["braced"]
        if name:
            names.add(name)
    return names


def _parse(path: Path, role: str, version: int) -> Prompt:
    prompt_id = f"{role}@v{version}"
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise PromptError(f"{path}: must start with a '---' front-matter header")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise PromptError(f"{path}: front-matter header is not closed with '---'") from None
    header: dict[str, str] = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(":")
        if not sep:
            raise PromptError(f"{path}: header line {line!r} is not 'key: value'")
        header[key.strip()] = value.strip()
    for key in ("version", "changes", "variables"):
        if key not in header:
            raise PromptError(f"{path}: header lacks '{key}:'")
    if header["version"] != str(version):
        raise PromptError(
            f"{path}: header says version {header['version']}, file name says {version}"
        )
    variables = tuple(v.strip() for v in header["variables"].split(",") if v.strip())
    body = "\n".join(lines[end + 1 :])
    used = _used_names(body, prompt_id)
    undeclared, unused = used - set(variables), set(variables) - used
    if undeclared or unused:
        raise PromptError(
            f"{path}: header 'variables' must match the body; "
            f"used but not listed: {sorted(undeclared)}, listed but not used: {sorted(unused)}"
        )
    for _, section in _sections(body, prompt_id):  # fail at load time, not at the first call
        _apply_conditionals(section, dict.fromkeys(variables, True), prompt_id)
    return Prompt(
        id=prompt_id,
        role=role,
        version=version,
        text=body,
        sha256=hashlib.sha256(raw).hexdigest(),
        variables=variables,
        changes=header["changes"],
    )


@cache
def _load(path: Path, role: str, version: int, mtime_ns: int) -> Prompt:
    return _parse(path, role, version)


def _files(directory: Path | None = None) -> dict[str, tuple[Path, str, int]]:
    found: dict[str, tuple[Path, str, int]] = {}
    root = PROMPTS_DIR if directory is None else directory  # looked up now: tests replace it
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in folder.iterdir():
            match = _FILE_RE.match(path.name)
            if match:
                version = int(match["version"])
                found[f"{folder.name}@v{version}"] = (path, folder.name, version)
    return found


def _get(prompt_id: str, entry: tuple[Path, str, int]) -> Prompt:
    path, role, version = entry
    return _load(path, role, version, path.stat().st_mtime_ns)


def list_prompts() -> list[Prompt]:
    """Return every prompt version, sorted by role then version."""
    files = _files()
    ordered = sorted(files.items(), key=lambda item: (item[1][1], item[1][2]))
    return [_get(prompt_id, entry) for prompt_id, entry in ordered]


def load_prompt(prompt_id: str, directory: Path | None = None) -> Prompt:
    """Load a prompt by id: ``designer@v1``, or a bare role (``designer``) for its latest version.

    ``directory`` is another prompts folder of the same layout (``<directory>/<role>/vN.md``),
    e.g. the one a replay bundle carries; its files get the same checks and sha256 as the
    project's own. None means the project's ``prompts/``.

    Raises:
        PromptError: the id is malformed or names no file; the message lists the available ids.
    """
    if directory is None:
        files = _files()
    else:
        try:
            files = _files(Path(directory))
        except OSError as exc:
            raise PromptError(
                f"prompts folder {directory} cannot be read: {exc.strerror}") from None
    wanted = prompt_id.strip()
    if "@" not in wanted:
        versions = [entry for entry in files.values() if entry[1] == wanted]
        if versions:
            entry = max(versions, key=lambda e: e[2])
            return _get(f"{wanted}@v{entry[2]}", entry)
    elif _ID_RE.match(wanted) and wanted in files:
        return _get(wanted, files[wanted])
    available = ", ".join(sorted(files, key=lambda i: (i.split("@")[0], int(i.split("@v")[1]))))
    where = "" if directory is None else f" in {directory}"
    raise PromptError(
        f"unknown prompt {prompt_id!r}{where}; use 'role@vN' or a bare role for the latest. "
        f"Available: {available or '(none)'}"
    )


__all__ = ["PROMPTS_DIR", "Prompt", "PromptError", "list_prompts", "load_prompt"]
