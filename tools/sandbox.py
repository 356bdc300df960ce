"""Worker side of the evaluation sandbox: ``python -m tools.sandbox`` (the zygote) and its workers.

The parent (``tools.worker_process``) starts one zygote per pool with a scrubbed environment in a
fresh temporary directory. The zygote imports torch, the registries and warms up FLOP counting
once, then forks a worker per request, so replacing a killed worker takes a fraction of a second.
Each worker talks JSON lines with the parent over private pipes (candidate prints go to its log
file and stdin is /dev/null, so candidate code cannot corrupt the channel). Before accepting work
a worker locks itself down:

- its own session (the parent kills the whole process group) and scratch directory (cwd, HOME,
  TMPDIR);
- as root, its own empty network namespace (no interface but a downed loopback);
- rlimits: address space (CPU device: footprint after start-up + ``memory_mb``), CPU time per
  candidate (a backstop: the parent enforces the wall-clock timeout by killing the worker), file
  size, no core dumps, and RLIMIT_NPROC=0 for non-root users (root ignores it);
- a ``sys.addaudithook`` hook that refuses process creation, sockets, ctypes, ``gc`` object walks,
  changing rlimits, signalling other processes, and opening files for writing outside the scratch
  directory or for reading outside the Python installation and the ``tools`` package (so
  ``/proc/<parent>/environ`` and secret files stay unreadable), plus stubs for the process
  functions that have no audit event;
- CPU workers: the same file policy as a Landlock rule set where the kernel has Landlock, so the
  kernel also binds torch's C++ readers and writers, which no audit event sees;
- a watchdog thread that exits when the zygote (and so the parent) is gone.

The static check of ``torch-code`` runs before all of this; these layers contain code that gets
past it. They are defence in depth, not a proof: CPython cannot be sandboxed completely from
inside, so run searches over hostile models inside a container as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: Environment variables a worker keeps (exact names) and name prefixes it keeps.
KEEP_ENV = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "PYTHONHASHSEED",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
    }
)
KEEP_ENV_PREFIXES = (
    "LC_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "KMP_",
    "CUDA_",
    "NVIDIA_",
    "CUBLAS_",
    "CUDNN_",
    "TORCH_",
    "PYTORCH_",
)
#: Names that look like secrets are dropped even when a keep rule matches them.
SECRET_ENV = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|^AWS_|"
    r"^OPENAI_|^ANTHROPIC_|^AZURE_|^GOOGLE_|^GCP_|^HF_|^HUGGING|^GITHUB_|^GH_",
    re.I,
)
_CLONE_NEWNET, _CLONE_NEWNS = 0x40000000, 0x00020000


def scrubbed_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """Return the environment for a worker: an allow-list of ``base`` minus anything secret-like."""
    base = dict(os.environ if base is None else base)
    env = {
        k: v
        for k, v in base.items()
        if (k in KEEP_ENV or k.startswith(KEEP_ENV_PREFIXES)) and not SECRET_ENV.search(k)
    }
    env.update(extra)
    return env


# --- lock-down ---------------------------------------------------------------------------------
class _Guard:
    """The audit hook: what a worker may still do once it runs candidate code."""

    #: Audit events refused outright: processes, sockets, ctypes, object walks, tracing.
    DENIED_EVENTS = frozenset(
        """
        subprocess.Popen os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty
        os.startfile pty.spawn os.killpg signal.pthread_kill socket.__new__ socket.connect
        socket.bind socket.sendto socket.sendmsg socket.getaddrinfo socket.gethostbyname
        urllib.Request http.client.connect webbrowser.open ctypes.dlopen ctypes.dlsym
        ctypes.cdata ctypes.call_function ctypes.string_at ctypes.wstring_at ctypes.addressof
        ctypes.create_string_buffer gc.get_objects gc.get_referrers gc.get_referents
        sys.settrace sys.setprofile code.__new__ resource.prlimit os.putenv os.unsetenv
        mmap.__new__
    """.split()
    )
    #: Events allowed only when every path argument lies inside the scratch directory.
    PATH_EVENTS = frozenset(
        """
        os.remove os.rmdir os.rename os.link os.symlink os.truncate os.chmod os.chown os.mkdir
        os.utime shutil.rmtree shutil.move shutil.copyfile os.chdir
    """.split()
    )
    #: Directory listings, allowed only under the read roots.
    LIST_EVENTS = frozenset({"os.listdir", "os.scandir", "glob.glob"})
    #: Modules that may not be loaded after the lock-down (already loaded ones are stubbed).
    DENIED_IMPORTS = frozenset(
        """
        subprocess _posixsubprocess socket _socket ctypes _ctypes multiprocessing pty
        urllib.request http.client ftplib smtplib telnetlib webbrowser
    """.split()
    )
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def __init__(self, scratch: str) -> None:
        import resource

        self.scratch = os.path.realpath(scratch)
        self.pid = os.getpid()
        self.rlimit_cpu = resource.RLIMIT_CPU
        roots = {
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            sys.base_exec_prefix,
            str(Path(__file__).resolve().parent),
            self.scratch,
            f"/proc/{self.pid}",
            "/sys/devices/system/cpu",
            "/dev/null",
            "/dev/urandom",
        }
        self.read_roots = tuple(os.path.realpath(r) for r in roots if r)

    @staticmethod
    def _under(path: str, roots: tuple[str, ...] | str) -> bool:
        roots = (roots,) if isinstance(roots, str) else roots
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def _real(self, path: Any) -> str | None:
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if not isinstance(path, str):
            return None
        if path.startswith("/proc/self"):
            path = f"/proc/{self.pid}" + path[len("/proc/self") :]
        return os.path.realpath(path)

    def __call__(self, event: str, args: tuple) -> None:
        if event == "open":
            self._check_open(*args[:3])
        elif event in self.DENIED_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event == "import" and args[0] in self.DENIED_IMPORTS:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        elif event == "os.kill" and args[0] != self.pid:
            raise PermissionError("sandbox: signalling other processes is not allowed")
        elif event == "resource.setrlimit" and args[0] != self.rlimit_cpu:
            raise PermissionError("sandbox: changing resource limits is not allowed")
        elif event in self.PATH_EVENTS:
            for arg in args:
                real = self._real(arg)
                if real is not None and not self._under(real, self.scratch):
                    raise PermissionError(f"sandbox: {event} outside the scratch directory")
        elif event in self.LIST_EVENTS:
            real = self._real(args[0] if args and args[0] is not None else ".")
            if real is not None and not self._under(real, self.read_roots):
                raise PermissionError(f"sandbox: listing {real} is not allowed")

    def _check_open(self, path: Any, mode: Any, flags: Any) -> None:
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & self._WRITE_FLAGS
        )
        real = self._real(path)
        if real is None:  # an already-open descriptor
            if writing:
                raise PermissionError("sandbox: opening a descriptor for writing is not allowed")
            return
        if writing and not (self._under(real, self.scratch) or real == "/dev/null"):
            raise PermissionError(f"sandbox: writing {real} is not allowed")
        if not writing and not self._under(real, self.read_roots):
            raise PermissionError(f"sandbox: reading {real} is not allowed")


_MS = {
    "nosuid": 2,
    "nodev": 4,
    "noexec": 8,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
}
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _isolate(scratch: str) -> dict[str, bool]:
    """Enter empty network and private mount namespaces; make every mount but ``scratch`` read-only.

    Needs root (CAP_SYS_ADMIN) and a single-threaded process; elsewhere it does nothing and the
    audit hook is the only guard. Every change is to this process's private copy of the mount
    table (made private first), never to the host's.
    """
    done = {"netns": False, "readonly_fs": False}
    if os.geteuid() != 0:
        return done
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    done["netns"] = libc.unshare(_CLONE_NEWNET) == 0
    if libc.unshare(_CLONE_NEWNS) != 0:
        return done
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return done
    if libc.mount(scratch.encode(), scratch.encode(), None, _MS_BIND, None) != 0:
        return done
    ok = True
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        options = fields[5].split(",")
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040
        if target == scratch:
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | sum(_MS.get(o, 0) for o in options)
        ok &= libc.mount(None, target.encode(), None, flags, None) == 0
    done["readonly_fs"] = ok
    return done


def _mask_proc() -> bool:
    """Hide /proc (other processes' environments) behind an empty read-only tmpfs; root only."""
    if os.geteuid() != 0:
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    flags = _MS_RDONLY | _MS["nosuid"] | _MS["nodev"] | _MS["noexec"]
    return libc.mount(b"tmpfs", b"/proc", b"tmpfs", flags, b"size=4k") == 0


_LL_READ_FILE, _LL_READ_DIR, _LL_WRITE_FILE = 1 << 2, 1 << 3, 1 << 1
_LL_FS_BITS_BY_ABI = {1: 13, 2: 14}  # number of filesystem rights each ABI knows; 3+ knows 15
_SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (x86_64 and arm64)
_SYSTEM_LIBRARY_DIRS = (
    "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache"
)


def _landlock(scratch: str, read_roots: tuple[str, ...]) -> bool:
    """Let the kernel confine file access: read under ``read_roots``, write only in ``scratch``.

    Why: the audit hook sees only Python-level opens; torch's C++ readers and writers
    (``torch._C._VariableFunctions.from_file``, ``PyTorchFileWriter``, TorchScript ``save``)
    bypass it. Landlock (Linux 5.13+) needs no privileges, so it also covers non-root users.
    With ABI 4+ it refuses TCP bind/connect, with ABI 6+ abstract Unix sockets and signals to
    processes outside the worker. Returns False where the kernel lacks Landlock; CPU workers only.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    create, add_rule, restrict = _SYS_LANDLOCK
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # ABI version
    if abi < 1:
        return False
    handled_fs = (1 << _LL_FS_BITS_BY_ABI.get(abi, 15)) - 1  # every right, EXECUTE included
    attr = (ctypes.c_uint64 * 3)(handled_fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 * (3 if abi >= 6 else 2 if abi >= 4 else 1)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))

    def allow(path: str, access: int) -> bool:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return True  # absent here (e.g. /proc once masked): nothing to allow
        try:
            if not os.path.isdir(path):  # files take file rights only
                access &= _LL_READ_FILE | _LL_WRITE_FILE | (1 << 14 if abi >= 3 else 0)
            rule = PathBeneath(access, fd)
            return libc.syscall(add_rule, ctypes.c_int(ruleset), 1, ctypes.byref(rule), 0) == 0
        finally:
            os.close(fd)

    try:
        scratch_rights = handled_fs & ~1  # everything in the scratch directory except execve
        # System libraries too: C code may dlopen them lazily, which the audit hook never sees.
        roots = {*read_roots, *_SYSTEM_LIBRARY_DIRS} - {scratch}
        ok = all(allow(r, _LL_READ_FILE | _LL_READ_DIR) for r in sorted(roots))
        ok &= allow(scratch, scratch_rights) and allow("/dev/null", scratch_rights)
        no_new_privs = libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS, required by Landlock
        return ok and no_new_privs and libc.syscall(restrict, ruleset, 0) == 0
    finally:
        os.close(ruleset)


def _set_limits(config: dict, device: str) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
    if device == "cpu":  # CUDA maps huge virtual ranges, so RLIMIT_AS only suits CPU workers
        with open("/proc/self/statm") as f:
            vm_bytes = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vm_bytes + int(config["memory_mb"]) * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; the audit hook covers that case
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def _refuser(what: str) -> Any:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise PermissionError(f"sandbox: {what} is not allowed")

    return refuse


def _defang() -> None:
    """Replace functions that start processes or touch files from C, which no audit event sees."""
    for name in ("fork", "forkpty", "system", "execv", "execve", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, _refuser("starting processes"))
    if "_posixsubprocess" in sys.modules:
        sys.modules["_posixsubprocess"].fork_exec = _refuser("starting processes")
    import torch

    for owner, name in (
        (torch, "save"),
        (torch.serialization, "save"),
        (torch.jit, "save"),
        (torch, "from_file"),
        (torch.UntypedStorage, "from_file"),
        (torch.TypedStorage, "from_file"),
    ):
        setattr(owner, name, _refuser(f"torch {name} (file access from C++)"))
    if "numpy" in sys.modules:
        sys.modules["numpy"].fromfile = _refuser("numpy.fromfile (file access from C)")


def _serve(worker: Any, proto_in: Any, proto_out: Any, config: dict) -> None:
    """Answer task lines until the parent closes the channel."""
    import resource

    cpu_budget = int(config.get("timeout_s", 60) * max(1, config.get("threads", 1))) + 10
    for line in proto_in:
        task = json.loads(line)
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime) + cpu_budget
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        reply = worker.run(task)
        proto_out.write(json.dumps(reply) + "\n")
        proto_out.flush()
        if reply["restart"]:
            return


def _child(request: dict, fds: list[int], zygote_pid: int) -> None:
    """Become one worker: forked from the zygote, lock down, then serve tasks (never returns)."""
    code = 0
    try:
        task_fd, reply_fd, log_fd = fds
        os.setsid()  # own process group, so the parent can kill everything it might start
        os.dup2(log_fd, 2)
        os.dup2(log_fd, 1)  # candidate prints go to the worker's log file
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd in (log_fd, devnull):
            os.close(fd)
        scratch = request["scratch"]
        os.chdir(scratch)
        os.environ.update(HOME=scratch, TMPDIR=scratch)
        if request.get("cuda_device") is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(request["cuda_device"])
        config = request["config"]
        isolation = _isolate(os.path.realpath(scratch))  # the zygote is single-threaded: so is this
        os.chdir(scratch)  # again: the old cwd points below the scratch bind mount
        proto_in = os.fdopen(task_fd, "r", encoding="utf-8")
        proto_out = os.fdopen(reply_fd, "w", encoding="utf-8")
        try:
            from tools.sandbox_worker import Worker, describe

            worker = Worker(config)
            # Start the watchdog before the limits: RLIMIT_NPROC=0 forbids new threads too.
            threading.Thread(target=_watch_parent, args=(zygote_pid,), daemon=True).start()
            _set_limits(config, worker.device)
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            # CUDA drivers may read /proc at run time, so only CPU workers lose it.
            isolation["proc_masked"] = worker.device == "cpu" and _mask_proc()
            guard = _Guard(scratch)
            # CUDA drivers open device and /sys files at run time: CPU workers only, as above.
            isolation["landlock"] = worker.device == "cpu" and _landlock(
                guard.scratch, guard.read_roots
            )
            sys.addaudithook(guard)
            _defang()
        except BaseException as exc:  # noqa: BLE001 - report start-up failures to the parent
            proto_out.write(json.dumps({"ready": False, "error": describe(exc)}) + "\n")
            proto_out.flush()
            raise
        proto_out.write(
            json.dumps({"ready": True, "pid": os.getpid(), "rss": rss, "isolation": isolation})
            + "\n"
        )
        proto_out.flush()
        _serve(worker, proto_in, proto_out, config)
    except BaseException:  # noqa: BLE001 - the log file explains; the parent reports the death
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def zygote(control_fd: int, config: dict) -> None:
    """Import torch and the registries once, then fork one worker per request on ``control_fd``.

    Requests arrive on an AF_UNIX SEQPACKET socket as a JSON message carrying three descriptors
    (task pipe, reply pipe, log file). The zygote answers ``{"spawned": id, "pid": pid}`` and
    reports every child that exits as ``{"exited": pid, "status": waitpid_status}``. It stays
    single-threaded so forking it is safe, and never initialises CUDA (children do).
    """
    import socket

    import torch

    torch.set_num_threads(int(config.get("threads", 1)))
    torch.set_num_interop_threads(1)
    from tools import costs, proxies, spaces  # noqa: F401 - imported once, shared by children
    from tools.sandbox_worker import warm_up

    spaces.load_builtin()
    proxies.load_builtin()
    warm_up(config.get("proxies", ()), "cpu")
    control = socket.socket(fileno=control_fd)
    scratches: dict[int, str] = {}  # worker pid (negated once reaped) -> scratch directory
    try:
        _fork_loop(control, scratches)
    except OSError:
        pass  # the parent went away mid-message
    finally:  # a killed parent never cleans up: stop the workers and remove their directories
        live = [pid for pid in scratches if pid > 0]  # reaped workers are stored as -pid
        for pid in live:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for pid in live:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        for scratch in scratches.values():
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(os.getcwd(), ignore_errors=True)


def _fork_loop(control: Any, scratches: dict[int, str]) -> None:
    """Serve fork requests until the parent closes the control socket."""
    import select
    import socket

    me = os.getpid()
    control.sendall(json.dumps({"zygote": me}).encode())
    while True:
        readable, _, _ = select.select([control], [], [], 0.2)
        while True:  # reap exited workers and tell the parent how they ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            # The parent still reads the log in there, so the directory goes at shutdown.
            scratches[-pid] = scratches.pop(pid, "")
            control.sendall(json.dumps({"exited": pid, "status": status}).encode())
        if not readable:
            continue
        message, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
        if not message:
            return
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            control.close()
            _child(request, fds, me)
        scratches[pid] = request["scratch"]
        for fd in fds:
            os.close(fd)
        control.sendall(json.dumps({"spawned": request["id"], "pid": pid}).encode())


if __name__ == "__main__":
    zygote(int(sys.argv[1]), json.loads(sys.argv[2]))
