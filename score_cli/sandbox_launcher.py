"""The sandbox's launcher: the program that sets up a sandboxed program's isolation, from inside.

`score_cli.sandbox` starts every program as `python -I -S -c _BOOT FD` (isolated mode, no site:
no environment variables, user site-packages or `.pth` files act on it, and nothing is imported
but the interpreter's own startup modules). The boot reads this module's code from the socket FD
and runs it as `__main__` of that process: compiled by the caller when the interpreter is the
caller's own (`marshal`; compiling it at every start would cost ~10 ms a program), else as its
source text. The caller reads it from this file once (`sandbox._launcher_message`) and never
imports it. So this file is never on a command line and never in the program's root (an
allow-list that holds the interpreter and the system libraries, not score), exactly as when it
was a string inside `sandbox.py`; it only became a file that tests, linters and coverage see.

What runs there has only the interpreter and its standard library: this module imports nothing
of `score_cli` and nothing installed (`tests/test_layout.py` checks), and imports what it needs
inside the functions that need it, since every import is paid by every program. Importing the
module (as the tests of its pure parts do) runs nothing: `_main` runs only as `__main__`.

What it does, in order: reads its configuration (and the program) from FD, creates the
namespaces and forks the first process of the new PID namespace (the launcher's own process stays
outside, reaps it and ends the way it ended). That one joins the memory cgroup, builds the
allow-listed root and pivots into it, sets the resource limits, drops privileges and
capabilities, reports the layers applied on FD ("ready ...") and runs the program; with tests it
becomes the *tester* instead: it forks the program's process, reads the tests from FD only then,
and runs them in its own pristine interpreter once the program's module has run, through proxies
to the program's objects that carry plain data only (see `score_cli.sandbox` for the guarantees).
"""

import _signal
import errno
import marshal
import os
import sys

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
        import _posixsubprocess  # noqa: F401
        if not ns:
            import socket  # noqa: F401
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
    import _posixsubprocess
    import builtins
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
    import _socket
    import socket
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
        import linecache
        import traceback
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
    import builtins
    import types
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


if __name__ == "__main__":  # as the boot runs it; importing the module (tests, coverage) runs nothing
    sys.dont_write_bytecode = True
    _main()
