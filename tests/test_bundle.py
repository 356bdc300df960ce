"""Replayable run bundles: pack a run, unpack it safely, replay it from its caches, compare.

The slow tests record a real 3-iteration search (nb201, the ``params`` proxy, scripted fake
models), pack it, and replay it offline with ``replay_model`` answering every LLM call from the
bundle's cache, as ``--replay`` will. The fast ones pack a small hand-made run directory and
attack ``unpack`` with hostile archives.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import agents.models
from agents.llm_cache import LLMCache
from agents.models import LLMError, replay_model, scripted_model
from graphs import bundle as bundles
from graphs.bundle import BundleError, first_divergence, pack, unpack
from graphs.config import SearchConfig
from graphs.events import read_events
from graphs.runner import run_search
from prompts import PROMPTS_DIR, PromptError, load_prompt
from tests.search_helpers import ROOT, write_script
from tests.test_graph import designer_edits, reflections, small_config
from tools.score_cache import ScoreCache

FAKE_KEY = "sk-" + "Zq7" * 14  # key-shaped, so graphs.events.redact knows it


# -- a small hand-made run directory (fast tests) --------------------------------------------------


def _prompt_entry(prompt_id: str) -> dict[str, str]:
    prompt = load_prompt(prompt_id)
    return {"id": prompt.id, "sha256": prompt.sha256}


def make_run_dir(root: Path) -> Path:
    """A finished-looking run directory with every file a bundle needs (no search is run)."""
    run_dir = root / "20260101-000000-nb201-params"
    run_dir.mkdir(parents=True)
    config = SearchConfig(designer_model="fake:x.json", reflector_model="fake:x.json",
                          proxy="params", iterations=1, population=2, seed=3)
    config.save(run_dir / "config.json")
    summary = {
        "best": {"arch": "a", "canonical": "a", "score": 2.0},
        "iterations": 1, "evaluations": 3, "invalid_proposals": 0, "fallbacks": 0,
        "cache_hits": 0, "llm_calls": 2, "tokens": 10, "cost_usd": 0.0, "wall_seconds": 1.5,
        "stop_reason": "iterations",
        "models": {"designer": "fake:x.json (FAKE)", "reflector": "fake:x.json (FAKE)"},
        "prompts": {"designer": _prompt_entry("designer@v1"),
                    "reflector": _prompt_entry("reflector@v1")},
        "seed": 3, "run_dir": str(run_dir),
        "resume_command": f"python -m graphs.search --resume {run_dir}",
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    events = [{"event": "run_started", "run_id": run_dir.name},
              *evaluation_events(), {"event": "run_finished", "reason": "iterations"}]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    with LLMCache(run_dir / "llm_cache.sqlite") as cache:
        cache.put("k1", model="fake:x.json (FAKE)", role="designer", text="{}", input_tokens=4,
                  output_tokens=1)
    ScoreCache(run_dir / "scores.sqlite").close()
    for name in ("checkpoints.sqlite", "messages.jsonl"):
        (run_dir / name).write_text("not for the bundle")
    return run_dir


def evaluation_events() -> list[dict]:
    return [{"event": "evaluation", "phase": "init", "iteration": 0, "arch": arch,
             "canonical": arch, "ok": True, "score": score, "scores": {"params": score},
             "params": 1, "flops": 1, "seconds": 0.1, "cached": False, "error": None}
            for arch, score in (("a", 2.0), ("b", 1.0))]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "runs")


@pytest.fixture
def good_bundle(run_dir: Path, tmp_path: Path) -> Path:
    return pack(run_dir, tmp_path / "good.tar.gz")


# -- archive surgery for the hostile bundles -------------------------------------------------------


def read_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}


def file_info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info


def write_archive(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def with_manifest(files: dict[str, bytes], **manifest_changes) -> dict[str, bytes]:
    """Return ``files`` with the manifest's file list recomputed (a consistent forgery)."""
    manifest = json.loads(files["manifest.json"])
    manifest["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                         for name, data in files.items() if name != "manifest.json"}
    manifest.update(manifest_changes)
    return {**files, "manifest.json": json.dumps(manifest).encode()}


def rebuild(path: Path, files: dict[str, bytes],
            *extra: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    entries = [(file_info(name, data), data) for name, data in files.items()]
    return write_archive(path, [*entries, *extra])


def assert_refused(archive: Path, dest: Path, *words: str) -> str:
    with pytest.raises(BundleError) as caught:
        unpack(archive, dest)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert not dest.exists()  # nothing half-unpacked is left
    assert not [p for p in dest.parent.iterdir() if ".unpacking-" in p.name]
    return message


# -- packing ---------------------------------------------------------------------------------------


def test_pack_and_unpack_carry_what_a_replay_needs(run_dir, good_bundle, tmp_path):
    members = read_members(good_bundle)
    assert sorted(members) == sorted([
        "manifest.json", "config.json", "summary.json", "events.jsonl", "llm_cache.sqlite",
        "scores.sqlite", "prompts/designer/v1.md", "prompts/reflector/v1.md"])
    manifest = json.loads(members["manifest.json"])
    assert manifest["format_version"] == 1 and manifest["run_id"] == run_dir.name
    assert manifest["models"] == json.loads((run_dir / "summary.json").read_text())["models"]
    assert set(manifest["packages"]) == set(bundles.RECORDED_PACKAGES)
    assert manifest["packages"]["pydantic"]  # installed here
    assert manifest["git_commit"] is None or len(manifest["git_commit"]) == 40
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": hashlib.sha256(members[name]).hexdigest(),
                         "size": len(members[name])}, name
    designer = manifest["prompts"]["designer"]
    assert designer["id"] == "designer@v1" and designer["file"] == "prompts/designer/v1.md"
    assert members["prompts/designer/v1.md"] == (PROMPTS_DIR / "designer" / "v1.md").read_bytes()

    unpacked = unpack(good_bundle, tmp_path / "unpacked")
    assert unpacked.config == json.loads((run_dir / "config.json").read_text())
    assert unpacked.summary == json.loads((run_dir / "summary.json").read_text())
    assert read_events(unpacked.events) == read_events(run_dir / "events.jsonl")
    assert load_prompt("designer@v1", unpacked.prompts_dir).sha256 == designer["sha256"]
    with LLMCache(unpacked.llm_cache) as cache:
        assert cache.get("k1").text == "{}"


def test_pack_copies_replies_still_in_the_write_ahead_log(run_dir, tmp_path):
    writer = sqlite3.connect(run_dir / "llm_cache.sqlite", isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")  # keep the row in the -wal file
        writer.execute("INSERT INTO replies VALUES ('k2', 'm', 'reflector', 'IN-THE-WAL', 1, 1, 0)")
        assert b"IN-THE-WAL" not in (run_dir / "llm_cache.sqlite").read_bytes()
        assert b"IN-THE-WAL" in (run_dir / "llm_cache.sqlite-wal").read_bytes()
        unpacked = unpack(pack(run_dir, tmp_path / "b.tar.gz"), tmp_path / "unpacked")
    finally:
        writer.close()
    with LLMCache(unpacked.llm_cache) as cache:
        assert cache.get("k2").text == "IN-THE-WAL"


def test_pack_keeps_secrets_out(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    with (run_dir / "events.jsonl").open("a") as f:
        f.write(json.dumps({"event": "llm_call", "error": f"401: bad key {FAKE_KEY}"}) + "\n")
    archive = pack(run_dir, tmp_path / "b.tar.gz")
    raw = gzip.decompress(archive.read_bytes())
    assert FAKE_KEY.encode() not in raw and FAKE_KEY[:20].encode() not in raw
    assert b"[REDACTED]" in read_members(archive)["events.jsonl"]


def test_pack_works_without_git(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    manifest = unpack(pack(run_dir, tmp_path / "b.tar.gz"), tmp_path / "unpacked").manifest
    assert manifest["git_commit"] is None and manifest["git_dirty"] is None


def test_pack_refuses_a_run_it_cannot_replay(run_dir, tmp_path):
    output = tmp_path / "b.tar.gz"
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())

    changed = copy.deepcopy(summary)
    changed["prompts"]["designer"]["sha256"] = "0" * 64  # the file changed since the run
    summary_path.write_text(json.dumps(changed))
    with pytest.raises(BundleError, match=r"prompts/designer/v1\.md differs .* wrong text"):
        pack(run_dir, output)

    changed["prompts"]["designer"] = {"id": "designer@v99", "sha256": "0" * 64}
    summary_path.write_text(json.dumps(changed))
    with pytest.raises(BundleError, match="designer@v99 .* not in this checkout"):
        pack(run_dir, output)

    summary_path.write_text(json.dumps({**summary, "stop_reason": "interrupted"}))
    with pytest.raises(BundleError, match="interrupted .* --resume"):
        pack(run_dir, output)

    summary_path.write_text(json.dumps(summary))
    (run_dir / "llm_cache.sqlite").unlink()
    with pytest.raises(BundleError, match="--no-llm-cache"):
        pack(run_dir, output)
    assert not output.exists() and not list(tmp_path.glob(".b.tar.gz*"))


# -- hostile bundles -------------------------------------------------------------------------------


def test_unpack_refuses_path_tricks_links_and_devices(good_bundle, tmp_path):
    files = read_members(good_bundle)
    dest = tmp_path / "out" / "dest"
    outside = tmp_path / "out" / "evil"

    cases: list[tuple[str, tarfile.TarInfo, bytes | None, str]] = []
    cases.append(("traversal", file_info("../evil", b"x"), b"x", "'../evil'"))
    cases.append(("absolute", file_info(str(outside), b"x"), b"x", "is not a file"))
    cases.append(("absolute-known", file_info("/summary.json", b"{}"), b"{}", "is not a file"))
    symlink = tarfile.TarInfo("prompts/designer/v2.md")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases.append(("symlink", symlink, None, "is a link"))
    hardlink = tarfile.TarInfo("prompts/designer/v3.md")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "summary.json"
    cases.append(("hardlink", hardlink, None, "is a link"))
    device = tarfile.TarInfo("prompts/designer/v5.md")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    cases.append(("device", device, None, "device"))
    folder = tarfile.TarInfo("prompts")
    folder.type = tarfile.DIRTYPE
    cases.append(("directory", folder, None, "directory"))
    cases.append(("foreign", file_info("run.sh", b"rm -rf ~"), b"rm -rf ~", "'run.sh' is not"))
    for label, info, data, words in cases:
        archive = rebuild(tmp_path / f"{label}.tar.gz", files, (info, data))
        assert_refused(archive, dest, words)
    assert not outside.exists()


def test_unpack_checks_the_manifest_and_every_hash(good_bundle, tmp_path):
    files = read_members(good_bundle)
    dest = tmp_path / "dest"

    tampered = {**files, "summary.json": files["summary.json"].replace(b"2.0", b"9.0")}
    assert_refused(rebuild(tmp_path / "t.tar.gz", tampered), dest, "summary.json", "sha256")

    without = {k: v for k, v in files.items() if k != "manifest.json"}
    assert_refused(rebuild(tmp_path / "m.tar.gz", without), dest, "no manifest.json")

    # A listed file that is missing, an unlisted one, a second copy, a newer format.
    missing = {k: v for k, v in files.items() if k != "scores.sqlite"}
    assert_refused(rebuild(tmp_path / "g.tar.gz", missing), dest, "lacks scores.sqlite")
    extra = {**files, "prompts/designer/v2.md": (PROMPTS_DIR / "designer/v2.md").read_bytes()}
    assert_refused(rebuild(tmp_path / "u.tar.gz", extra), dest, "not in its manifest")
    duplicate = (file_info("summary.json", b"{}"), b"{}")
    assert_refused(rebuild(tmp_path / "d.tar.gz", files, duplicate), dest, "appears twice")
    newer = with_manifest(files, format_version=2)
    assert_refused(rebuild(tmp_path / "v.tar.gz", newer), dest, "format 2 is not supported")

    # Consistent forgeries: hashes recomputed, content still wrong.
    forged_prompt = with_manifest({**files, "prompts/designer/v1.md": b"not a prompt"})
    assert_refused(rebuild(tmp_path / "p.tar.gz", forged_prompt), dest, "designer@v1",
                   "sha256 differs from summary.json")
    broken = b"---\nversion: 1\n---\nhello\n"  # recorded everywhere, but no valid prompt
    sha = hashlib.sha256(broken).hexdigest()
    summary, manifest = json.loads(files["summary.json"]), json.loads(files["manifest.json"])
    summary["prompts"]["designer"]["sha256"] = manifest["prompts"]["designer"]["sha256"] = sha
    assert_refused(rebuild(tmp_path / "q.tar.gz", with_manifest(
        {**files, "prompts/designer/v1.md": broken, "summary.json": json.dumps(summary).encode(),
         "manifest.json": json.dumps(manifest).encode()})), dest,
        "prompt designer@v1 is malformed: prompts/designer/v1.md: header lacks")
    assert_refused(rebuild(tmp_path / "w.tar.gz", with_manifest(
        {**files, "scores.sqlite": files["llm_cache.sqlite"]})), dest, "lacks table")
    assert_refused(rebuild(tmp_path / "s.tar.gz", with_manifest(
        {**files, "scores.sqlite": b"SQLite format 3\x00" + bytes(200)})), dest, "scores.sqlite")


def test_unpack_refuses_sqlite_files_that_hold_code(good_bundle, tmp_path):
    files = read_members(good_bundle)
    crafted = tmp_path / "crafted.sqlite"
    crafted.write_bytes(files["llm_cache.sqlite"])
    db = sqlite3.connect(crafted)
    db.execute("CREATE TRIGGER spy AFTER INSERT ON replies BEGIN DELETE FROM replies; END")
    db.commit()
    db.close()
    forged = with_manifest({**files, "llm_cache.sqlite": crafted.read_bytes()})
    assert_refused(rebuild(tmp_path / "x.tar.gz", forged), tmp_path / "dest", "trigger spy")


def test_unpack_enforces_size_caps(good_bundle, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    files = read_members(good_bundle)
    monkeypatch.setattr(bundles, "MAX_EVENTS_BYTES", 100)
    assert_refused(good_bundle, dest, "'events.jsonl'", "over its 100-byte cap")
    monkeypatch.undo()

    monkeypatch.setattr(bundles, "MAX_TOTAL_BYTES", 20_000)  # less than it unpacks to
    assert_refused(good_bundle, dest, "more than 20,000 bytes")
    monkeypatch.undo()

    monkeypatch.setattr(bundles, "MAX_MEMBERS", 3)
    assert_refused(good_bundle, dest, "more than 3 files")
    monkeypatch.undo()

    # A pax record is read into memory whole by tarfile: refused from its header alone.
    info = file_info("prompts/" + "x" * 100_000, b"x")
    assert_refused(rebuild(tmp_path / "pax.tar.gz", files, (info, b"x")), dest, "header record")

    # A gzip bomb: 20 MB of zeros in about 20 kB, under the member's cap but over the total.
    zeros = bytes(20 << 20)
    bomb = write_archive(tmp_path / "bomb.tar.gz", [(file_info("events.jsonl", zeros), zeros)])
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(bundles, "MAX_TOTAL_BYTES", 1 << 20)
    assert_refused(bomb, dest, "more than 1,048,576 bytes")


def test_unpack_refuses_files_that_are_no_bundle(tmp_path):
    dest = tmp_path / "dest"
    for name, data in (("empty.tar.gz", b""), ("text.tar.gz", b"hello"),
                       ("plain.tar.gz", gzip.compress(b"not a tar archive" * 40))):
        (tmp_path / name).write_bytes(data)
        assert_refused(tmp_path / name, dest)
    with pytest.raises(BundleError, match="does not exist"):
        unpack(tmp_path / "nope.tar.gz", dest)


def test_unpack_will_not_overwrite(good_bundle, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not an empty folder"):
        unpack(good_bundle, dest)
    assert (dest / "keep.txt").read_text() == "mine"


# -- replay-only models ----------------------------------------------------------------------------


def test_replay_model_answers_only_from_the_cache(tmp_path):
    request = dict(role="designer", temperature=0.4, seed=7, max_tokens=64)
    messages = [{"role": "user", "content": "propose an edit"}]
    with LLMCache(tmp_path / "cache.sqlite") as cache:
        recorder = scripted_model({"designer": ["first reply", "second reply"]}, label="rec",
                                  cache=cache)
        original = recorder.complete(messages, **request)
        replay = replay_model(recorder.name, cache)
        again = replay.complete(messages, **request)
        assert (again.text, again.cached, again.cost_usd) == (original.text, True, 0.0)
        assert (again.input_tokens, again.output_tokens) == (original.input_tokens,
                                                             original.output_tokens)
        assert replay.is_fake and replay.name == recorder.name and replay.replay_misses == 0

        with pytest.raises(LLMError) as caught:  # another seed: a request never recorded
            replay.complete(messages, **{**request, "seed": 8})
        assert caught.value.kind == "unavailable" and not caught.value.retryable
        assert "not in the bundle's LLM cache" in caught.value.message
        assert replay.replay_misses == 1 and replay.replay_misses_by_role == {"designer": 1}
        assert replay.usage()["designer"]["attempts"] == 1  # asked once, never retried

        real_name = replay_model("openai:gpt-4o", cache)
        assert not real_name.is_fake
        with pytest.raises(LLMError, match="not in the bundle's LLM cache"):
            real_name.complete(messages, **request)  # the key holds the model name
        with pytest.raises(LLMError, match="has no backend"):
            real_name.backend("designer")  # no backend is ever built
        assert real_name.replay_misses == 1


def test_replay_model_needs_a_cache():
    with pytest.raises(ValueError, match="LLM cache"):
        replay_model("openai:gpt-4o", None)


# -- prompts from another folder -------------------------------------------------------------------


def test_load_prompt_reads_another_prompts_folder(tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR / "designer", folder / "designer")
    copied = load_prompt("designer@v2", folder)
    assert copied.sha256 == load_prompt("designer@v2").sha256
    assert load_prompt("designer", folder).id == load_prompt("designer").id

    edited = folder / "designer" / "v2.md"
    edited.write_text(edited.read_text() + "\nOne more line.\n")
    changed = load_prompt("designer@v2", folder)
    assert changed.sha256 != copied.sha256 and "One more line." in changed.text
    assert "One more line." not in load_prompt("designer@v2").text

    with pytest.raises(PromptError, match=f"unknown prompt 'reflector@v1' in {folder}"):
        load_prompt("reflector@v1", folder)
    (folder / "designer" / "v9.md").write_text("no header\n")
    with pytest.raises(PromptError, match="front-matter"):
        load_prompt("designer@v9", folder)
    with pytest.raises(PromptError, match="cannot be read"):
        load_prompt("designer@v1", tmp_path / "missing")


# -- first_divergence ------------------------------------------------------------------------------


def search_events() -> list[dict]:
    """Two iterations of two parallel slots, as the graph writes them."""
    events = [{"event": "run_started"}, *evaluation_events(),
              {"event": "population_updated", "iteration": 0, "size": 2,
               "best": {"arch": "a", "score": 2.0}, "evaluations": 2, "elapsed_s": 0.1}]
    for iteration in (1, 2):
        for slot in (0, 1):
            child = f"c{iteration}{slot}"
            events += [
                {"event": "proposal", "iteration": iteration, "slot": slot, "attempt": 1,
                 "ok": False, "child": None, "reason": "same as parent", "time": 1.0},
                {"event": "proposal", "iteration": iteration, "slot": slot, "attempt": 2,
                 "ok": True, "child": child, "edit": {"edge": "1<-0"}, "fallback": False},
                {"event": "evaluation", "phase": "search", "iteration": iteration, "slot": slot,
                 "arch": child, "canonical": child, "ok": True, "score": float("nan"),
                 "seconds": 0.3, "cached": False, "error": None},
                {"event": "reflection", "iteration": iteration, "slot": slot, "ok": True,
                 "suggestion": f"s{iteration}{slot}"},
            ]
        events.append({"event": "population_updated", "iteration": iteration, "size": 2,
                       "best": {"arch": "a", "score": 2.0}, "evaluations": 2 + 2 * iteration,
                       "elapsed_s": 0.5, "cost_usd": 0.01})
    return events


SUMMARY = {"best": {"arch": "a", "score": 2.0}, "evaluations": 6, "invalid_proposals": 4,
           "wall_seconds": 3.0, "run_dir": "/r", "cost_usd": 0.4, "cache_hits": 0,
           "llm_usage": {"designer": {"calls": 8}}, "models": {"designer": "m"}}


def test_first_divergence_ignores_what_a_replay_may_change():
    events = search_events()
    assert first_divergence(SUMMARY, copy.deepcopy(SUMMARY), events, copy.deepcopy(events)) is None

    replay_summary = {**SUMMARY, "wall_seconds": 9.0, "run_dir": "/other", "cost_usd": 0.0,
                      "cache_hits": 6, "llm_usage": {}, "replayed_from": "b.tar.gz",
                      "resume_command": "x"}
    replay_events = []
    for event in copy.deepcopy(events):
        event.update({k: 0 for k in ("time", "seconds", "elapsed_s", "cost_usd") if k in event})
        if event["event"] == "evaluation":
            event["cached"] = True
        if event["event"] == "population_updated" and event["iteration"] == 0:
            event["evaluations"] = 0  # all scored from the bundle's score cache
        replay_events.append(event)
    # Parallel slots interleave differently (here slot 1 first); a killed-and-resumed recording
    # repeats a step.
    replay_events.sort(key=lambda e: (e.get("iteration") or 0,
                                      e["event"] == "population_updated", -(e.get("slot") or 0)))
    assert [e.get("slot") for e in replay_events[4:6]] == [1, 1]
    recorded = [*events[:10], {"event": "run_started"}, *evaluation_events(), *events[5:]]
    assert first_divergence(SUMMARY, replay_summary, recorded, replay_events) is None


def test_first_divergence_names_the_first_divergent_step():
    events = search_events()
    doctored = copy.deepcopy(events)
    for event in doctored:  # the replay went elsewhere in iteration 2, slot 1, and from then on
        if event["event"] == "proposal" and event["iteration"] == 2 and event["ok"]:
            event["child"] += "-x" if event["slot"] == 1 else ""
        if event["event"] == "population_updated" and event["iteration"] == 2:
            event["best"] = {"arch": "c21-x", "score": 5.0}
    assert first_divergence(SUMMARY, SUMMARY, events, doctored) == (
        "iteration 2, slot 1: proposal (attempt 2) differs: expected child c21, got c21-x")

    assert doctored[4]["attempt"] == 1 and doctored[4]["iteration"] == 1
    doctored[4]["ok"] = True  # iteration 1, slot 0, attempt 1: now comes first
    doctored[4]["child"] = "c10"
    assert first_divergence(SUMMARY, SUMMARY, events, doctored) == (
        "iteration 1, slot 0: proposal (attempt 1) differs: expected ok false, got true")

    scored = copy.deepcopy(events)
    scored[2]["score"] = 7.5
    assert first_divergence(SUMMARY, SUMMARY, events, scored) == (
        "initial population, candidate 2: evaluation differs: expected score 1.0, got 7.5")

    cut = [e for e in events if not (e.get("iteration") == 2 and e.get("slot") == 1)]
    assert first_divergence(SUMMARY, SUMMARY, events, cut).startswith(
        "iteration 2, slot 1: proposal (attempt 1) missing from the replay")
    longer = [*events, {"event": "proposal", "iteration": 2, "slot": 0, "attempt": 3, "ok": True,
                        "child": "z"}]
    assert first_divergence(SUMMARY, SUMMARY, events, longer).startswith(
        "iteration 2, slot 0: proposal (attempt 3) is extra in the replay")

    worse = copy.deepcopy(SUMMARY)
    worse["best"]["score"] = 1.5
    assert first_divergence(SUMMARY, worse, events, events) == (
        "summary.json differs at best.score: expected 2.0, got 1.5")
    assert first_divergence(SUMMARY, {**SUMMARY, "invalid_proposals": 5}, [], []) == (
        "summary.json differs at invalid_proposals: expected 4, got 5")


# -- the command line ------------------------------------------------------------------------------


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_cli_packs_next_to_the_run_by_default(run_dir, capsys):
    assert bundles.main([str(run_dir)]) == 0
    written = run_dir.parent / f"{run_dir.name}.tar.gz"
    out = capsys.readouterr().out
    assert written.is_file() and str(written) in out
    assert "designer fake:x.json (FAKE)" in out and "designer@v1, reflector@v1" in out
    assert "commit:" in out and "KB" in out


def test_cli_mistakes_exit_2_with_one_line(run_dir, tmp_path, capsys):
    assert bundles.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in one_error_line(capsys)
    assert bundles.main([str(run_dir), "-o", str(tmp_path / "no" / "b.tar.gz")]) == 2
    assert "output folder" in one_error_line(capsys)
    assert bundles.main([str(run_dir), "-o", str(tmp_path)]) == 2
    assert "is a folder" in one_error_line(capsys)
    with pytest.raises(SystemExit) as exited:
        bundles.main([str(run_dir), "--level", "9"])
    assert exited.value.code == 2 and "unrecognized arguments" in one_error_line(capsys)
    (run_dir / "summary.json").unlink()
    assert bundles.main([str(run_dir)]) == 2
    assert "has not finished" in one_error_line(capsys)


def test_cli_as_a_module(run_dir, tmp_path):
    (run_dir / "llm_cache.sqlite").unlink()
    done = subprocess.run([sys.executable, "-m", "graphs.bundle", str(run_dir), "-o",
                           str(tmp_path / "b.tar.gz")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "--no-llm-cache" in done.stderr


# -- a real run, packed and replayed (slow) --------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A finished 3-iteration search with scripted models; its script is gone afterwards."""
    root = tmp_path_factory.mktemp("recorded")
    model = write_script(root / "script.json", designer_edits(40), reflections(10))
    outcome = run_search(small_config(model), root / "run", resume=False, trace_mode="quiet")
    assert outcome.summary["iterations"] == 3 and outcome.summary["invalid_proposals"] > 0
    (root / "script.json").unlink()  # a replay must not need it
    return root / "run"


def replay(unpacked: bundles.Bundle, run_dir: Path, monkeypatch,
           names: dict[str, str] | None = None) -> tuple[dict, list[dict], list]:
    """Re-run a bundle as ``--replay`` does: its config, its caches, replay-only models."""
    run_dir.mkdir()
    shutil.copyfile(unpacked.llm_cache, run_dir / "llm_cache.sqlite")
    shutil.copyfile(unpacked.scores, run_dir / "scores.sqlite")
    config = SearchConfig.from_dict(unpacked.config)
    models = unpacked.summary["models"]
    names = names or {config.designer_model: models["designer"],
                      config.reflector_model: models["reflector"]}
    made = []

    def load_replay_model(spec: str, *, cache: LLMCache, **_: object):
        made.append(replay_model(names[spec], cache))
        return made[-1]

    monkeypatch.setattr(agents.models, "load_chat_model", load_replay_model)
    outcome = run_search(config, run_dir, resume=False, trace_mode="quiet")
    return outcome.summary, read_events(run_dir / "events.jsonl"), made


@pytest.mark.slow
def test_a_replayed_bundle_reproduces_the_run(recorded, tmp_path, monkeypatch):
    unpacked = unpack(pack(recorded, tmp_path / "run.tar.gz"), tmp_path / "unpacked")
    for role, entry in unpacked.manifest["prompts"].items():
        assert load_prompt(entry["id"], unpacked.prompts_dir).sha256 == \
            unpacked.summary["prompts"][role]["sha256"]
    summary, events, models = replay(unpacked, tmp_path / "replay", monkeypatch)

    recorded_summary = json.loads((recorded / "summary.json").read_text())
    recorded_events = read_events(recorded / "events.jsonl")
    assert first_divergence(recorded_summary, summary, recorded_events, events) is None
    for key in ("best", "evaluations", "invalid_proposals", "iterations", "models", "prompts"):
        assert summary[key] == recorded_summary[key], key
    assert models and all(m.replay_misses == 0 for m in models)
    calls = [e for e in events if e["event"] == "llm_call"]
    assert calls and all(e["cached"] for e in calls)  # every reply from the bundle
    assert all(e["cached"] for e in events if e["event"] == "evaluation")  # every score too

    doctored = copy.deepcopy(recorded_events)
    second = next(e for e in doctored if e["event"] == "proposal" and e["iteration"] == 2)
    expected_child = second["child"]
    second["child"] = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert first_divergence(recorded_summary, summary, doctored, events) == (
        f"iteration 2, slot 0: proposal (attempt {second['attempt']}) differs: expected child "
        f"|none~0|+|none~0|none~1|+|none~0|none~1|none~2|, got {expected_child}")


@pytest.mark.slow
def test_a_replay_that_asks_something_new_reports_where(recorded, tmp_path, monkeypatch):
    unpacked = unpack(pack(recorded, tmp_path / "run.tar.gz"), tmp_path / "unpacked")
    config = SearchConfig.from_dict(unpacked.config)
    # Another model name: no cache key matches, as after a changed prompt or model.
    summary, events, models = replay(unpacked, tmp_path / "replay", monkeypatch,
                                     names={config.designer_model: "fake:other (FAKE)"})
    assert sum(m.replay_misses for m in models) == summary["llm_calls"] > 0
    recorded_summary = json.loads((recorded / "summary.json").read_text())
    message = first_divergence(recorded_summary, summary, read_events(recorded / "events.jsonl"),
                               events)
    assert message is not None and message.startswith("iteration 1, slot 0: proposal (attempt 1)")
