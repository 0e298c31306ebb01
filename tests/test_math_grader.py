"""Math answer checking: a table of (gold, model output, expected) cases, extraction, and safety."""

from __future__ import annotations

import threading

import pytest

from score_cli.math_grader import MathGrader, answers_match, extract_answer, grade_math

F = "Final Answer: The final answer is ${}$. I hope it is correct."
B = "So the result is $\\boxed{{{}}}$."

CASES = [
    # (gold, output, expected)
    ("5", F.format("5"), True),
    ("5", F.format("6"), False),
    ("\\frac{1}{2}", F.format("0.5"), True),  # fraction vs decimal
    ("0.5", F.format("\\frac{1}{2}"), True),
    ("\\frac{1}{3}", F.format("0.33"), False),  # not equal at 6 digits
    ("\\dfrac{3}{4}", F.format("\\frac{3}{4}"), True),  # \dfrac / \frac
    ("\\frac{3}{4}", B.format("\\tfrac{3}{4}"), True),
    ("\\frac{\\sqrt{3}}{2}", B.format("\\frac{\\sqrt{3}}{2}"), True),  # nested braces
    ("\\frac{\\sqrt{3}}{2}", B.format("\\frac{\\sqrt{2}}{2}"), False),
    ("-3", F.format("-3"), True),  # negative numbers
    ("-3", F.format("3"), False),
    ("(1,2]", F.format("(1,2]"), True),  # intervals
    ("(1,2]", F.format("[1,2]"), False),
    ("(-\\infty, 3)", B.format("(-\\infty,3)"), True),
    ("[0, 1) \\cup (2, 3]", F.format("[0,1)\\cup(2,3]"), True),
    ("\\{1, 2\\}", F.format("\\{2, 1\\}"), True),  # sets
    ("\\{1, 2\\}", F.format("\\{1, 3\\}"), False),
    ("5\\text{ cm}", F.format("5"), True),  # units and text
    ("5", F.format("5\\text{ cm}"), True),
    ("12", "The final answer is 12 inches.", True),
    ("90^\\circ", F.format("90"), True),
    ("15\\%", F.format("15"), True),  # percentages
    ("1,000,000", F.format("1000000"), True),  # thousands separators
    ("1000000", F.format("1,000,000"), True),
    ("\\pi", F.format("\\pi"), True),
    ("2\\pi", B.format("2 \\pi"), True),
    ("2\\sqrt{2}", B.format("\\sqrt{8}"), True),
    ("\\sqrt{2}", B.format("1.41"), False),
    ("x^2+2x+1", B.format("(x+1)^2"), True),
    ("2^{10}", F.format("1024"), True),
    ("8", "The answer is \\boxed{2**3}", True),  # Python power
    ("7", "First \\boxed{5}, wait, actually \\boxed{7}.", True),  # several boxes: the last wins
    ("5", "First \\boxed{7}, then \\boxed{5}.", True),
    ("5", "\\boxed{5} ... " + F.format("6"), False),  # marker after box wins
    ("6", "\\boxed{5} ... " + F.format("6"), True),
    ("42", "We computed 40 + 2 = 42 so far, but", False),  # no final-answer marker
    ("42", "", False),  # empty
    ("42", "The final answer is", False),  # marker without an answer
    ("3", "asdf }}} {{ \\boxed{ $$ The final answer is $", False),  # garbage
    ("No", F.format("no"), True),  # prose answers compare as strings
    ("No", F.format("on"), False),
    ("True", F.format("False"), False),
    ("(C)", B.format("(C)"), True),
    ("\\text{(C)}", F.format("(C)"), True),
    ("3", "The final answer is 3. I hope it is correct.", True),  # no dollars
    ("3.5", "The final answer is 3.5. I hope it is correct.", True),  # decimal point, not a full stop
    ("(2,3)", F.format("(2, 3)"), True),  # tuples
    ("(2,3)", F.format("(3, 2)"), False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", B.format("\\begin{pmatrix}1\\\\2\\end{pmatrix}"), True),
    ("a=2", F.format("2"), True),
    ("10", F.format("10.0"), True),
    ("\\frac{1}{2}", "The final answer is $\\boxed{\\frac{1}{2}}$.", True),
]


def test_table_has_enough_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize(("gold", "output", "expected"), CASES)
def test_grade_table(gold, output, expected):
    (g,) = grade_math([gold], [output])
    assert g.correct is expected, (gold, output, g.answer)


def test_batch_grading_matches_one_by_one():
    grades = grade_math([c[0] for c in CASES], [c[1] for c in CASES])
    assert [g.correct for g in grades] == [c[2] for c in CASES]


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (F.format("\\frac{1}{2}"), "\\frac{1}{2}"),
        ("so \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{1} and \\boxed{2}", "2"),
        ("The Final Answer Is $7$", "7"),
        ("The final answer is 3.14. I hope it is correct.", "3.14"),
        ("The final answer is $$x^2$$.", "x^2"),
        ("\\boxed 5.", "5"),
        ("just 42", None),
        ("\\boxed{unclosed", None),
        ("", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_extraction_is_fast_on_huge_garbage():
    import time

    junk = ("\\boxed{" * 1000 + "The final answer is " * 1000 + "{" * 10000 + "x" * 1_000_000)
    t0 = time.perf_counter()
    extract_answer(junk)
    assert time.perf_counter() - t0 < 2.0


def test_answers_match_gold_first_and_never_raises():
    assert answers_match("\\frac{1}{2}", "0.5")
    assert not answers_match("1", "\\frac{")
    assert not answers_match("", "1")


def test_grade_from_another_thread():
    out = {}

    def run():
        out["g"] = grade_math(["\\frac{1}{2}", "3"], [F.format("0.5"), F.format("4")])

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert [g.correct for g in out["g"]] == [True, False]


def test_a_hanging_check_is_killed_and_the_rest_still_grade():
    grader = MathGrader(workers=1, timeout=1.0)
    try:
        jobs = [("check", "1/2", "0.5", 3), ("sleep", 60), ("check", "3", "3.0", 3), ("check", "3", "4", 3)]
        import time

        t0 = time.perf_counter()
        assert grader.check(jobs) == [True, False, True, False]
        assert time.perf_counter() - t0 < 20 and grader.killed == 1
    finally:
        grader.shutdown()
