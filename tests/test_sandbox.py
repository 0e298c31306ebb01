"""Containment: every hostile program ends as a failed program within its limits, and this test
process (the caller) goes on unharmed. Most run with guard=False, so they prove the OS layers
(namespaces, unprivileged uid, rlimits), not the Python-level guard.

Limits are tight on purpose: these run on small shared machines.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from score_cli.sandbox import STATUSES, ExecResult, _root_layout, run_many, run_program


@pytest.fixture(scope="module")
def isolation() -> tuple[str, ...]:
    r = run_program("pass")
    assert r.status == "ok", r.stderr
    return r.isolation


def need(isolation: tuple[str, ...], *layers: str) -> None:
    """Skip where the machine does not allow a layer the check relies on (say which)."""
    have = {n.split("=")[0] for n in isolation}
    missing = [n for n in layers if n not in have]
    if missing:
        pytest.skip(f"this machine does not allow: {', '.join(missing)}")


def procs_named(comm: str) -> list[int]:
    """Host pids whose process name (/proc/PID/comm) is `comm`."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if Path(f"/proc/{p}/comm").read_text().strip() == comm:
                    found.append(int(p))
            except OSError:
                pass
    return found


def gone(comm: str, within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while procs_named(comm):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def name_self(comm: str) -> str:
    """Program text that renames the program's process, so the test can look for it on the host."""
    return f"import ctypes\nctypes.CDLL(None).prctl(15, {comm.encode()!r}, 0, 0, 0)  # PR_SET_NAME\n"


def test_this_machine_gets_the_strong_layers(isolation):
    """On Linux as root (this project's machines) all layers must be there; elsewhere, say which."""
    if os.geteuid() == 0:
        for layer in ("netns", "pidns", "mountns", "allowlist", "ro-root", "tmpfs-home", "nocaps", "rlimits", "guard"):
            assert layer in isolation
        assert any(n.startswith("uid=") for n in isolation)
    else:
        need(isolation, "netns", "pidns")
    assert "memcg" in isolation or "memory-split" in isolation  # the process tree's memory is bounded


def test_ok_output_and_stdin():
    r = run_program("name = input()\nprint('hello', name[::-1])", stdin="dlrow\n")
    assert isinstance(r, ExecResult) and r.status in STATUSES
    assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "hello world\n", "")
    assert 0 < r.duration < 5


@pytest.mark.parametrize(
    "code, status, rc",
    [
        ("import sys\nsys.exit(0)", "ok", 0),
        ("import sys\nsys.exit(3)", "failed", 3),
        ("import os\nprint('buffered, lost')\nos._exit(5)", "failed", 5),
        ("raise ValueError('boom')", "failed", 1),
        ("def f(:\n    pass", "failed", 1),
    ],
)
def test_exit_codes(code, status, rc):
    r = run_program(code)
    assert (r.status, r.returncode) == (status, rc)
    if "ValueError" in code:
        assert 'File "program.py", line 1' in r.stderr and "ValueError: boom" in r.stderr
        assert "<string>" not in r.stderr  # the launcher's frames are not in the traceback
    if "def f(:" in code:
        assert "SyntaxError" in r.stderr


def test_infinite_loop_times_out_and_its_whole_tree_dies(isolation):
    """A loop that also left a child in its own session (escaping the process group): both die."""
    marker = f"sbx-loop-{secrets.token_hex(3)}"
    code = name_self(marker) + (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    while True: time.sleep(1)\n"
        "print('started', flush=True)\n"
        "while True: pass\n"
    )
    t = time.monotonic()
    r = run_program(code, timeout=1, guard=False)
    assert r.status == "timeout" and r.returncode == -signal.SIGKILL
    assert r.stdout == "started\n"
    assert time.monotonic() - t < 3
    need(isolation, "pidns")  # without a PID namespace a setsid'd child can outlive the group kill
    assert gone(marker), f"left behind: {procs_named(marker)}"


def test_fork_bomb_stops_at_the_process_limit(isolation):
    """RLIMIT_NPROC: forks fail after a handful of processes; everything dies afterwards."""
    marker = f"sbx-fork-{secrets.token_hex(3)}"
    code = name_self(marker) + (
        "import os, sys, time\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('fork failed after', n, e.errno, flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    r = run_program(code, timeout=1, max_procs=8, guard=False)
    assert r.status == "timeout"
    assert r.stdout.startswith("fork failed after")
    assert int(r.stdout.split()[3]) < 8
    need(isolation, "pidns")
    assert gone(marker), f"left behind: {procs_named(marker)}"


def test_classic_spinning_fork_bomb_is_contained(isolation):
    marker = f"sbx-bomb-{secrets.token_hex(3)}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    code = name_self(marker) + bomb
    t = time.monotonic()
    r = run_program(code, timeout=1, max_procs=6, guard=False)
    assert r.status == "timeout"
    assert time.monotonic() - t < 4
    need(isolation, "pidns")
    assert gone(marker), f"left behind: {procs_named(marker)}"


@pytest.mark.parametrize(
    "code",
    [
        "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))",
        "x = bytearray(2**34)",
        "x = 'a' * (2**33)",
    ],
)
def test_memory_bomb_fails_within_the_limit(code):
    r = run_program(code, memory_mb=200, timeout=5, guard=False)
    assert r.status == "failed" and "MemoryError" in r.stderr


def test_network_is_unreachable_even_on_localhost():
    """The test listens on a local port; the program cannot connect, and the listener sees nothing."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'stolen')\n"
            "print('connected')\n"
        )
        for guard in (False, True):
            r = run_program(code, timeout=5, guard=guard)
            assert r.status == "failed" and "connected" not in r.stdout
            assert "OSError" in r.stderr or "PermissionError" in r.stderr
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()


@pytest.mark.parametrize("world_writable", [False, True])
def test_files_outside_its_directory_cannot_be_written_or_deleted(tmp_path, isolation, world_writable):
    """A directory of the caller (private, or even mode 0777 with a 0666 file: then only the read-only
    mount stops it), /tmp and the repository: nothing can be created, changed or deleted."""
    need(isolation, "ro-root" if world_writable else "uid")
    target = tmp_path / "victim"
    target.mkdir()
    keep = target / "keep.txt"
    keep.write_text("precious")
    if world_writable:
        os.chmod(tmp_path, 0o755)
        os.chmod(target, 0o777)
        os.chmod(keep, 0o666)
    stray = f"/tmp/sbx-stray-{secrets.token_hex(4)}"
    repo_file = Path(__file__).resolve().parent / f"sbx-stray-{secrets.token_hex(4)}.py"
    code = (
        "import os\n"
        "def attempt(what, f):\n"
        "    try:\n"
        "        f()\n"
        "        print(what, 'DONE')\n"
        "    except OSError as e:\n"
        "        print(what, 'denied', type(e).__name__)\n"
        f"attempt('create', lambda: open({str(target / 'new.txt')!r}, 'w').write('x'))\n"
        f"attempt('overwrite', lambda: open({str(keep)!r}, 'w').write('gone'))\n"
        f"attempt('delete', lambda: os.remove({str(keep)!r}))\n"
        f"attempt('tmp', lambda: open({stray!r}, 'w').write('x'))\n"
        f"attempt('repo', lambda: open({str(repo_file)!r}, 'w').write('x'))\n"
        "attempt('own', lambda: open('mine.txt', 'w').write('fine'))\n"
        "print('cwd', os.getcwd())\n"
    )
    r = run_program(code, guard=False)
    assert r.status == "ok", r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    for what in ("create", "overwrite", "delete", "tmp", "repo"):
        assert lines[what].startswith("denied"), (what, lines[what])
    assert lines["own"] == "DONE"
    assert keep.read_text() == "precious"
    assert not (target / "new.txt").exists() and not os.path.exists(stray) and not repo_file.exists()
    assert not os.path.exists(lines["cwd"])  # its own directory is deleted afterwards
    if world_writable:
        assert stat.S_IMODE(keep.stat().st_mode) == 0o666


def test_disk_is_limited(isolation):
    """RLIMIT_FSIZE caps any one file; the size-limited tmpfs caps its whole directory."""
    one_file = "f = open('big', 'wb')\nfor _ in range(16):\n    f.write(bytes(2**20))\nf.close()"
    r = run_program(one_file, disk_mb=4, guard=False)
    assert r.status == "failed" and "File too large" in r.stderr
    need(isolation, "tmpfs-home")
    many = "for i in range(16):\n    open(f'f{i}', 'wb').write(bytes(2**20))"
    r = run_program(many, disk_mb=4, guard=False)
    assert r.status == "failed" and "No space left" in r.stderr


def test_killing_its_parent_or_the_caller_does_not_hurt_the_caller(isolation):
    me = os.getpid()
    programs = [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still here')",
        f"import os, signal\nos.kill({me}, signal.SIGKILL)",
        f"import os, signal\nos.killpg(os.getpgid({me}), signal.SIGKILL)",
        f"import os, signal\nos.kill({os.getppid()}, signal.SIGKILL)",  # the test runner's parent
    ]
    if "pidns" in isolation or any(n.startswith("uid=") for n in isolation):
        programs.append("import os, signal\nos.kill(-1, signal.SIGKILL)")  # everything it may signal
    for code in programs:
        r = run_program(code, guard=False, timeout=5)
        assert r.status in ("ok", "failed", "killed"), (code, r)
    assert os.getpid() == me and run_program("print('fine')").stdout == "fine\n"


def test_printing_gigabytes_is_capped_and_quick():
    for stream in ("stdout", "stderr"):
        t = time.monotonic()
        flood = f"import sys\nwhile True:\n    sys.{stream}.write('x' * 65536)"
        r = run_program(flood, max_output_bytes=10_000)
        assert r.status == "output_limit" and r.truncated
        assert len(getattr(r, stream)) == 10_000
        assert time.monotonic() - t < 3


def test_caller_environment_is_invisible(monkeypatch):
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    monkeypatch.setenv("SCORE_SECRET", secret)
    code = (
        "import os\n"
        "print(dict(os.environ))\n"
        f"for p in ('/proc/1/environ', '/proc/{os.getpid()}/environ'):\n"
        "    try:\n"
        "        print(open(p, 'rb').read())\n"
        "    except OSError as e:\n"
        "        print(p, type(e).__name__)\n"
    )
    r = run_program(code, guard=False)
    assert r.status == "ok", r.stderr
    assert "SCORE_SECRET" not in r.stdout and secret not in r.stdout + r.stderr
    env = eval(r.stdout.splitlines()[0])  # noqa: S307 - our own program's repr of a dict of str
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL"}
    assert set(env) <= allowed | {k for k in env if k.startswith("PYTHON")}
    assert env["HOME"] == env["TMPDIR"]


def test_the_guard_is_a_second_layer():
    r = run_program("import os\nos.kill(os.getpid(), 9)")
    assert r.status == "failed" and "disabled in the score sandbox" in r.stderr
    r = run_program("import subprocess\nsubprocess.run(['true'])")
    assert r.status == "failed" and "PermissionError" in r.stderr
    r = run_program("import shutil\nshutil.rmtree('/usr')")
    assert r.status == "failed" and "PermissionError" in r.stderr


def test_run_many_keeps_order_and_runs_in_parallel(isolation):
    programs = [f"import os, time\ntime.sleep({0.3 * (i % 2)})\nprint({i}, os.getuid())" for i in range(6)]
    t = time.monotonic()
    results = run_many(programs, workers=3, timeout=5)
    wall = time.monotonic() - t
    assert [r.stdout.split()[0] for r in results] == [str(i) for i in range(6)]
    assert all(r.status == "ok" for r in results)
    assert wall < sum(r.duration for r in results)  # overlapped
    if any(n.startswith("uid=") for n in isolation):
        assert len({r.stdout.split()[1] for r in results}) >= 2  # concurrent programs get different uids
    assert run_many([]) == []


def test_writes_to_dev_null_and_reads_of_dev_urandom_work():
    r = run_program("import os\nopen(os.devnull, 'w').write('x')\nprint(len(open('/dev/urandom', 'rb').read(8)))")
    assert (r.status, r.stdout) == ("ok", "8\n"), r.stderr


def test_host_files_and_unix_sockets_are_not_there(tmp_path, isolation):
    """The root is an allow-list: a world-readable file and a Unix socket in a world-writable
    directory of the caller (the issue's case), /etc and the repository are simply absent;
    an abstract Unix socket is in the host's network namespace."""
    need(isolation, "allowlist", "netns")
    os.chmod(tmp_path, 0o755)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    secret = shared / "notes.txt"
    secret.write_text("host secret")
    os.chmod(secret, 0o644)
    sock_path = str(shared / "caller.sock")
    abstract = f"\0score-sbx-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as hidden:
        listener.bind(sock_path)
        os.chmod(sock_path, 0o777)
        listener.listen()
        hidden.bind(abstract)
        hidden.listen()
        code = (
            "import os, socket\n"
            "def attempt(what, f):\n"
            "    try:\n"
            "        print(what, 'GOT', f())\n"
            "    except OSError as e:\n"
            "        print(what, 'denied', type(e).__name__)\n"
            f"attempt('file', lambda: open({str(secret)!r}).read())\n"
            "def connect(addr):\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    s.settimeout(1)\n"
            "    s.connect(addr)\n"
            "    s.sendall(b'stolen')\n"
            "    return s.recv(10)\n"
            f"attempt('socket', lambda: connect({sock_path!r}))\n"
            f"attempt('abstract', lambda: connect({abstract!r}))\n"
            "attempt('passwd', lambda: open('/etc/passwd').read())\n"
            f"attempt('repo', lambda: os.listdir({str(Path(__file__).resolve().parent)!r}))\n"
            "attempt('home', lambda: os.listdir('/home'))\n"
            "print('root', sorted(os.listdir('/')))\n"
        )
        r = run_program(code, guard=False)
        assert r.status == "ok", r.stderr
        lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
        for what in ("file", "socket", "abstract", "passwd", "repo", "home"):
            assert lines[what].startswith("denied"), (what, lines[what])
        assert "host secret" not in r.stdout
        root = set(eval(lines["root"]))  # noqa: S307 - our own program's repr of a list of str
        binds, links = _root_layout(sys.executable)  # only the top of what is allowed, nothing else
        tops = {p.split("/")[1] for p in [*binds, *(link for link, _ in links), tempfile.gettempdir()]}
        assert root <= tops | {"dev", "proc"} and "sys" not in root
        for s in (listener, hidden):
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                s.accept()


def test_memory_is_bounded_for_the_whole_process_tree(isolation):
    """The issue's case, scaled down: children that each hold 64 MB, against memory_mb=300. With a
    memory cgroup the tree is killed down to the bound; without one, the per-process share leaves
    no room for them. Either way, never more than 300 MB are held together."""
    code = (
        "import os, time\n"
        "kids = []\n"
        "for i in range(10):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            block = b'x' * (64 * 2**20)\n"
        "        except MemoryError:\n"
        "            os._exit(3)\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "    time.sleep(0.05)\n"
        "time.sleep(1.0)\n"
        "alive = [p for p in kids if os.waitpid(p, os.WNOHANG) == (0, 0)]\n"
        "print('forked', len(kids), 'alive', len(alive), flush=True)\n"
    )
    r = run_program(code, memory_mb=300, max_procs=16, timeout=10, guard=False)
    assert r.status == "ok", r.stderr
    forked, alive = int(r.stdout.split()[1]), int(r.stdout.split()[3])
    assert alive * 64 <= 300, r.stdout
    if "memcg" in r.isolation:
        assert forked == 10 and alive >= 2  # processes are not what is limited, memory is


# --------------------------------------------------------------------------- grading: faked passes
# The verdict comes from the tester (a separate process, PID 1 of the namespace); each program
# below is wrong, tries to make its tests pass anyway, and must not. `CHECK` is a correct program
# of the same shape, to show that the tests are not failing for another reason.

DOUBLE_TESTS = "assert double(2) == 4\nassert double(-3) == -6\nassert double(10) == 20\n"
CHECK = "def double(x):\n    return 2 * x\n"
WRONG = "def double(x):\n    return x\n"


def graded(code: str, tests: str = DOUBLE_TESTS, **kw):
    r = run_program(code, tests=tests, timeout=kw.pop("timeout", 5), **kw)
    assert r.status in STATUSES
    return r


def test_tests_run_in_the_tester_and_give_the_verdict(isolation):
    r = graded(CHECK)
    assert (r.status, r.returncode, r.passed) == ("ok", 0, True), r.stderr
    assert "tester" in r.isolation
    r = graded(WRONG)
    assert (r.status, r.passed) == ("failed", False)
    assert "line 1: assert double(2) == 4" in r.stderr and "AssertionError" in r.stderr
    assert run_program(CHECK).passed is None  # no tests, no verdict


ESCAPES = {
    # (a) The old marker: the program read it from its code object's constants, printed it and
    # exited 0 before the asserts. There is no marker now; these look for anything of the kind.
    "co_consts-marker": "import sys, posix\n"
    "for c in sys._getframe(0).f_code.co_consts:\n"
    "    if isinstance(c, (bytes, str)):\n"
    "        posix.write(1, (c if isinstance(c, bytes) else c.encode()) + b'\\n')\n"
    "posix._exit(0)\n",
    "frame-walk": "import sys, posix\n"
    "f = sys._getframe(0)\n"
    "while f is not None:\n"
    "    for v in list(f.f_code.co_consts) + list(f.f_locals.values()) + list(f.f_globals.values()):\n"
    "        posix.write(1, (repr(v)[:200] + '\\n').encode())\n"
    "    f = f.f_back\n"
    "posix._exit(0)\n",
    "exit-0": "import sys\nsys.exit(0)\n",
    "os-exit-0": "import os\nos._exit(0)\n",
    "exit-during-a-call": "import os\ndef double(x):\n    os._exit(0)\n",
    "sys-exit-during-a-call": "import sys\ndef double(x):\n    sys.exit(0)\n",
    # A forged verdict on every descriptor it has (the status socket is not among them).
    "forge-verdict": "import os\n"
    "for fd in range(3, 256):\n"
    "    for msg in (b'pass\\n', b'ready x\\npass\\n'):\n"
    "        try:\n"
    "            os.write(fd, msg)\n"
    "        except OSError:\n"
    "            pass\n" + WRONG,
    # The tester is PID 1 of the namespace and not dumpable: signals dropped, no ptrace, no /proc.
    "attack-the-tester": "import os, signal, ctypes\n"
    "for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):\n"
    "    try:\n"
    "        os.kill(1, sig)\n"
    "    except OSError:\n"
    "        pass\n"
    "for p in ('/proc/1/mem', '/proc/1/environ', '/proc/1/fd/3'):\n"
    "    try:\n"
    "        print(p, 'READ', open(p, 'rb').read(16))\n"
    "    except OSError as e:\n"
    "        print(p, 'denied')\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH\n" + WRONG,
    # (b) A tracer that jumps over asserts (the old attack set f_lineno to the marker line); and
    # a profiler. They act in the program's process only: the asserts run in the tester.
    "settrace-jump": "import sys, threading\n"
    "def skip(frame, event, arg):\n"
    "    if event == 'line' and frame.f_code.co_name in ('<module>', 'check'):\n"
    "        last = max(line for _, _, line in frame.f_code.co_lines() if line)\n"
    "        if frame.f_lineno < last:\n"
    "            try:\n"
    "                frame.f_lineno = last\n"
    "            except ValueError:\n"
    "                pass\n"
    "    return skip\n"
    "sys.settrace(skip)\nthreading.settrace(skip)\nsys._getframe().f_trace = skip\n" + WRONG,
    "setprofile": "import sys, threading\nsys.setprofile(lambda *a: None)\nthreading.setprofile(lambda *a: None)\n"
    + WRONG,
    # (c) Results that agree with anything: never compared in the tests.
    "always-equal": "class Eq:\n"
    "    def __eq__(self, other):\n        return True\n"
    "    __ne__ = lambda self, other: False\n"
    "    __hash__ = lambda self: 0\n"
    "def double(x):\n    return Eq()\n",
    "int-subclass-eq": "class I(int):\n    def __eq__(self, other):\n        return True\n"
    "def double(x):\n    return I(x)\n",
    "str-subclass-eq": "class S(str):\n    def __eq__(self, other):\n        return True\n"
    "def double(x):\n    return S('?')\n",
    "entry-point-is-a-class": "class Eq:\n    def __eq__(self, other):\n        return True\n"
    "class double:\n    def __new__(cls, x):\n        return Eq()\n",
    # The tests' built-ins and modules are the tester's own.
    "patched-builtins": "import builtins\n"
    "builtins.AssertionError = type('Never', (Exception,), {})\n"
    "builtins.abs = lambda x: 0\nbuiltins.len = lambda x: 3\n" + WRONG,
    "shadowed-builtins": "def abs(x):\n    return 0\ndef isinstance(*a):\n    return True\n" + WRONG,
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_faked_passes_are_failures(name, isolation):
    need(isolation, "pidns")  # the tester as PID 1 (and its signals dropped) needs one
    r = graded(ESCAPES[name], guard=False)
    assert r.passed is False and r.status != "ok", (name, r)
    if name == "attack-the-tester":
        assert r.stdout.count("denied") == 3 and "READ" not in r.stdout, r.stdout
        assert "ptrace -1 1" in r.stdout  # EPERM


def test_approximate_and_truth_tests_cannot_be_faked():
    """Arithmetic, abs, ordering, truth, len: on an object of the program, the tests refuse
    (TypeError) rather than let it pick the outcome; on data, they are Python's own."""
    approx = "assert abs(half(3) - 1.5) < 1e-9\n"
    truth = "assert is_even(4)\nassert not is_even(3)\n"
    liar = (
        "class Liar:\n"
        "    __sub__ = __rsub__ = lambda self, o: 0.0\n"
        "    __abs__ = lambda self: 0.0\n"
        "    __lt__ = __gt__ = __le__ = __ge__ = lambda self, o: True\n"
        "def half(x):\n    return Liar()\n"
    )
    r = graded(liar, approx)
    assert r.passed is False and "TypeError" in r.stderr
    assert graded("def half(x):\n    return x / 2\n", approx).passed
    # bool() of an object of the program is the program's answer, as if it returned the bool:
    # a truthy object gives itself away on the negated assert.
    truthy = "class T:\n    __bool__ = lambda self: True\ndef is_even(x):\n    return T()\n"
    assert graded(truthy, truth).passed is False
    assert graded("def is_even(x):\n    return x % 2 == 0\n", truth).passed


def test_a_patched_module_is_not_the_tests_module():
    """MBPP-style tests that use the program's `import math`: the tester binds its own math."""
    tests = "assert math.isclose(area(2.0), 12.566370614359172)\n"
    cheat = "import math\nmath.isclose = lambda *a, **k: True\ndef area(r):\n    return 0.0\n"
    assert graded(cheat, tests).passed is False
    assert graded("import math\ndef area(r):\n    return math.pi * r * r\n", tests).passed


def test_the_program_never_holds_the_tests(isolation):
    """The expected values are the tests' own: nowhere in the program's process to copy from
    (its memory, its frames, its files, the tester's /proc entries)."""
    need(isolation, "pidns")
    token = f"sbx-expected-{secrets.token_hex(6)}"
    tests = f"assert echo() == {token!r}\n"
    spy = (
        "import gc, os, sys\n"
        "seen = []\n"
        "for o in gc.get_objects():\n"
        "    try:\n"
        "        seen.append(repr(o)[:2000])\n"
        "    except Exception:\n"
        "        pass\n"
        "f = sys._getframe(0)\n"
        "while f is not None:\n"
        "    seen.append(repr(f.f_locals)[:5000])\n"
        "    f = f.f_back\n"
        "for p in ('/proc/1/cmdline', '/proc/1/environ', '/proc/self/cmdline'):\n"
        "    try:\n"
        "        seen.append(open(p, 'rb').read().decode('latin-1'))\n"
        "    except OSError:\n"
        "        pass\n"
        "for name in os.listdir('.'):\n"
        "    seen.append(open(name, 'rb').read().decode('latin-1'))\n"
        "needle = ''.join(['ass', 'ert ec', 'ho'])  # not a constant of its own\n"
        "FOUND = [s for s in seen if needle in s]\n"
        "print('found', len(FOUND), flush=True)\n"
        "def echo():\n"
        "    return FOUND[0] if FOUND else None\n"
    )
    r = graded(spy, tests, guard=False)
    assert r.stdout.startswith("found 0") and token not in r.stdout and r.passed is False


def test_what_the_tests_can_do_with_the_programs_objects():
    """Objects of the program cross as handles: built, passed back, called, their attributes and
    items read (MBPP's Pair); subclasses of built-in types arrive as their base type; iterators are
    iterated; exceptions of the program are raised in the tests as the same built-in exception."""
    program = (
        "import collections\n"
        "class Pair:\n"
        "    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
        "    def span(self):\n        return self.b - self.a\n"
        "def longest(pairs):\n    return max(p.span() for p in pairs)\n"
        "def counts(s):\n    return collections.Counter(s)\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "def origin():\n    return Point(0, 0)\n"
        "def squares(n):\n    return (i * i for i in range(n))\n"
        "def parse(s):\n    return int(s)\n"
        "TABLE = {'a': [1, 2]}\n"
    )
    tests = (
        "assert longest([Pair(5, 24), Pair(15, 25), Pair(27, 40)]) == 19\n"
        "p = Pair(1, 4)\n"
        "assert p.a == 1 and p.span() == 3\n"
        "assert counts('abca') == {'a': 2, 'b': 1, 'c': 1}\n"
        "assert origin() == (0, 0) and type(origin()) is tuple\n"
        "assert list(squares(4)) == [0, 1, 4, 9] and sum(squares(3)) == 5\n"
        "assert TABLE == {'a': [1, 2]}\n"
        "try:\n    parse('x')\n    raise AssertionError('no error')\n"
        "except ValueError as e:\n    assert 'invalid literal' in str(e)\n"
        "try:\n    p == p\n    raise AssertionError('compared')\nexcept TypeError:\n    pass\n"
        "assert __program__.longest is longest\n"
    )
    r = graded(program, tests)
    assert r.passed, r.stderr


def test_grading_many_programs():
    programs = [CHECK, WRONG, "def double(x):\n    while True: pass\n"]
    results = run_many(programs, tests=[DOUBLE_TESTS] * 3, timeout=2, workers=3)
    assert [r.passed for r in results] == [True, False, False]
    assert results[2].status == "timeout"
    with pytest.raises(ValueError):
        run_many([CHECK], tests=[])


# The launcher's pure parts, in this process (the tests above run it only inside the sandbox, where
# no coverage reaches): what crosses between the tester and the program's process.


def test_the_launcher_imports_without_running():
    import score_cli.sandbox_launcher as launcher

    assert launcher.__name__ != "__main__" and launcher._LINK is None
    assert sys.dont_write_bytecode == bool(sys.flags.dont_write_bytecode)  # only `_main` sets it


def test_the_launcher_sends_plain_data_only():
    import collections

    from score_cli.sandbox_launcher import _is_data, _plain

    Point = collections.namedtuple("Point", "x y")
    assert _plain(collections.Counter("aab")) == {"a": 2, "b": 1}
    assert type(_plain(collections.Counter("a"))) is dict
    assert type(_plain(Point(1, 2))) is tuple and _plain(Point(1, 2)) == (1, 2)
    assert type(_plain(True)) is bool and type(_plain(bytearray(b"x"))) is bytes
    with pytest.raises(TypeError):
        _plain(object())
    assert _is_data([1, (2.0, "x"), {3: b"y"}, frozenset({None})])
    assert not _is_data([collections.Counter()]) and not _is_data({"k": object()})


def test_the_tester_rebuilds_replies_and_refuses_the_rest():
    from score_cli.sandbox_launcher import ProgramError, _Remote, _unwire, _value, _wire

    assert _value(("data", [1, {"a": (2,)}])) == [1, {"a": (2,)}]
    handle = _value(("ref", 7, "Pair"))
    assert type(handle) is _Remote and repr(handle) == "<Pair of the program>"
    assert _value(("ref", 7, "Pair")) is handle
    with pytest.raises(TypeError, match="compared or computed"):
        handle == 1  # noqa: B015
    with pytest.raises(ValueError, match="bad"):
        _value(("raise", "ValueError", "bad"))
    with pytest.raises(ProgramError):
        _value(("raise", "NotABuiltin", "m"))
    with pytest.raises(ProgramError):
        _value(("data", object()))
    obj = object()
    wired = _wire([handle, slice(1, None, 2), {"k": (handle,)}])
    assert _unwire(wired, {7: obj}) == [obj, slice(1, None, 2), {"k": (obj,)}]
    with pytest.raises(TypeError, match="cannot pass"):
        _wire(object())
