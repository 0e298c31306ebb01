"""The toy world's task: multi-digit addition and subtraction, answered with a worked solution.

The problems (2-3 digit operands; train and test splits decided by a hash of the question), their
prompt and instruction, answer checking (the same math reward as MATH), and the noisy solver that
writes worked solutions with a person's mistakes. The base model that learns from those solutions
is built by `score_cli.toy_model`. A worked solution has one line per digit column, right to left,
e.g. for 482+397:

    2+7=9 9
    8+9=17 79
    4+3+1=8 879
    The final answer is $879$.

Each line is "column arithmetic = result, then the answer so far", so the final answer is a copy of
the last line and every mistake is a visible, local one (a dropped carry, a wrong digit).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from score_cli.tasks.base import Grade, Problem, Task

# Ours, not the paper's: the paper's MATH instruction is ~430 characters, which a character-level
# model would read at every second attempt. This keeps its opening and its request.
TOY_INSTRUCTION = "There might be an error in the solution above. Please correct it."

DEFAULT_SIZES = {"train": 5000, "test": 500}
DIGITS = (2, 3)  # how many digits an operand may have
TEST_FRACTION = 10  # one problem in TEST_FRACTION goes to the test split (by a hash of its question)


class ToyTask(Task):
    """Multi-digit addition and subtraction with worked solutions, graded by the math reward."""

    name = "toy"
    instruction = TOY_INSTRUCTION

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        return [{"role": "user", "content": problem.question}]

    def grade(self, problems: Sequence[Problem], outputs: Sequence[str]) -> list[Grade]:
        from score_cli.math_grader import grade_math

        return grade_math([p.answer for p in problems], list(outputs))

    def compared_part(self, text: str) -> str:
        return solution_part(text)  # a second attempt's opening check of the first is not part of the copy


def question_text(a: int, op: str, b: int) -> str:
    return f"{a}{op}{b}=?"


def answer_of(a: int, op: str, b: int) -> str:
    return str(a + b if op == "+" else a - b)


def split_of(a: int, op: str, b: int) -> str:
    """'train' or 'test', decided by a hash of the question alone: the splits are disjoint for
    every seed and size, and the same problem always lands in the same split."""
    digest = hashlib.sha256(question_text(a, op, b).encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % TEST_FRACTION == 0 else "train"


def _draw_operands(rng: random.Random) -> tuple[int, str, int]:
    op = rng.choice("+-")
    a, b = (rng.randrange(10 ** (d - 1), 10**d) for d in (rng.choice(DIGITS), rng.choice(DIGITS)))
    if op == "-" and a < b:
        a, b = b, a
    return a, op, b


def draw_problem(rng: random.Random, split: str) -> tuple[int, str, int]:
    """A random problem (a, op, b) of `split`: the base model's training data draws from 'train'."""
    while True:
        a, op, b = _draw_operands(rng)
        if split_of(a, op, b) == split:
            return a, op, b


def toy_problems(split: str = "test", seed: int = 0, n: int | None = None) -> list[Problem]:
    """`n` distinct problems of `split` ('train' or 'test'; default sizes 5000 and 500), the same
    for the same (split, seed, n): the first k of a larger n are the problems of n=k."""
    if split not in DEFAULT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    n = DEFAULT_SIZES[split] if n is None else n
    rng = random.Random(f"toy/{split}/{seed}")
    seen: set[str] = set()
    problems = []
    while len(problems) < n:
        a, op, b = draw_problem(rng, split)
        q = question_text(a, op, b)
        if q in seen:
            continue
        seen.add(q)
        problems.append(Problem(id=f"toy/{split}/{q[:-2]}", question=q, answer=answer_of(a, op, b),
                                meta={"a": a, "op": op, "b": b}))
    return problems


@dataclass(frozen=True)
class NoisySolver:
    """Writes worked solutions with mistakes a person makes: with probability `drop` a step
    ignores its carry (or borrow), with probability `slip` a step's result is off by one. Later
    steps and the final answer follow what was written, so a mistake propagates.

    `method` "columns" works digit columns right to left ("8+9=17 79": the column, then the answer
    so far); "places" adds or subtracts the second number one place value at a time, largest first
    (482+397: "482+300=782", "782+90=872", "872+7=879"), a second way to the same answer whose lines
    share no numbers with the column method's, so one cannot be copied into the other.

    `slip_to` says what a slipped column step writes: "neighbour" a result off by one (the habit of
    people, and the default), "any" a last digit drawn uniformly from the nine wrong ones, carry kept
    (columns method only). With "any" a wrong line says nothing about where the right digit is, so
    a model that redoes it cannot get the digit from the wrong one ("one more or one less than
    what y1 wrote"): it has to work the column again (docs/experiments.md, section 13).
    """

    drop: float = 0.0
    slip: float = 0.0
    method: str = "columns"
    slip_to: str = "neighbour"

    def __post_init__(self) -> None:  # here, not in solve: resume() is called directly too
        if self.slip_to not in ("neighbour", "any"):
            raise ValueError(f"slip_to must be 'neighbour' or 'any', got {self.slip_to!r}")

    def solve(self, a: int, op: str, b: int, rng: random.Random | None = None) -> str:
        if rng is None and (self.drop or self.slip):
            raise ValueError("a noisy solver needs an rng")
        if self.method == "places":
            return self._places(a, op, b, rng)
        if self.method != "columns":
            raise ValueError(f"method must be 'columns' or 'places', got {self.method!r}")
        return self.resume(a, op, b, [], rng)

    def resume(self, a: int, op: str, b: int, kept: list[str], rng: random.Random | None = None) -> str:
        """A column-method solution whose first lines are `kept` (another attempt's, as written,
        mistakes and all) and whose remaining columns this solver works afresh from the carry and
        digits those lines wrote: a second attempt that keeps part of the first and redoes the rest."""
        width = max(len(str(a)), len(str(b)))
        da, db = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
        lines, so_far, carry = list(kept), "", 0
        if kept:
            expr, rest = kept[-1].split("=", 1)
            written, so_far = rest.split(" ", 1)
            carry = int(written) // 10 if op == "+" else int(int(expr.split("-")[0]) >= 10)
        for i in range(len(kept), width):
            x, y = int(da[i]), int(db[i])
            c = 0 if carry and rng is not None and rng.random() < self.drop else carry
            slip = rng is not None and rng.random() < self.slip
            if op == "+":
                s = x + y + c
                if slip:
                    s = self._slipped(s, 19, rng)
                expr, carry, digit = f"{x}+{y}" + ("+1" if c else ""), s // 10, str(s % 10)
                written = str(s)
            else:
                top = x + 10 if x - y - c < 0 else x
                s = top - y - c
                if slip:
                    s = self._slipped(s, 9, rng)
                expr, carry, digit = f"{top}-{y}" + ("-1" if c else ""), int(top > x), str(s)
                written = str(s)
            so_far = (written if i == width - 1 else digit) + so_far
            lines.append(f"{expr}={written} {so_far}")
        lines.append(f"The final answer is ${int(so_far)}$.")
        return "\n".join(lines)

    def _slipped(self, s: int, top: int, rng: random.Random) -> int:
        """A wrong result for a column step whose right result is `s` (0..`top`)."""
        if self.slip_to == "any":  # another last digit, same tens (so the carry is the right one)
            return s - s % 10 + rng.choice([d for d in range(10) if d != s % 10])
        return s + 1 if s == 0 or (s < top and rng.random() < 0.5) else s - 1

    def _places(self, a: int, op: str, b: int, rng: random.Random | None) -> str:
        digits = str(b)
        parts = [int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits) if d != "0"]
        lines, cur = [], a
        for part in parts:
            place = 10 ** (len(str(part)) - 1)
            true = cur + part if op == "+" else cur - part
            written = true
            crosses = (true // (10 * place)) != (cur // (10 * place))  # a carry or borrow into higher places
            if crosses and rng is not None and rng.random() < self.drop:
                written = true - 10 * place if op == "+" else true + 10 * place  # the carry forgotten
            if rng is not None and rng.random() < self.slip:
                written += place if written < place or rng.random() < 0.5 else -place  # that place off by one
            lines.append(f"{cur}{op}{part}={written}")
            cur = written
        lines.append(f"The final answer is ${cur}$.")
        return "\n".join(lines)


GOLD = NoisySolver()

# A second attempt may open with a check of the attempt before it (`ToyData.review`):
#   Check:
#   2+7=9 2+7=9 9-9=0 ok
#   8+9=16 8+9=17 7-6=1 no
#   4+3+1=8 4+3+1=8 8-8=0 ok
#   Solution:
#   ...the new worked solution...
REVIEW_HEAD, REVIEW_END = "Check:", "Solution:"


def first_different_line(text: str, other: str) -> int | None:
    """The index (from 0) of the first line where two worked solutions differ, None when they are
    equal; when one is a prefix of the other, the line just after the shorter one."""
    a, b = text.splitlines(), other.splitlines()
    same = None if len(a) == len(b) else min(len(a), len(b))
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), same)


def review(solution: str, a: int, op: str, b: int) -> str:
    """A line-by-line check of a column-method solution: for each column line, its step as written
    ("8+9=16"), the step worked again from the carry the line above it wrote ("8+9=17"), the
    larger of their last digits minus the smaller ("7-6=1"), and "ok" when that is 0, else "no".

    Each line is local (one column and the line above it), and the comparison is done by a
    subtraction the model already knows, because a bare "are these equal?" verdict has no gradient
    a small model can start from (docs/experiments.md, section 10). The solver's slips are off by
    one, so comparing last digits is always right on them (a result off by exactly ten would pass).
    A line that is not a column step (a garbled attempt) is "no".
    """
    lines = [line for line in solution.splitlines() if "=" in line and not line.startswith("The final")]
    out = [REVIEW_HEAD]
    for i, line in enumerate(lines):
        step = line.split(" ", 1)[0]
        try:
            right = GOLD.resume(a, op, b, lines[:i]).splitlines()[i].split(" ", 1)[0]
        except (ValueError, IndexError):  # the lines above do not parse: nothing to work from
            right = "?"
        written, worked = _result(step), _result(right)
        if written is None or worked is None:
            out.append(f"{step} {right} no")
            continue
        hi, lo = sorted((int(written[-1]), int(worked[-1])), reverse=True)
        out.append(f"{step} {right} {hi}-{lo}={hi - lo} {'ok' if hi == lo else 'no'}")
    return "\n".join([*out, REVIEW_END])


def nines(solution: str, a: int, op: str, b: int) -> str:
    """A check of the answer `solution` states by casting out nines, in the solver's own small steps:
    each number's digit sum brought under 9 ("4+8+2=14 14-9=5"), the operation done on those residues,
    then the residue of the stated answer compared by a subtraction ("6-6=0 ok"; "13-6=7 no" in the
    solver's borrow form), between REVIEW_HEAD and REVIEW_END like `review`.

    Unlike `review` it never re-works a step: every line reads digits a line or a question away, and
    the verdict reads one digit, so checking is cheaper than solving (docs/experiments.md, section
    37). It catches a wrong answer unless it is off by a multiple of 9 (91% of the toy solver's wrong
    answers); a right answer always passes. An answer that does not parse is "no"."""
    stated = re.findall(r"\$(-?\d+)\$", solution)
    if not stated or stated[-1].startswith("-"):
        return "\n".join([REVIEW_HEAD, "no", REVIEW_END])

    def under_nine(line: str, s: int) -> tuple[str, int]:  # 9 taken off, a step each, until under 9
        while s >= 9:
            line, s = line + f" {s}-9={s - 9}", s - 9
        return line, s

    def residue(n: int) -> tuple[str, int]:
        digits = [int(d) for d in str(n)]
        return under_nine("+".join(map(str, digits)) + f"={sum(digits)}", sum(digits))

    (la, ra), (lb, rb), (lc, rc) = residue(a), residue(b), residue(int(stated[-1]))
    if op == "+":
        lo, t = under_nine(f"{ra}+{rb}={ra + rb}", ra + rb)
    else:
        t = ra - rb if ra >= rb else ra + 9 - rb
        lo = f"{ra}-{rb}={t}" if ra >= rb else f"{ra}+9-{rb}={t}"
    top = t if t >= rc else t + 10
    verdict = "ok" if t == rc else "no"
    return "\n".join([REVIEW_HEAD, la, lb, lo, lc, f"{top}-{rc}={top - rc} {verdict}", REVIEW_END])


# The checks a second attempt can open with (`ToyData.review_kind`), by name.
CHECKS = {"lines": review, "nines": nines}


def _result(step: str) -> str | None:
    """What a column step wrote ("17" of "8+9=17"); None for what is not a step."""
    expr, sep, written = step.partition("=")
    return written if sep and written.isdigit() else None


def split_review(text: str) -> tuple[str, str]:
    """(the attempt's opening check, through its REVIEW_END line; the rest): ("", text) when it has
    none, and (text, "") when the check never ends."""
    if not text.startswith(REVIEW_HEAD):
        return "", text
    head, sep, rest = text.partition(f"\n{REVIEW_END}\n")
    return (head + sep.rstrip("\n"), rest) if sep else (text, "")


def solution_part(text: str) -> str:
    """An attempt without its opening check: what is compared when asking whether attempt 2 copied
    attempt 1."""
    return split_review(text)[1]


def gold_solution(problem: Problem) -> str:
    """The correct worked solution of a toy problem."""
    m = problem.meta
    return GOLD.solve(m["a"], m["op"], m["b"])
