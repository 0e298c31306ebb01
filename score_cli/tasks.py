"""Tasks: the problems, the attempt-1 prompt, the self-correction instruction and answer checking.

A `Task` knows everything domain-specific (math, code, the toy world); the rollout, trainers and
metrics only see token ids, texts and `Grade`s. Benchmarks are loaded by `load_task`, which turns
every user mistake (unknown benchmark, missing file or field, empty data) into a one-line
`ScoreError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from score_cli.errors import ScoreError

# Verbatim from the paper's appendix (see SCORE_PAPER.md).
MATH_PROMPT = (
    "You are a math expert. When you respond, respond only with the Solution of the final Problem, "
    "thinking step by step. At the end of the Solution, when you give your final answer, write it in "
    'the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)
MATH_INSTRUCTION = (
    "There might be an error in the solution above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final solution! At the "
    "end of the Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)
CODE_INSTRUCTION = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct Python "
    "program!"
)
# `--prompt boxed`: the form most math-tuned models (Qwen2.5-Math-Instruct, DeepSeek-R1, ...) were
# trained with, asked after the bare question; attempt 2 is asked for the same form.
BOXED_REQUEST = "Please reason step by step, and put your final answer within \\boxed{}."
BOXED_INSTRUCTION = (
    "There might be an error in the solution above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. " + BOXED_REQUEST
)
PROMPT_PRESETS = ("paper", "raw", "boxed")


@dataclass
class Problem:
    """One problem: `answer` is the gold final answer (math) or the test program (code)."""

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Grade:
    """What answer checking made of one attempt: the extracted final answer and whether it is right."""

    answer: str | None
    correct: bool


class Task:
    """A domain: how to prompt attempt 1, which instruction asks for attempt 2, how to grade."""

    name: str = "task"
    instruction: str = MATH_INSTRUCTION

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        """The attempt-1 conversation (rendered with the tokenizer's chat template where it has one)."""
        return [{"role": "user", "content": problem.question}]

    def plain_prompt(self, problem: Problem) -> str:
        """The attempt-1 prompt as plain text, for tokenizers without a chat template."""
        return "\n\n".join(m["content"] for m in self.messages(problem)) + "\n\n"

    def grade(self, problems: Sequence[Problem], outputs: Sequence[str]) -> list[Grade]:
        raise NotImplementedError


class MathTask(Task):
    """Math with a final answer, checked by `math_grader` (MATH, GSM8K, CHAMP, local files)."""

    name = "math"
    instruction = MATH_INSTRUCTION

    def __init__(self, prompt: str = MATH_PROMPT):
        self.prompt = prompt

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{self.prompt}\n\nProblem:\n{problem.question}"}]

    def grade(self, problems: Sequence[Problem], outputs: Sequence[str]) -> list[Grade]:
        from score_cli.math_grader import grade_math

        return grade_math([p.answer for p in problems], list(outputs))


# ---------------------------------------------------------------------------------------------
# Prompt settings: the same in `score eval` and both stages
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSpec:
    """How attempt 1 is asked and the next attempt requested (`--prompt`, `--prompt-template`,
    `--system-prompt`, `--instruction`). The default is each task's own: the paper's MATH prompt and
    instruction for math, the toy and code tasks' prompts for those.

    - preset `paper`: the task's prompt; `raw`: the question alone as the user turn; `boxed`: the
      question, then "Please reason step by step, and put your final answer within \\boxed{}." (math
      only; attempt 2's default instruction asks for a boxed answer too);
    - template: the user turn, with `{question}` replaced by the question (instead of a preset);
    - system_prompt: a system turn before it (plain text before the prompt without a chat template);
    - instruction: the self-correction instruction (default: the task's, or the boxed one).
    """

    preset: str = "paper"
    template: str | None = None
    system_prompt: str | None = None
    instruction: str | None = None

    def __post_init__(self):
        for name in ("template", "system_prompt", "instruction"):  # "" means unset, as on the command line
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)

    def problem(self) -> str | None:
        """What is wrong with these settings (a one-line message naming the option), or None."""
        if self.preset not in PROMPT_PRESETS:
            return f"unknown --prompt '{self.preset}': use {', '.join(PROMPT_PRESETS)} (or --prompt-template TEXT)"
        if self.template is not None:
            if self.preset != "paper":
                return (f"--prompt {self.preset} and --prompt-template both set the prompt: pass one of them "
                        "(a template replaces the preset)")
            if "{question}" not in self.template:
                return ("--prompt-template has no {question}: write where the question goes, e.g. "
                        "'{question}\\nPut your final answer within \\boxed{}.'")
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem:
            raise ScoreError(problem)

    def record(self, task: Task | None = None) -> dict[str, Any]:
        """The settings as saved with a run; with `task`, the instruction it resolves to."""
        d = {"preset": self.preset, "template": self.template, "system_prompt": self.system_prompt,
             "instruction": self.instruction}
        if task is not None:
            d["resolved_instruction"] = task.instruction
        return d


def read_text_option(value: str | None, option: str) -> str | None:
    """A text option's value; `@FILE` stands for the contents of FILE (a trailing newline dropped)."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(os.path.expanduser(value[1:]))
    if not path.is_file():
        raise ScoreError(f"{option} {value}: file {path} does not exist: check the path after '@'")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScoreError(f"{option} {value}: {path} is not UTF-8 text: save it as UTF-8") from None
    return text[:-1] if text.endswith("\n") else text


class PromptedTask(Task):
    """A task asked with other prompt settings; grading and everything else is the task's own."""

    def __init__(self, inner: Task, spec: PromptSpec):
        self.inner, self.spec = inner, spec
        self.name = inner.name
        boxed_default = spec.preset == "boxed" and inner.instruction == MATH_INSTRUCTION
        self.instruction = spec.instruction or (BOXED_INSTRUCTION if boxed_default else inner.instruction)

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        spec = self.spec
        if spec.template is not None:
            turns = [{"role": "user", "content": spec.template.replace("{question}", problem.question)}]
        elif spec.preset == "raw":
            turns = [{"role": "user", "content": problem.question}]
        elif spec.preset == "boxed":
            turns = [{"role": "user", "content": f"{problem.question}\n{BOXED_REQUEST}"}]
        else:
            turns = self.inner.messages(problem)
        if spec.system_prompt is not None:
            turns = [{"role": "system", "content": spec.system_prompt}, *[t for t in turns if t["role"] != "system"]]
        return turns

    def grade(self, problems: Sequence[Problem], outputs: Sequence[str]) -> list[Grade]:
        return self.inner.grade(problems, outputs)

    def __getattr__(self, name: str):  # anything else (e.g. a code task's sandbox settings) is the task's
        if name in ("inner", "spec"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def apply_prompt(task: Task, spec: PromptSpec | None) -> Task:
    """`task` asked with `spec`'s prompt settings (the task itself under the default settings)."""
    if isinstance(task, PromptedTask):
        task = task.inner
    if spec is None or spec == PromptSpec():
        return task
    spec.check()
    if spec.preset == "boxed" and task.name in ("humaneval", "mbpp"):
        raise ScoreError(f"--prompt boxed asks for a \\boxed{{}} answer, which a code task ({task.name}) does not "
                         "grade: use --prompt paper or raw, or --prompt-template")
    return PromptedTask(task, spec)


# ---------------------------------------------------------------------------------------------
# Loading benchmarks and local files
# ---------------------------------------------------------------------------------------------

BENCHES = ("math", "gsm8k", "champ", "toy", "humaneval", "mbpp")


def _hub_dataset(path: str, *, name: str | None = None, split: str, bench: str):
    """Load a hub dataset; offline (or unreachable), one line that says to pass --data instead."""
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as e:  # noqa: BLE001 - any failure to reach the hub means the same thing to the user
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ScoreError(
            f"could not load {path} ({split}) from the Hugging Face Hub ({reason}): connect to the hub, "
            f"or download it elsewhere and pass --data FILE.jsonl|.parquet instead of --bench {bench}"
        ) from None


def _rows_from_file(path: str) -> tuple[list[dict], list[str]]:
    """The rows of a local data file, and where each one is ('FILE:LINE' or 'FILE row N')."""
    from score_cli.files import read_jsonl

    p = Path(path)
    if not p.exists():
        raise ScoreError(f"data file {p} does not exist: check the --data path")
    if p.is_dir():
        raise ScoreError(f"data file {p} is a directory: pass a .jsonl or .parquet file with --data")
    if p.suffix == ".jsonl" or p.suffix == ".json":
        numbered = read_jsonl(p, what="data file", line_numbers=True)
        return [row for _, row in numbered], [f"{p}:{n}" for n, _ in numbered]
    if p.suffix == ".parquet":
        import datasets

        try:
            rows = list(datasets.Dataset.from_parquet(str(p)))
        except Exception as e:  # noqa: BLE001
            raise ScoreError(f"data file {p} is not a readable parquet file ({type(e).__name__}): check it") from None
        return rows, [f"{p} row {i + 1}" for i in range(len(rows))]
    raise ScoreError(f"data file {p} has an unsupported extension: use .jsonl or .parquet")


def problems_from_rows(
    rows: Sequence[dict], *, question_field: str, answer_field: str, source: str, id_field: str | None = None,
    where: Sequence[str] | None = None,
) -> list[Problem]:
    """Turn raw rows into Problems, naming the missing field and the fields that do exist. A row
    without a question or answer is refused; with `where` (a local file: each row's place, e.g.
    FILE:LINE), so is a blank one, named by its place."""
    if not rows:
        raise ScoreError(f"{source} holds no problems: pass a file with at least one row")
    first = rows[0]
    for fld, opt in ((question_field, "--question-field"), (answer_field, "--answer-field")):
        if fld not in first:
            raise ScoreError(
                f"{source} has no field '{fld}' (fields: {', '.join(sorted(first))}): pass {opt} NAME"
            )
    problems = []
    for i, row in enumerate(rows):
        at = where[i] if where is not None else f"{source}: row {i + 1}"
        for fld in (question_field, answer_field):
            if row.get(fld) is None:
                raise ScoreError(f"{at}: the row has no '{fld}': fix or drop it")
            if where is not None and not str(row[fld]).strip():  # a local file, which the user can fix
                raise ScoreError(f"{at}: '{fld}' is empty: fill it in or drop the row")
        pid = str(row[id_field]) if id_field and id_field in row else str(row.get("id", row.get("unique_id", i)))
        problems.append(Problem(id=pid, question=str(row[question_field]), answer=str(row[answer_field])))
    return problems


def gsm8k_answer(solution: str) -> str:
    """GSM8K's gold answer is the number after '####'."""
    return solution.split("####")[-1].strip().replace(",", "")


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
            from score_cli.code_task import CodeTask, mbpp_problem

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
            task = MathTask() if bench in (None, "math", "gsm8k", "champ") else _bench_task_only(bench)[0]
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
        from score_cli.code_task import CodeTask

        return CodeTask(bench), None
    if bench == "toy":
        from score_cli.toy import ToyTask

        return ToyTask(), None
    raise ScoreError(f"unknown benchmark '{bench}': choose one of {', '.join(BENCHES)}")


def _load_bench(bench: str, *, split: str, seed: int) -> tuple[Task, list[Problem]]:
    if bench == "math":
        if split == "test":
            ds = _hub_dataset("HuggingFaceH4/MATH-500", split="test", bench=bench)
            rows = list(ds)
        else:
            rows = _math_train_rows()
        return MathTask(), problems_from_rows(
            rows, question_field="problem", answer_field="answer", source="MATH", id_field="unique_id"
        )
    if bench == "gsm8k":
        ds = _hub_dataset("openai/gsm8k", name="main", split=split, bench=bench)
        rows = [{"id": f"gsm8k/{split}/{i}", "question": r["question"], "answer": gsm8k_answer(r["answer"])}
                for i, r in enumerate(ds)]
        return MathTask(), problems_from_rows(rows, question_field="question", answer_field="answer", source="gsm8k")
    if bench == "champ":
        return MathTask(), champ_problems()
    if bench == "toy":
        from score_cli.toy import ToyTask, toy_problems

        return ToyTask(), toy_problems(split=split, seed=seed)
    if bench in ("humaneval", "mbpp"):
        from score_cli.code_task import CodeTask, load_code_problems

        return CodeTask(bench), load_code_problems(bench, split=split)
    raise ScoreError(f"unknown benchmark '{bench}': choose one of {', '.join(BENCHES)}")


def _math_train_rows() -> list[dict]:
    """The paper's 12k MATH training problems: MATH train (7.5k) plus the MATH test problems that
    are not in MATH500 (Lightman et al.'s split), with the gold answer taken from the solution's box.
    """
    from score_cli.math_grader import extract_answer

    math500 = {r["problem"] for r in _hub_dataset("HuggingFaceH4/MATH-500", split="test", bench="math")}
    rows = []
    for split in ("train", "test"):
        for i, r in enumerate(_hub_dataset("DigitalLearningGmbH/MATH-lighteval", split=split, bench="math")):
            answer = extract_answer(r["solution"])
            if r["problem"] in math500 or answer is None:
                continue
            rows.append({"unique_id": f"{split}/{r.get('type', '')}/{i}", "problem": r["problem"], "answer": answer})
    return rows


def champ_problems() -> list[Problem]:
    """CHAMP competition problems with a checkable final answer (offline, from `champ-dataset`)."""
    import champ_dataset

    out = []
    for pid, p in sorted(champ_dataset.load("v0").problems.items()):
        if p.answer and _is_checkable_math_answer(p.answer):
            out.append(Problem(id=pid, question=p.text, answer=p.answer, meta={"category": p.category}))
    return out


def _is_checkable_math_answer(answer: str) -> bool:
    """Keep answers a math checker can compare: short, and with a digit or a LaTeX expression."""
    a = answer.strip()
    return len(a) <= 40 and (any(c.isdigit() for c in a) or "\\" in a) and not a.endswith(".")


def env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
