"""Replayable run bundles: pack a finished run into one ``.tar.gz``, unpack it safely, compare.

``python -m graphs.bundle RUN_DIR -o FILE.tar.gz`` packs what a replay needs and what says where
the run came from:

- ``manifest.json``: format version, creation time, run id, the project's git commit (and whether
  the checkout had uncommitted changes), Python, platform, package versions, the resolved model
  names, the prompts (id, sha256, file) and every packed file with its size and sha256;
- ``config.json``, ``summary.json``, ``events.jsonl`` (scrubbed with ``graphs.events.redact``);
- ``prompts/<role>/vN.md``: the prompt files the run used, checked against the sha256 the run
  recorded;
- ``llm_cache.sqlite`` and ``scores.sqlite``: consistent copies (SQLite backup API) of the LLM
  reply cache and the score cache, so a replay asks no model and scores nothing it need not.

Checkpoints and ``messages.jsonl`` stay out: a replay re-creates both.

``unpack`` treats a bundle as untrusted input: only regular files with the expected names, size
caps, every file's sha256 checked against the manifest, SQLite files checked for their expected
tables and nothing that runs code (views, triggers). ``first_divergence`` compares a replay with
the recording and names the first step where they part.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from graphs.usage import UsageParser
from tools.files import copy_sqlite, sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
SUMMARY = "summary.json"
EVENTS = "events.jsonl"
LLM_CACHE = "llm_cache.sqlite"
SCORES = "scores.sqlite"
JSON_FILES = (CONFIG, SUMMARY)
#: A forked run's starting state (graphs.fork): a replay starts from it, not from scratch.
FORK_STATE = "fork_state.json"
SQLITE_FILES = (LLM_CACHE, SCORES)

#: Packages whose versions decide what a run does; recorded so a failed replay can be explained.
RECORDED_PACKAGES = (
    "rznas", "torch", "numpy", "scipy", "pydantic", "langgraph", "langgraph-checkpoint-sqlite",
    "langchain-core", "langchain-openai", "xllamacpp",
)

#: ``summary.json`` fields a faithful replay may change: timings, paths, what the LLM cache
#: saved (a replay answers every call from it and pays nothing), score-cache hits (a replay may
#: answer evaluations from the bundle's score cache), training (it needs the data set and is not
#: part of the search) and the replay's own note of where it came from.
SUMMARY_FIELDS_NOT_COMPARED = frozenset({
    "wall_seconds", "run_dir", "resume_command", "llm_usage", "cost_usd", "cache_hits",
    "trained", "replayed_from",
})

#: Per event type, the fields that carry a decision of the search, in the order a divergence is
#: reported. Times, durations, cache flags, costs and error prose are left out.
DECISION_FIELDS: dict[str, tuple[str, ...]] = {
    "proposal": ("ok", "child", "fallback", "edit", "rationale"),
    "evaluation": ("arch", "canonical", "ok", "score", "scores", "params", "flops", "error_kind"),
    "reflection": ("ok", "suggestion", "what_changed", "why"),
    "population_updated": ("best", "size", "top", "added", "removed", "mean_score",
                           "best_ground_truth", "invalid_proposals", "fallbacks", "evaluations"),
}

#: Size caps for an untrusted bundle (bytes after decompression).
MAX_BUNDLE_BYTES = 2 << 30  # the .tar.gz itself
MAX_TOTAL_BYTES = 3 << 30  # everything it unpacks to
MAX_MEMBERS = 64
MAX_JSON_BYTES = 16 << 20
MAX_PROMPT_BYTES = 1 << 20
MAX_EVENTS_BYTES = 1 << 30
MAX_SQLITE_BYTES = 1 << 30
MAX_HEADER_RECORD_BYTES = 64 << 10  # a pax or GNU long-name record (file names, metadata)
BLOCK = tarfile.BLOCKSIZE

_PROMPT_FILE = re.compile(r"^prompts/(?P<role>[a-z][a-z0-9_-]*)/v(?P<version>[1-9][0-9]*)\.md$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Tables each SQLite file must hold; anything beyond tables and their indexes is refused.
_SQLITE_TABLES = {LLM_CACHE: {"replies"}, SCORES: {"meta", "candidates", "scores"}}


class BundleError(ValueError):
    """A run that cannot be packed, or a bundle that cannot be trusted; the message is one line."""


@dataclass(frozen=True)
class Bundle:
    """An unpacked, verified bundle.

    Attributes:
        root: the folder it was unpacked into.
        manifest, config, summary: the parsed JSON files.
        prompts_dir: a prompts folder (``<role>/vN.md``) for ``prompts.load_prompt(id, directory)``.
        llm_cache, scores, events: paths of the LLM reply cache, score cache and event stream.
        fork_state: for a forked run, the state it started from (``fork_state.json``), else None.
    """

    root: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    summary: dict[str, Any]
    prompts_dir: Path
    llm_cache: Path
    scores: Path
    events: Path
    fork_state: dict[str, Any] | None = None  # a forked run's starting state (FORK_STATE)


# -- packing ---------------------------------------------------------------------------------------


def _git_state() -> tuple[str | None, bool | None]:
    """Return (HEAD commit, uncommitted changes?) of the checkout holding this file, or Nones."""
    here = Path(__file__).resolve().parent
    # A GIT_DIR from the caller's shell would describe another repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True,
                                  timeout=20, env=env, check=False)
        except (OSError, subprocess.SubprocessError):
            return None  # no git, or it hung: the bundle still works without a commit
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head is None or not re.fullmatch(r"[0-9a-f]{40,64}", head.strip()):
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return head.strip(), (None if status is None else bool(status.strip()))


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise BundleError(f"{path} is not valid JSON; is {what} intact?") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} does not hold a JSON object; is {what} intact?")
    return data


def _scrubbed_copy(source: Path, target: Path) -> None:
    """Copy a text file with anything credential-shaped masked (nothing secret may leave)."""
    from graphs.events import redact

    try:
        with open(source, encoding="utf-8", errors="replace", newline="") as src, \
                open(target, "w", encoding="utf-8", newline="") as dst:
            for line in src:  # line by line: an event stream can be large
                dst.write(redact(line))
    except OSError as exc:
        raise BundleError(f"cannot read {source}: {exc.strerror}") from None


def _backup_sqlite(source: Path, target: Path) -> None:
    """Copy a (WAL) SQLite database consistently, committed WAL pages included, as one file."""
    try:
        copy_sqlite(source, target)
    except sqlite3.Error as exc:
        raise BundleError(f"cannot copy {source} ({exc}); is it an intact SQLite file?") from None


def _check_prompts(summary: dict[str, Any], run_dir: Path) -> dict[str, dict[str, str]]:
    """Return ``{role: {id, sha256, file}}`` for the prompts the run used, checked by sha256."""
    from prompts import PROMPTS_DIR, PromptError, load_prompt

    recorded = summary.get("prompts")
    if not isinstance(recorded, dict) or not recorded.get("designer"):
        raise BundleError(f"{run_dir / SUMMARY} does not name the prompts the run used "
                          "(a run made by an older version cannot be packed)")
    used: dict[str, dict[str, str]] = {}
    for role, entry in recorded.items():
        if entry is None:  # e.g. no Reflector with --no-reflection
            continue
        entry = entry if isinstance(entry, dict) else {}
        prompt_id, sha = entry.get("id"), entry.get("sha256")
        if not isinstance(prompt_id, str) or not isinstance(sha, str):
            raise BundleError(f"{run_dir / SUMMARY}: malformed prompts entry for {role!r}")
        try:
            prompt = load_prompt(prompt_id)
        except PromptError:
            raise BundleError(f"prompt {prompt_id} that the run used is not in this checkout; "
                              "pack it from a checkout that has it") from None
        if prompt.role != role or prompt.id != prompt_id:
            raise BundleError(f"{run_dir / SUMMARY}: prompt {prompt_id} recorded for role {role!r}")
        if prompt.sha256 != sha:
            raise BundleError(
                f"prompts/{prompt.role}/v{prompt.version}.md differs from the {prompt_id} the run "
                f"used (sha256 {prompt.sha256[:12]} here, {sha[:12]} in the run), so the bundle "
                "would carry the wrong text; pack from the checkout the run was made with")
        used[role] = {"id": prompt_id, "sha256": sha,
                      "file": f"prompts/{prompt.role}/v{prompt.version}.md",
                      "source": str(PROMPTS_DIR / prompt.role / f"v{prompt.version}.md")}
    return used


def _member_limit(name: str) -> int:
    if name in (MANIFEST, *JSON_FILES, FORK_STATE):
        return MAX_JSON_BYTES
    if name == EVENTS:
        return MAX_EVENTS_BYTES
    if name in SQLITE_FILES:
        return MAX_SQLITE_BYTES
    if _PROMPT_FILE.match(name):
        return MAX_PROMPT_BYTES
    raise BundleError(f"bundle member {name!r} is not a file a bundle holds")


def _check_run_dir(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not run_dir.is_dir():
        problem = "is not a folder" if run_dir.exists() else "does not exist"
        raise BundleError(f"run directory {run_dir} {problem}; name the folder a search wrote "
                          "(runs/<time>-<space>-<proxy>/)")
    if not (run_dir / SUMMARY).is_file():
        raise BundleError(f"{run_dir} has no {SUMMARY}: the run has not finished; finish it with "
                          f"python -m graphs.search --resume {run_dir}, then pack it")
    config = _read_json(run_dir / CONFIG, "the run") if (run_dir / CONFIG).is_file() else None
    if config is None:
        raise BundleError(f"{run_dir} has no {CONFIG}; is it a run directory?")
    summary = _read_json(run_dir / SUMMARY, "the run")
    if config.get("llm_cache") is False or not (run_dir / LLM_CACHE).is_file():
        raise BundleError(f"{run_dir} was run with --no-llm-cache: without its LLM replies "
                          "(llm_cache.sqlite) it cannot be replayed")
    for name in (EVENTS, SCORES):
        if not (run_dir / name).is_file():
            raise BundleError(f"{run_dir} has no {name}; a bundle needs a complete run directory")
    if summary.get("stop_reason") == "interrupted":
        raise BundleError(f"{run_dir} was interrupted before it finished; finish it with "
                          f"python -m graphs.search --resume {run_dir}, then pack it")
    if not isinstance(summary.get("models"), dict):
        raise BundleError(f"{run_dir / SUMMARY} does not name the models the run used")
    return config, summary


def pack(run_dir: Path, output: Path) -> Path:
    """Pack the finished run in ``run_dir`` into the bundle ``output`` (a .tar.gz); return it.

    Raises:
        BundleError: the run is unfinished, made with ``--no-llm-cache``, its prompt files have
            changed since, or a file cannot be read or written (one line, naming the fix).
    """
    run_dir, output = Path(run_dir), Path(output)
    config, summary = _check_run_dir(run_dir)
    prompts = _check_prompts(summary, run_dir)
    if not output.parent.is_dir():
        raise BundleError(f"output folder {output.parent} does not exist")
    commit, dirty = _git_state()
    with tempfile.TemporaryDirectory(prefix="rznas-bundle-") as scratch:
        staging = Path(scratch)
        for name in (CONFIG, SUMMARY, EVENTS):
            _scrubbed_copy(run_dir / name, staging / name)
        for name in SQLITE_FILES:
            _backup_sqlite(run_dir / name, staging / name)
        for entry in prompts.values():
            target = staging / entry["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry.pop("source"), target)
            if sha256_file(target) != entry["sha256"]:  # changed between the check and the copy
                raise BundleError(f"{entry['file']} changed while packing; pack again")
        names = [CONFIG, SUMMARY, EVENTS, *SQLITE_FILES, *(e["file"] for e in prompts.values())]
        if (run_dir / FORK_STATE).is_file():
            _scrubbed_copy(run_dir / FORK_STATE, staging / FORK_STATE)
            names.append(FORK_STATE)
        files = {}
        for name in names:
            size = (staging / name).stat().st_size
            if size > _member_limit(name):
                raise BundleError(f"{run_dir}: {name} is {size:,} bytes, over the "
                                  f"{_member_limit(name):,}-byte cap a bundle may hold")
            files[name] = {"sha256": sha256_file(staging / name), "size": size}
        created = dt.datetime.now(dt.timezone.utc)
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": created.isoformat(timespec="seconds"),
            "run_id": run_dir.resolve().name,
            "git_commit": commit,
            "git_dirty": dirty,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": _package_versions(),
            "models": summary["models"],
            "prompts": prompts,
            "files": files,
        }
        manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=int(created.timestamp())) as gz:
                    with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                        _add(tar, MANIFEST, io.BytesIO(manifest_bytes), len(manifest_bytes),
                             created)
                        for name in names:
                            with open(staging / name, "rb") as f:
                                _add(tar, name, f, files[name]["size"], created)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, output)
        except OSError as exc:
            raise BundleError(f"cannot write {output}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return output


def _add(tar: tarfile.TarFile, name: str, data: BinaryIO, size: int, when: dt.datetime) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(when.timestamp())
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, data)


# -- unpacking -------------------------------------------------------------------------------------


class _GuardedTarStream(io.RawIOBase):
    """The decompressed tar stream, watched as it flows to ``tarfile``.

    It fails once more than ``limit`` bytes came out (a gzip bomb), and when a header block
    announces a pax or GNU long-name record over ``MAX_HEADER_RECORD_BYTES``: ``tarfile`` reads
    such a record into memory whole, before any member reaches our own checks.
    """

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream, self._limit, self._count = stream, limit, 0
        self._header = b""  # bytes of the 512-byte header block being read
        self._skip = 0  # bytes of member data (padded to 512) before the next header
        self._ended = False  # a zero block: the archive's end marker

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        self._count += len(data)
        if self._count > self._limit:
            raise BundleError(f"bundle unpacks to more than {self._limit:,} bytes; refusing it")
        self._watch(data)
        buffer[: len(data)] = data
        return len(data)

    def _watch(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._ended:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = BLOCK - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) == BLOCK:
                header, self._header = self._header, b""
                if header == bytes(BLOCK):
                    self._ended = True
                    return
                size = _header_size(header)
                if header[156:157] in (b"x", b"g", b"L", b"K") and size > MAX_HEADER_RECORD_BYTES:
                    raise BundleError(
                        f"bundle holds a {size:,}-byte tar header record; refusing it")
                self._skip = -(-size // BLOCK) * BLOCK


def _header_size(header: bytes) -> int:
    field = header[124:136]
    if field[0] & 0x80:  # base-256, for sizes over 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip() or b"0"
    try:
        return int(text, 8)
    except ValueError:
        raise BundleError("bundle is not a valid tar archive (bad size field)") from None


def _check_member(member: tarfile.TarInfo, dest: Path, seen: set[str]) -> None:
    name = member.name
    if not member.isreg():
        kind = ("a link" if member.issym() or member.islnk() else
                "a directory" if member.isdir() else "a device or special file")
        raise BundleError(f"bundle member {name!r} is {kind}; a bundle holds regular files only")
    try:
        tarfile.data_filter(member, str(dest))  # absolute paths, '..', odd modes
    except tarfile.FilterError as exc:
        raise BundleError(f"bundle member {name!r} is unsafe: {exc}") from None
    if name != MANIFEST and name not in (*JSON_FILES, FORK_STATE, EVENTS, *SQLITE_FILES) \
            and not _PROMPT_FILE.match(name):
        raise BundleError(f"bundle member {name!r} is not a file a bundle holds")
    if name in seen:
        raise BundleError(f"bundle member {name!r} appears twice")
    if member.size > _member_limit(name):
        raise BundleError(f"bundle member {name!r} is {member.size:,} bytes, over its "
                          f"{_member_limit(name):,}-byte cap")
    seen.add(name)


def _extract(bundle: Path, root: Path) -> set[str]:
    """Extract the allowed members of ``bundle`` into ``root``; return their names."""
    if not hasattr(tarfile, "data_filter"):
        raise BundleError("unpacking a bundle needs tarfile's extraction filters: "
                          "use Python 3.10.12, 3.11.4, 3.12 or newer")
    seen: set[str] = set()
    try:
        with open(bundle, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            capped = io.BufferedReader(_GuardedTarStream(gz, MAX_TOTAL_BYTES))
            # Stream mode: members are read in order, nothing seeks back.
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for count, member in enumerate(tar, start=1):
                    if count > MAX_MEMBERS:
                        raise BundleError(f"bundle holds more than {MAX_MEMBERS} files")
                    _check_member(member, root, seen)
                    tar.extract(member, path=root, filter="data")
    except BundleError:
        raise
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BundleError(f"{bundle} is not a readable .tar.gz bundle ({exc})") from None
    except OSError as exc:
        raise BundleError(f"cannot unpack {bundle}: {exc.strerror or exc}") from None
    return seen


def _check_manifest(manifest: dict[str, Any], present: set[str]) -> dict[str, dict[str, Any]]:
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle format {version!r} is not supported (this rznas reads format "
                          f"{FORMAT_VERSION}); replay it with the rznas version that made it")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError("bundle manifest has no file list")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and _SHA256.match(entry["sha256"]) and isinstance(entry.get("size"), int)):
            raise BundleError(f"bundle manifest entry for {name!r} is malformed")
    unlisted = sorted(present - set(files) - {MANIFEST})
    if unlisted:
        raise BundleError(f"bundle member {unlisted[0]!r} is not in its manifest")
    for name in (*JSON_FILES, EVENTS, *SQLITE_FILES, *files):
        if name not in present:
            raise BundleError(f"bundle lacks {name}")
    return files


def _check_sqlite(path: Path, name: str) -> None:
    with open(path, "rb") as f:
        if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            raise BundleError(f"bundle member {name} is not an SQLite database")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            db.execute("PRAGMA trusted_schema=OFF")  # a crafted schema must not call functions
            rows = db.execute("SELECT type, name FROM sqlite_master").fetchall()
            check = db.execute("PRAGMA quick_check").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise BundleError(f"bundle member {name} is not a usable SQLite database ({exc})") from None
    odd = sorted(f"{kind} {item}" for kind, item in rows if kind not in ("table", "index"))
    if odd:
        raise BundleError(f"bundle member {name} holds {odd[0]}; a cache holds tables only")
    missing = _SQLITE_TABLES[name] - {item for kind, item in rows if kind == "table"}
    if missing:
        raise BundleError(f"bundle member {name} lacks table {sorted(missing)[0]!r}; "
                          "it is not an rznas cache")
    if not check or check[0] != "ok":
        raise BundleError(f"bundle member {name} is corrupt (quick_check: {check and check[0]})")


def _check_prompt_files(manifest: dict[str, Any], summary: dict[str, Any], files: dict,
                        prompts_dir: Path) -> None:
    from prompts import PromptError, load_prompt

    listed = manifest.get("prompts")
    if not isinstance(listed, dict) or not listed:
        raise BundleError("bundle manifest names no prompts")
    recorded = summary.get("prompts") or {}
    for role, entry in listed.items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str)
                                                  for k in ("id", "sha256", "file")):
            raise BundleError(f"bundle manifest's prompt entry for {role!r} is malformed")
        match = _PROMPT_FILE.match(entry["file"])
        if not match or f"{match['role']}@v{match['version']}" != entry["id"] \
                or match["role"] != role or entry["file"] not in files:
            raise BundleError(f"bundle manifest's prompt {entry['id']!r} names the wrong file")
        if files[entry["file"]]["sha256"] != entry["sha256"] or \
                (recorded.get(role) or {}).get("sha256") != entry["sha256"]:
            raise BundleError(f"bundle's prompt {entry['id']} is not the one its run used "
                              "(sha256 differs from summary.json)")
        try:
            load_prompt(entry["id"], prompts_dir)
        except (PromptError, UnicodeDecodeError) as exc:
            problem = str(exc).replace(f"{prompts_dir}{os.sep}", "prompts/")  # not our scratch path
            raise BundleError(f"bundle's prompt {entry['id']} is malformed: {problem}") from None


def unpack(bundle: Path, dest: Path) -> Bundle:
    """Unpack and verify ``bundle`` into the new folder ``dest``; return what it holds.

    Only regular files with the names a bundle holds are accepted, each within its size cap and
    matching the manifest's sha256; nothing is left behind in ``dest`` when the bundle is refused.

    Raises:
        BundleError: the bundle is unreadable, foreign, tampered with or unsafe (one line).
    """
    bundle, dest = Path(bundle), Path(dest)
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} does not exist")
    if bundle.stat().st_size > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle {bundle} is over the {MAX_BUNDLE_BYTES:,}-byte cap")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest} already exists and is not an empty folder; unpack elsewhere")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpacking-", dir=dest.parent))
    try:
        present = _extract(bundle, scratch)
        if MANIFEST not in present:
            raise BundleError(f"{bundle} has no {MANIFEST}: it is not an rznas run bundle")
        manifest = _read_json(scratch / MANIFEST, "the bundle")
        files = _check_manifest(manifest, present)
        for name, entry in files.items():
            path = scratch / name
            if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                raise BundleError(f"bundle member {name} does not match its sha256 in the "
                                  "manifest: the bundle was altered or damaged")
        config = _read_json(scratch / CONFIG, "the bundle")
        summary = _read_json(scratch / SUMMARY, "the bundle")
        fork_state = (_read_json(scratch / FORK_STATE, "the bundle")
                      if FORK_STATE in files else None)
        for name in SQLITE_FILES:
            _check_sqlite(scratch / name, name)
        _check_prompt_files(manifest, summary, files, scratch / "prompts")
        scratch.chmod(0o755)  # mkdtemp made it private; the unpacked run is an ordinary folder
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(scratch, dest)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Bundle(root=dest, manifest=manifest, config=config, summary=summary,
                  prompts_dir=dest / "prompts", llm_cache=dest / LLM_CACHE, scores=dest / SCORES,
                  events=dest / EVENTS, fork_state=fork_state)


# -- comparing a replay with its recording ---------------------------------------------------------


def _canonical(value: Any) -> str:
    """JSON text that compares NaN equal to NaN and ignores key order."""
    return json.dumps(value, sort_keys=True, allow_nan=True)


def _shown(value: Any, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def _decision(event: dict[str, Any]) -> dict[str, Any]:
    kind = event["event"]
    record = {}
    for field in DECISION_FIELDS[kind]:
        if field == "error_kind":
            error = event.get("error")
            record[field] = error.get("kind") if isinstance(error, dict) else error
        elif field == "evaluations" and event.get("iteration") == 0:
            # The initial population's count leaves out score-cache hits, which a replay from
            # the bundle's score cache has many of; later counts are unique candidates.
            continue
        else:
            record[field] = event.get(field)
    return record


_STAGE = {"proposal": 0, "evaluation": 1, "reflection": 2}


def _steps(events: Iterable[dict[str, Any]]) -> dict[tuple, tuple[dict[str, Any], dict[str, Any]]]:
    """Map each decision step to (its event, its decision fields); the last record of a step wins.

    A resumed run re-runs the step it was stopped in, so a step may be recorded twice; its final
    record is the one the run went on with.
    """
    steps: dict[tuple, tuple[dict[str, Any], dict[str, Any]]] = {}
    init_count = 0
    for event in events:
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "run_started":
            init_count = 0  # a resumed session samples the initial population again
        if kind not in DECISION_FIELDS:
            continue
        iteration = event.get("iteration") if isinstance(event.get("iteration"), int) else -1
        slot = event.get("slot") if isinstance(event.get("slot"), int) else -1
        if kind == "population_updated":
            key: tuple = (iteration, 1, -1, 0, 0)
        elif kind == "evaluation" and event.get("phase") == "init":
            key = (iteration, 0, -1, 1, init_count)
            init_count += 1
        else:
            attempt = event.get("attempt") if kind == "proposal" else 0
            key = (iteration, 0, slot, _STAGE[kind], attempt if isinstance(attempt, int) else 0)
        steps[key] = (event, _decision(event))
    return steps


def _where(key: tuple, event: dict[str, Any]) -> str:
    iteration, _, slot, stage, index = key
    kind = event["event"]
    if kind == "population_updated":
        return f"iteration {iteration}: population update" if iteration else \
            "initial population: population update"
    if event.get("phase") == "init":
        return f"initial population, candidate {index + 1}: evaluation"
    what = f"proposal (attempt {index})" if kind == "proposal" else kind
    return f"iteration {iteration}, slot {slot}: {what}"


def _summary_difference(expected: Any, actual: Any, path: str) -> str | None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in list(expected) + [k for k in actual if k not in expected]:
            if not path and key in SUMMARY_FIELDS_NOT_COMPARED:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                return (f"summary.json differs at {where}: expected {_shown(expected[key])}, "
                        "missing in the replay")
            if key not in expected:
                return (f"summary.json differs at {where}: the replay has "
                        f"{_shown(actual[key])}, not in the recording")
            found = _summary_difference(expected[key], actual[key], where)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (a, b) in enumerate(zip(expected, actual)):
            found = _summary_difference(a, b, f"{path}[{index}]")
            if found:
                return found
        return None
    if _canonical(expected) != _canonical(actual):
        return f"summary.json differs at {path}: expected {_shown(expected)}, got {_shown(actual)}"
    return None


def first_divergence(expected_summary: dict[str, Any], actual_summary: dict[str, Any],
                     expected_events: Iterable[dict[str, Any]],
                     actual_events: Iterable[dict[str, Any]]) -> str | None:
    """Return None when a replay matches its recording, else one line naming the first difference.

    The event streams are compared step by step (proposals, evaluations, reflections, population
    updates, on their ``DECISION_FIELDS``) in search order, so the line points at the first step
    that went differently, e.g. ``iteration 2, slot 0: proposal (attempt 1) differs: expected
    child X, got Y``. Parallel slots may write their events in any order; that is not a
    difference. When every step matches, ``summary.json`` is compared, without
    ``SUMMARY_FIELDS_NOT_COMPARED``.
    """
    expected_steps, actual_steps = _steps(expected_events), _steps(actual_events)
    for key in sorted(set(expected_steps) | set(actual_steps)):
        if key not in actual_steps:
            event, record = expected_steps[key]
            first = next(iter(record))
            return (f"{_where(key, event)} missing from the replay "
                    f"(expected {first} {_shown(record[first])})")
        if key not in expected_steps:
            event, record = actual_steps[key]
            first = next(iter(record))
            return (f"{_where(key, event)} is extra in the replay "
                    f"({first} {_shown(record[first])}, not in the recording)")
        (event, expected), (_, actual) = expected_steps[key], actual_steps[key]
        for field in expected:
            if _canonical(expected[field]) != _canonical(actual.get(field)):
                return (f"{_where(key, event)} differs: expected {field} "
                        f"{_shown(expected[field])}, got {_shown(actual.get(field))}")
    return _summary_difference(expected_summary, actual_summary, "")


# -- command line ----------------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    """``python -m graphs.bundle RUN_DIR [-o FILE.tar.gz]``; returns the exit code."""
    parser = UsageParser(
        prog="python -m graphs.bundle",
        description="Pack a finished run into one .tar.gz that python -m graphs.search --replay "
                    "re-runs offline (config, prompts, models, LLM and score caches, versions).")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE.tar.gz",
                        help="where to write the bundle (default: RUN_DIR.tar.gz next to RUN_DIR)")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    output: Path = args.output or run_dir.resolve().parent / f"{run_dir.resolve().name}.tar.gz"
    if output.is_dir():
        print(f"error: output {output} is a folder; name a file such as {output / 'run.tar.gz'}",
              file=sys.stderr)
        return 2
    try:
        written = pack(run_dir, output)
        manifest = json.loads(_manifest_of(written))
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    models = ", ".join(f"{role} {name}" for role, name in manifest["models"].items() if name)
    prompts = ", ".join(entry["id"] for entry in manifest["prompts"].values())
    commit = manifest["git_commit"]
    commit_text = "unknown (not a git checkout)" if commit is None else \
        commit[:12] + (" with uncommitted changes" if manifest["git_dirty"] else "")
    print(f"packed {run_dir} -> {written} ({_size(written.stat().st_size)})")
    print(f"models: {models}")
    print(f"prompts: {prompts}")
    print(f"commit: {commit_text}")
    print(f"replay: python -m graphs.search --replay {written} --output DIR")
    return 0


def _manifest_of(bundle: Path) -> bytes:
    with tarfile.open(bundle, "r:gz") as tar:
        member = tar.extractfile(MANIFEST)
        if member is None:
            raise BundleError(f"{bundle} has no {MANIFEST}")
        return member.read()


if __name__ == "__main__":
    sys.exit(main())
