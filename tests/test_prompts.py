"""Versioned prompt templates: loading, rendering rules, immutability and no leaked answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import prompts
from prompts import Prompt, PromptError, list_prompts, load_prompt

TESTS = Path(__file__).resolve().parent
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HASHES = json.loads((TESTS / "prompt_hashes.json").read_text())


def _write(
    folder: Path, role: str, version: int, body: str, variables: str, changes: str = "test"
) -> None:
    (folder / role).mkdir(parents=True, exist_ok=True)
    header = f"---\nversion: {version}\nchanges: {changes}\nvariables: {variables}\n---\n"
    (folder / role / f"v{version}.md").write_text(header + body)


@pytest.fixture
def prompt_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(prompts, "PROMPTS_DIR", tmp_path)
    return tmp_path


def test_load_by_id_and_latest():
    designer = load_prompt("designer@v1")
    assert (designer.id, designer.role, designer.version) == ("designer@v1", "designer", 1)
    assert designer.changes and "parent_json" in designer.variables
    latest = load_prompt("designer")
    assert latest.role == "designer"
    assert latest.version == max(p.version for p in list_prompts() if p.role == "designer")
    assert {p.id for p in list_prompts()} >= {"designer@v1", "reflector@v1"}


@pytest.mark.parametrize("bad", ["designer@v99", "nobody", "designer@1", "designer@v0", ""])
def test_unknown_id_lists_available(bad):
    with pytest.raises(PromptError, match="designer@v1.*reflector@v1|Available"):
        load_prompt(bad)


def test_missing_variable_is_named():
    prompt = load_prompt("reflector@v1")
    values = {name: "x" for name in prompt.variables}
    del values["outcome"]
    with pytest.raises(PromptError, match="outcome"):
        prompt.render_messages(**values)


def test_released_prompts_are_unchanged():
    """A released vN.md is never edited: changes go into a new version (and its hash is added)."""
    current = {p.id: p.sha256 for p in list_prompts()}
    unlisted = sorted(set(current) - set(HASHES))
    assert not unlisted, f"add the sha256 of {unlisted} to tests/prompt_hashes.json"
    for prompt_id, sha in HASHES.items():
        assert prompt_id in current, f"released prompt {prompt_id} was deleted; old versions stay"
        assert current[prompt_id] == sha, (
            f"{prompt_id} was edited after release; restore it and put the change in a new version"
        )


@pytest.mark.parametrize("prompt", list_prompts(), ids=lambda p: p.id)
def test_every_prompt_renders_with_fixture_values(prompt: Prompt):
    values = {name: f"<{name.upper()}>" for name in prompt.variables}
    messages = prompt.render_messages(**values)
    assert [m["role"] for m in messages] == ["system", "user"]
    text = "\n".join(m["content"] for m in messages)
    for name in prompt.variables:  # every variable shows up when its section is on
        assert f"<{name.upper()}>" in text or name.endswith("_form"), name
    assert "$" not in text.replace("$$", "")
    assert "<!--" not in text


def test_conditional_blocks_and_extra_values(prompt_dir):
    body = (
        "<!-- message:system -->\nfixed $a\n<!-- if:b -->\nB is $b\n<!-- if:c -->\nC\n<!-- endif -->\n"
        "<!-- endif -->\nend\n<!-- message:user -->\n$c\n"
    )
    _write(prompt_dir, "toy", 1, body, "a, b, c")
    prompt = load_prompt("toy@v1")
    on = prompt.render_messages(a="1", b="2", c="3", unused="ignored")
    assert on[0]["content"] == "fixed 1\nB is 2\nC\nend"
    off = prompt.render_messages(a="1", b="", c="3")
    assert off[0]["content"] == "fixed 1\nend"
    # Empty messages are dropped; values are never re-parsed as template syntax.
    only_system = prompt.render_messages(a="$b <!-- message:user -->", b=False, c="")
    assert only_system == [{"role": "system", "content": "fixed $b <!-- message:user -->\nend"}]
    assert "<!-- message:user -->" in prompt.render(a="1", b="", c="3")


def test_latest_picks_highest_version(prompt_dir):
    for version in (1, 2, 10):
        _write(prompt_dir, "toy", version, f"<!-- message:system -->\nv{version}\n", "")
    assert load_prompt("toy").id == "toy@v10"
    assert [p.version for p in list_prompts()] == [1, 2, 10]


@pytest.mark.parametrize(
    ("body", "variables", "match"),
    [
        ("<!-- message:system -->\n$a $b\n", "a", r"used but not listed: \['b'\]"),
        ("<!-- message:system -->\n$a\n", "a, b", r"listed but not used: \['b'\]"),
        ("<!-- message:system -->\ncost: 5$\n", "", "literal dollar"),
        ("<!-- message:system -->\n<!-- if:a -->\n$a\n", "a", "not closed"),
        ("<!-- message:system -->\n<!-- endif -->\n", "", "without an open block"),
        ("<!-- message:system -->\n<!-- include:x -->\n", "", "unknown directive"),
        ("preamble\n<!-- message:system -->\nx\n", "", "before the first"),
    ],
)
def test_malformed_templates_fail_at_load(prompt_dir, body, variables, match):
    _write(prompt_dir, "toy", 1, body, variables)
    with pytest.raises(PromptError, match=match):
        load_prompt("toy@v1")


def test_header_version_must_match_file_name(prompt_dir):
    _write(prompt_dir, "toy", 1, "<!-- message:system -->\nx\n", "")
    (prompt_dir / "toy" / "v1.md").rename(prompt_dir / "toy" / "v2.md")
    with pytest.raises(PromptError, match="version 1.*says 2"):
        load_prompt("toy@v2")


def _top_nb201_cells(n: int = 10) -> set[str]:
    path = DATA / "nb201.csv"
    if not path.exists():
        pytest.skip(f"ground truth {path} not present")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in rows[0] if c.endswith("_acc")]
    best: set[str] = set()
    for column in columns:
        best |= {r["arch_str"] for r in sorted(rows, key=lambda r: -float(r[column]))[:n]}
    return best


def test_no_prompt_names_a_top_nb201_cell():
    cells = _top_nb201_cells()
    for path in sorted(prompts.PROMPTS_DIR.glob("*/v*.md")):
        text = path.read_text()
        leaked = [c for c in cells if c in text or c.strip("|") in text]
        assert not leaked, f"{path} names top NB201 cell(s) {leaked}"
