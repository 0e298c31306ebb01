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
import time
from pathlib import Path

import pytest

from score_cli.sandbox import STATUSES, ExecResult, run_many, run_program


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
        for layer in ("netns", "pidns", "mountns", "ro-root", "tmpfs-home", "nocaps", "rlimits", "guard"):
            assert layer in isolation
        assert any(n.startswith("uid=") for n in isolation)
    else:
        need(isolation, "netns", "pidns")


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
