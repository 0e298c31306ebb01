"""Math answer checking: a table of (gold, model output, expected) cases graded as a careful human
would, extraction, and the safety of the checker processes (threads, worker processes, timeouts)."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pytest

from score_cli import math_grader
from score_cli.math_grader import answers_match, extract_answer, grade_math
from score_cli.tasks import Grade


def F(answer: str) -> str:
    """An output in the paper's format."""
    return f"Step by step...\nFinal Answer: The final answer is ${answer}$. I hope it is correct."


def B(answer: str) -> str:
    """An output that boxes its answer."""
    return f"Working... so the result is $\\boxed{{{answer}}}$."


CASES = [
    # fractions and decimals
    ("\\frac{1}{2}", F("0.5"), True),
    ("0.5", F("\\frac{1}{2}"), True),
    ("\\frac{1}{2}", F("1/2"), True),
    ("\\frac{1}{3}", F("0.33"), False),
    ("0.0000001", F("0.0000002"), False),  # math-verify rounds to 6 decimals and says True
    ("10", F("10.0"), True),
    ("\\frac{3}{4}", F("\\frac{4}{3}"), False),
    # \dfrac / \tfrac / \frac
    ("\\dfrac{3}{4}", F("\\frac{3}{4}"), True),
    ("\\frac{3}{4}", B("\\tfrac34"), True),
    # intervals
    ("(1,2]", F("(1,2]"), True),
    ("(1,2]", F("[1,2]"), False),
    ("(-\\infty, 3)", B("(-\\infty,3)"), True),
    ("(-\\infty, 3)", B("(-\\infty,3]"), False),
    ("(-\\infty, 3]", F("x \\le 3"), True),
    ("[0, 1) \\cup (2, 3]", F("[0,1)\\cup(2,3]"), True),
    # sets
    ("\\{1, 2\\}", F("\\{2, 1\\}"), True),
    ("\\{1, 2\\}", F("\\{1, 3\\}"), False),
    # units and text
    ("5", F("5\\text{ cm}"), True),
    ("5\\text{ cm}", F("5"), True),
    ("12", "The final answer is 12 inches. I hope it is correct.", True),
    ("12", B("12\\text{ inches}"), True),
    ("90^\\circ", F("90"), True),
    ("40", B("40^{\\circ}"), True),
    ("\\$18.90", F("18.90"), True),
    ("\\text{(C)}", F("(C)"), True),
    ("\\text{(C)}", F("(D)"), False),
    # negative numbers
    ("-3", F("-3"), True),
    ("-3", F("3"), False),
    ("-\\frac{1}{2}", B("-0.5"), True),
    # nested braces
    ("\\frac{\\sqrt{3}}{2}", B("\\frac{\\sqrt{3}}{2}"), True),
    ("\\frac{\\sqrt{3}}{2}", B("\\frac{\\sqrt{2}}{2}"), False),
    ("\\frac{\\sqrt{3}}{2}", "Hence \\boxed{\\dfrac{\\sqrt{3}}{2}}", True),
    # several boxes: the last one wins
    ("7", "First \\boxed{5}. Wait, that is wrong: \\boxed{7}.", True),
    ("5", "First \\boxed{5}. Wait, that is wrong: \\boxed{7}.", False),
    # "The final answer is" and boxes: whichever comes last
    ("6", "\\boxed{5} was a slip. " + F("6"), True),
    ("5", "\\boxed{5} was a slip. " + F("6"), False),
    ("5", F("6") + " No, actually \\boxed{5}", True),
    # no final answer: wrong, even when the right number is in the text
    ("42", "We get 40 + 2 = 42, and then we", False),
    ("42", "", False),
    ("42", "The final answer is", False),
    ("42", "So the answer is \\boxed{42", False),  # truncated inside the box
    # garbage
    ("3", "}}{{\\boxed{$$ 3 3 The final answer is $", False),
    ("3", "\x00\x01 \u2603 {{{{ \\\\\\ 3 3 3", False),
    # prose answers compare as words, never as products of symbols
    ("No", F("on"), False),
    ("No", F("no"), True),
    ("No", F("\\text{No}"), True),
    ("True", F("False"), False),
    ("\\text{Monday}", "The final answer is Monday. I hope it is correct.", True),
    ("\\text{even}", B("\\text{odd}"), False),
    ("\\text{no solution}", F("\\text{No solution}"), True),
    # square roots
    ("2\\sqrt{2}", B("\\sqrt{8}"), True),
    ("\\sqrt{2}", B("1.41"), False),
    ("\\sqrt{2}", B("\\sqrt{3}"), False),
    # pi
    ("2\\pi", B("2 \\pi"), True),
    ("\\pi", F("3.14"), False),
    ("\\frac{\\pi}{2}", F("\\pi/2"), True),
    # percentages
    ("15\\%", F("15"), True),
    ("15\\%", F("15\\%"), True),
    ("15\\%", F("25\\%"), False),
    # large numbers, thousands separators
    ("1,000,000", F("1000000"), True),
    ("1000000", B("1{,}000{,}000"), True),
    ("1000000007", F("1000000008"), False),
    ("10,\\!000", F("10000"), True),  # MATH's own thousands separator
    ("12345678901234567890", F("12,345,678,901,234,567,890"), True),
    # Python's ** (math-verify reads 2**3 as 2)
    ("8", "The answer is \\boxed{2**3}", True),
    # algebra, tuples, matrices
    ("x^2+2x+1", B("(x+1)^2"), True),
    ("\\frac{1}{\\sqrt{2}}", B("\\frac{\\sqrt{2}}{2}"), True),
    ("\\frac{9}{4}", F("2\\frac{1}{4}"), True),  # a mixed number
    ("\\frac{\\pi}{2}", "The final answer is pi/2.", True),  # ASCII pi
    ("(2,3)", F("(2, 3)"), True),
    ("(2, 3)", F("(3, 2)"), False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", B("\\begin{pmatrix}1\\\\2\\end{pmatrix}"), True),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", B("\\begin{pmatrix}2\\\\1\\end{pmatrix}"), False),
    # the marker without dollars, and its case
    ("3", "The final answer is 3. I hope it is correct.", True),
    ("3.5", "The final answer is 3.5. I hope it is correct.", True),
    ("5", "THE FINAL ANSWER IS 5", True),
    ("3", "\\boxed 3", True),
    ("\\infty", F("\\infty"), True),
]


def test_table_has_enough_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize(("gold", "output", "expected"), CASES)
def test_grade_table(gold, output, expected):
    (grade,) = grade_math([gold], [output])
    assert grade.correct is expected, (gold, output, grade.answer)


def test_table_as_one_batch():
    grades = grade_math([c[0] for c in CASES], [c[1] for c in CASES])
    assert [g.correct for g in grades] == [c[2] for c in CASES]
    assert all(isinstance(g, Grade) for g in grades)


def test_no_marker_means_no_answer_even_if_the_number_is_there():
    (grade,) = grade_math(["42"], ["40 + 2 = 42. So 42 it is. 42"])
    assert grade == Grade(None, False)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (F("\\frac{1}{2}"), "\\frac{1}{2}"),
        ("The final answer is 12.", "12"),
        ("the FINAL answer is 12. I hope it is correct.", "12"),
        ("The final answer is 3.14. I hope it is correct.", "3.14"),  # a decimal point is not a full stop
        ("The final answer is 12 I hope it is correct", "12"),
        ("The final answer is: $7$", "7"),
        ("The final answer is **12**.", "12"),
        ("The final answer is $$x^2$$.", "x^2"),
        ("The final answer is \\(x^2\\).", "x^2"),
        ("The final answer is $\\$5$.", "\\$5"),  # an escaped dollar does not close the math
        ("The final answer is therefore $x = 5$.", "x = 5"),
        ("so \\boxed{\\frac{\\sqrt{3}}{2}} done", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not count
        ("\\boxed 5.", "5"),
        ("\\boxed 3.5", "3.5"),
        ("\\fbox{9}", "9"),
        ("\\boxed{1} and \\boxed{2}", "2"),
        ("The final answer is $\\boxed{7}$.", "7"),
        ("\\boxed{5}. The final answer is $6$.", "6"),
        ("The final answer is $6$. Boxed: \\boxed{5}", "5"),
        ("The final answer is $5$. " + "The final answer is $6$.", "6"),
        ("just 42", None),
        ("", None),
        ("The final answer is", None),
        ("The final answer is $5", None),  # truncated
        ("\\boxed{unclosed", None),
        ("\\boxed{}", None),
        ("\\boxeddots 5", None),  # not \boxed
        ("The final answer is $5$ ... \\boxed{", None),  # the last marker decides, and it is truncated
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_extraction_is_linear_on_a_megabyte_of_garbage():
    junks = [
        "\\boxed{" * 20_000 + "{" * 100_000 + "x" * 900_000,
        "The final answer is $" * 50_000,
        ("{\\boxed " + "The final answer is " + "\\{") * 30_000 + "}" * 100_000,
        "a" * 1_000_000 + "\\boxed{" + "{" * 1000 + "}" * 999,
        "$" * 1_000_000,
    ]
    for junk in junks:
        assert len(junk) >= 1_000_000
        t0 = time.perf_counter()
        extract_answer(junk)
        assert time.perf_counter() - t0 < 1.0
    spaces = " " * 500_000
    for junk in ["^" + spaces + spaces + "x", "5" + spaces + "cm" + spaces + "x", " ." * 500_000,
                 "a " * 500_000 + "1", "1" * 1_000_000, ("\\circ" + " " * 100) * 10_000 + "x"]:
        t0 = time.perf_counter()
        math_grader.normalize(junk)  # the string stage runs in the caller: it must be linear too
        assert time.perf_counter() - t0 < 2.0
    t0 = time.perf_counter()
    grades = grade_math(["3"] * len(junks), junks, timeout=5.0)
    assert not any(g.correct for g in grades) and time.perf_counter() - t0 < 20


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [("1", "\\frac{", False), ("", "1", False), ("1", "", False), ("}}}", "{{{", False),
     ("\\frac{1}{0}", "\\infty", False), ("1", "1" * 5000, False), ("x", "\x00", False),
     ("\\sqrt{", "\\sqrt{", True), ("1", "\\begin{pmatrix}", False), (None, "1", False), ("1", None, False)],
)
def test_answers_match_never_raises(gold, pred, expected):
    assert answers_match(gold, pred) is expected


def test_rationals_compare_exactly():
    assert answers_match("\\frac{1}{2}", "0.5")
    assert answers_match("0.25", "\\frac{1}{4}")
    assert not answers_match("\\frac{1}{3}", "0.333333")  # math-verify alone: True
    assert not answers_match("0.1234567", "0.1234568")  # math-verify alone: True


def test_gold_goes_first_to_math_verify(monkeypatch):
    import math_verify

    seen = []
    real = math_verify.verify

    def spy(gold, pred, **kwargs):
        seen.append((gold, pred))
        return real(gold, pred, **kwargs)

    monkeypatch.setattr(math_verify, "verify", spy)
    assert answers_match("2\\sqrt{2}", "\\sqrt{8}")
    (gold, pred), = seen
    assert "2\\sqrt{2}" in [str(x) for x in gold] and "\\sqrt{8}" in [str(x) for x in pred]


def test_answers_match_off_the_main_thread():
    out = {}
    thread = threading.Thread(target=lambda: out.update(ok=answers_match("2\\sqrt{2}", "\\sqrt{8}")))
    thread.start()
    thread.join(60)
    assert out == {"ok": True}


# ---------------------------------------------------------------------------------------------
# Safety of the checker processes
# ---------------------------------------------------------------------------------------------

NEEDS_MATH_VERIFY = (  # golds, outputs, expected: pairs only math-verify can settle
    ["2\\sqrt{2}", "x^2+2x+1", "3"],
    [B("\\sqrt{8}"), B("(x+1)^2"), B("\\sqrt{10}")],
    [True, True, False],
)


def test_grade_math_from_other_threads():
    golds, outputs, expected = NEEDS_MATH_VERIFY
    results: dict[int, list[bool]] = {}

    def run(k: int) -> None:
        results[k] = [g.correct for g in grade_math(golds, outputs)]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {k: expected for k in range(4)}


def test_shutdown_stops_the_workers_and_the_next_call_restarts_them():
    golds, outputs, expected = NEEDS_MATH_VERIFY
    grade_math(golds, outputs)
    procs = [w.proc for w in math_grader._POOL.workers]
    math_grader.shutdown()
    assert procs and all(p.poll() is not None for p in procs)
    assert [g.correct for g in grade_math(golds, outputs)] == expected


def test_lengths_must_match():
    with pytest.raises(ValueError):
        grade_math(["1", "2"], [F("1")])


def test_grade_math_inside_a_daemonic_worker_process():
    with mp.get_context("spawn").Pool(1) as pool:  # Pool workers are daemonic: no multiprocessing children
        grades = pool.apply(grade_math, (["2\\sqrt{2}"], [B("\\sqrt{8}")]))
    assert [g.correct for g in grades] == [True]


def test_grade_math_in_a_forked_child_leaves_the_parents_workers_alone():
    golds, outputs, expected = NEEDS_MATH_VERIFY
    assert [g.correct for g in grade_math(golds, outputs)] == expected  # the parent's pool is up
    pids = [w.proc.pid for w in math_grader._POOL.workers]
    with mp.get_context("fork").Pool(1) as pool:
        grades = pool.apply(grade_math, (["2\\sqrt{2}"], [B("\\sqrt{8}")]))
    assert [g.correct for g in grades] == [True]
    assert [g.correct for g in grade_math(golds, outputs)] == expected
    assert [w.proc.pid for w in math_grader._POOL.workers] == pids


def test_workers_that_cannot_start_raise_instead_of_scoring_zero(monkeypatch):
    math_grader.shutdown()
    monkeypatch.setattr(math_grader.sys, "executable", "/bin/false")  # every worker exits at once
    try:
        with pytest.raises(RuntimeError, match="fail to start"):
            grade_math(["2\\sqrt{2}"], [B("\\sqrt{8}")])
        assert grade_math(["3"], [F("3")])[0].correct  # string-decidable items never need a worker
    finally:
        math_grader.shutdown()


HOOK = '''
import os, time

def hook(gold, pred):
    if "slow" in pred:
        with open(os.environ["GRADER_TEST_PIDS"], "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(60)  # longer than the test's patience: only a kill ends it in time
    if "crash" in pred:
        os._exit(3)
'''


@pytest.fixture
def hooked_grader(tmp_path, monkeypatch):
    """A fresh one-worker pool whose worker runs a hook that hangs on "slow" and dies on "crash"."""
    (tmp_path / "grader_test_hook.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(math_grader.HOOK_ENV, "grader_test_hook:hook")
    monkeypatch.setenv("GRADER_TEST_PIDS", str(tmp_path / "pids"))
    monkeypatch.setattr(math_grader, "_default_workers", lambda: 1)  # later items need the restarted worker
    math_grader.shutdown()
    yield tmp_path / "pids"
    math_grader.shutdown()


def test_a_hanging_check_is_killed_and_the_rest_still_grade(hooked_grader, caplog):
    golds = ["2\\sqrt{2}", "3", "3\\sqrt{3}", "3", "2\\sqrt{2}", "1/2", "\\sqrt{9}"]
    outputs = [B("\\sqrt{8}"), B("\\slow"), B("\\sqrt{27}"), B("\\crash"), B("\\sqrt{8}"), F("0.5"),
               B("\\sqrt{8}")]
    t0 = time.perf_counter()
    with caplog.at_level("WARNING", logger="score_cli.math_grader"):
        grades = grade_math(golds, outputs, timeout=2.0)
    elapsed = time.perf_counter() - t0
    # one worker: the items after the hang and after the crash were checked by restarted workers
    assert [g.correct for g in grades] == [True, False, True, False, True, True, False]
    assert elapsed < 30, elapsed  # a 60 s hang cut at 2 s, plus two restarts
    pool = math_grader._POOL
    assert (pool.kills, pool.crashes) == (1, 1)
    assert sum("killed its process" in r.getMessage() for r in caplog.records) == 1
    for pid in map(int, hooked_grader.read_text().split()):  # the hung workers are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    # the same from another thread, on the reused pool: the hang is cut, later items still grade
    out = {}

    def run() -> None:
        out["grades"] = grade_math(["3", "2\\sqrt{2}"], [B("\\slow"), B("\\sqrt{8}")], timeout=2.0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert [g.correct for g in out["grades"]] == [False, True]
    assert math_grader._POOL is pool and pool.kills == 2
