"""Which tasks exist: `load_task` resolves `--bench` / `--data` into a task and its problems, turning
every user mistake (unknown benchmark, missing file or field, empty data) into a one-line
`ScoreError`.

The top of `score_cli.tasks`: it imports the domains (`math_task`, `toy_task`, and `code_task` only
when a code benchmark is asked for), and none of them imports it, so `score_cli.tasks` itself does
not offer `load_task`.
"""

from __future__ import annotations

import difflib

from score_cli.errors import ScoreError
from score_cli.tasks.base import Problem, Task
from score_cli.tasks.data import _rows_from_file, problems_from_rows
from score_cli.tasks.math_task import MATH_BENCHES, MathTask, math_problems
from score_cli.tasks.toy_task import ToyTask, toy_problems

BENCHES = ("math", "gsm8k", "champ", "toy", "humaneval", "mbpp")


def check_bench(name: str) -> None:
    """An unknown benchmark is one line naming the known ones (and the likely one, for a typo)."""
    if name not in BENCHES:
        close = difflib.get_close_matches(name, BENCHES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ScoreError(f"unknown benchmark '{name}'{hint}: choose one of {', '.join(BENCHES)}, or pass --data FILE")


def load_task(
    bench: str | None = None,
    *,
    data: str | None = None,
    question_field: str = "problem",
    answer_field: str = "answer",
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
) -> tuple[Task, list[Problem]]:
    """Resolve `--bench` / `--data` into a task and its problems (`split` is 'test' or 'train')."""
    if data is not None:
        rows, where = _rows_from_file(data)
        task: Task
        if bench == "mbpp":  # MBPP's own format: task_id, text, test_list (test_setup_code, code)
            from score_cli.tasks.code_task import CodeTask, mbpp_problem

            if not rows:
                raise ScoreError(f"data file {data} holds no problems: pass a file with at least one row")
            missing = [k for k in ("task_id", "text", "test_list") if k not in rows[0]]
            if missing:
                raise ScoreError(f"data file {data} lacks MBPP field(s) {', '.join(missing)}: use MBPP's row format")
            task, problems = CodeTask("mbpp"), [mbpp_problem(r) for r in rows]
        else:
            problems = problems_from_rows(
                rows, question_field=question_field, answer_field=answer_field, source=f"data file {data}",
                where=where,
            )
            task = MathTask() if bench in (None, *MATH_BENCHES) else _bench_task_only(bench)[0]
    else:
        bench = bench or "math"
        task, problems = _load_bench(bench, split=split, seed=seed)
    if limit is not None:
        if limit < 1:
            raise ScoreError(f"--limit must be at least 1, got {limit}")
        problems = problems[:limit]
    if not problems:
        raise ScoreError(f"benchmark {bench} has no problems in split '{split}': pick another split or --data")
    return task, problems


def _bench_task_only(bench: str) -> tuple[Task, None]:
    if bench in ("humaneval", "mbpp"):
        from score_cli.tasks.code_task import CodeTask

        return CodeTask(bench), None
    if bench == "toy":
        return ToyTask(), None
    check_bench(bench)
    raise AssertionError(f"benchmark {bench} is in BENCHES but has no loader")


def _load_bench(bench: str, *, split: str, seed: int) -> tuple[Task, list[Problem]]:
    if bench in MATH_BENCHES:
        return MathTask(), math_problems(bench, split=split)
    if bench == "toy":
        return ToyTask(), toy_problems(split=split, seed=seed)
    if bench in ("humaneval", "mbpp"):
        from score_cli.tasks.code_task import CodeTask, load_code_problems

        return CodeTask(bench), load_code_problems(bench, split=split)
    check_bench(bench)
    raise AssertionError(f"benchmark {bench} is in BENCHES but has no loader")
