"""Math with a final answer: `MathTask` (graded by `score_cli.math_grader`) and the math
benchmarks: MATH, GSM8K and CHAMP.
"""

from __future__ import annotations

from collections.abc import Sequence

from score_cli.errors import ScoreError
from score_cli.tasks.base import MATH_INSTRUCTION, MATH_PROMPT, Grade, Problem, Task
from score_cli.tasks.data import _hub_dataset, problems_from_rows

MATH_BENCHES = ("math", "gsm8k", "champ")


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


def math_problems(bench: str, *, split: str) -> list[Problem]:
    """The problems of a math benchmark: MATH (MATH500 for 'test', the paper's 12k for 'train'),
    GSM8K or CHAMP."""
    if bench == "math":
        if split == "test":
            ds = _hub_dataset("HuggingFaceH4/MATH-500", split="test", bench=bench)
            rows = list(ds)
        else:
            rows = _math_train_rows()
        return problems_from_rows(
            rows, question_field="problem", answer_field="answer", source="MATH", id_field="unique_id"
        )
    if bench == "gsm8k":
        ds = _hub_dataset("openai/gsm8k", name="main", split=split, bench=bench)
        rows = [{"id": f"gsm8k/{split}/{i}", "question": r["question"], "answer": gsm8k_answer(r["answer"])}
                for i, r in enumerate(ds)]
        return problems_from_rows(rows, question_field="question", answer_field="answer", source="gsm8k")
    if bench == "champ":
        return champ_problems()
    raise ScoreError(f"unknown math benchmark '{bench}': choose one of {', '.join(MATH_BENCHES)}")


def gsm8k_answer(solution: str) -> str:
    """GSM8K's gold answer is the number after '####'."""
    return solution.split("####")[-1].strip().replace(",", "")


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
