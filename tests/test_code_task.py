"""Code tasks: extraction from realistic answers, grading in the sandbox (all of HumanEval's canonical
solutions pass, all `pass` stubs fail, early exits never count), prompts and loading."""

from __future__ import annotations

import pytest

from score_cli.errors import ScoreError
from score_cli.tasks import CODE_INSTRUCTION, Problem
from score_cli.tasks.code_task import (
    MBPP_SHOTS,
    CodeTask,
    extract_code,
    load_code_problems,
    mbpp_problem,
)
from score_cli.tasks.registry import load_task


@pytest.fixture(scope="module")
def humaneval() -> dict[str, Problem]:
    return {p.id: p for p in load_code_problems("humaneval")}


@pytest.fixture(scope="module")
def he0(humaneval) -> Problem:
    return humaneval["HumanEval/0"]  # has_close_elements(numbers, threshold), imports List


GOOD = (
    "def has_close_elements(numbers, threshold):\n"
    "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
)
BAD = "def has_close_elements(numbers, threshold):\n    return False\n"


def grade_one(problem: Problem, output: str, bench: str = "humaneval", **kw) -> bool:
    return CodeTask(bench, **kw).grade([problem], [output])[0].correct


# --------------------------------------------------------------------------- extraction


def test_fenced_block_with_chat_around(he0):
    out = f"Sure! Here it is:\n\n```python\n{GOOD}```\n\nEach pair is compared once. Hope it helps!"
    code = extract_code(out, he0)
    assert code.startswith(he0.meta["prompt"].rstrip()) and code.endswith(GOOD)
    assert "Hope it helps" not in code and grade_one(he0, out)


def test_several_blocks_last_program_wins_usage_blocks_do_not(he0):
    out = (
        f"First attempt:\n```python\n{BAD}```\nThat is wrong for close pairs. Corrected:\n"
        f"```python\n{GOOD}```\nExample:\n```python\nprint(has_close_elements([1.0, 1.05], 0.1))\n```\n"
        "Output:\n```text\nTrue\n```\n"
    )
    code = extract_code(out, he0)
    assert GOOD in code and BAD not in code and "print(" not in code
    assert grade_one(he0, out)
    assert not grade_one(he0, out.replace(GOOD, "GOOD").replace(BAD, GOOD).replace("GOOD", BAD))


def test_trailing_unterminated_fence_is_skipped(he0):
    out = f"```python\n{GOOD}```\nA variant that sorts first:\n```python\ndef has_close_elements(numbers, thr"
    assert extract_code(out, he0).endswith(GOOD) and grade_one(he0, out)
    # With no complete block, the cut-off one is all there is: use it.
    assert extract_code(f"```python\n{GOOD}", he0).endswith(GOOD)
    assert grade_one(he0, f"Here you go:\n```python\n{GOOD}")


def test_untagged_and_short_tags(he0):
    for tag in ("", "py", "Python3"):
        assert grade_one(he0, f"```{tag}\n{GOOD}```")
    assert extract_code(f"```bash\npip install x\n```\n```\n{GOOD}```", he0).endswith(GOOD)


def test_bare_code_with_prose_around(he0):
    out = f"Here is my implementation.\n\n{GOOD}\nIt runs in quadratic time, which is fine here."
    code = extract_code(out, he0)
    assert code.endswith(GOOD) and "quadratic" not in code and "implementation" not in code
    assert grade_one(he0, out)
    assert grade_one(he0, GOOD)  # bare, nothing else


def test_body_only_completion_is_appended_to_the_prompt(he0):
    body = he0.meta["canonical_solution"]  # indented, as a completion model writes it
    assert body.startswith("    ")
    assert extract_code(body, he0) == he0.meta["prompt"] + body
    assert grade_one(he0, body)
    # Indentation of the first line lost (a stripped answer): still the body.
    assert grade_one(he0, body.lstrip())
    # A one-line body written flush left.
    assert grade_one(he0, "```python\nreturn any(abs(a - b) < threshold for i, a in enumerate(numbers)"
                           " for b in numbers[i + 1:])\n```")


def test_full_rewrite_keeps_the_prompts_imports_and_helpers(humaneval):
    p = humaneval["HumanEval/38"]  # decode_cyclic; the prompt also defines encode_cyclic
    assert "def encode_cyclic" in p.meta["prompt"]
    out = (
        "The decoder applies the encoder twice:\n```python\ndef decode_cyclic(s: str):\n"
        "    return encode_cyclic(encode_cyclic(s))\n```"
    )
    code = extract_code(out, p)
    assert code.startswith(p.meta["prompt"].rstrip()) and "return encode_cyclic(encode_cyclic(s))" in code
    assert grade_one(p, out)
    # A full rewrite with its own imports (typing's List comes from the prompt otherwise).
    he0 = humaneval["HumanEval/0"]
    rewrite = "from typing import List\n\n\n" + he0.meta["prompt"] + he0.meta["canonical_solution"]
    assert grade_one(he0, f"```python\n{rewrite}```")


def test_mbpp_begin_done_format():
    p = mbpp_problem({"task_id": 2, **MBPP_SHOTS[0], "test_setup_code": ""})
    assert p.meta["entry_point"] == "similar_elements"
    code = MBPP_SHOTS[0]["code"]
    out = f"{code}\n[DONE]\n\nYou are an expert Python programmer, and here is ...\n[BEGIN]\ndef x(): pass"
    assert extract_code(out, p).strip() == code.strip()
    assert grade_one(p, out, bench="mbpp")
    assert grade_one(p, f"[BEGIN]\n{code}\n[DONE]", bench="mbpp")
    assert grade_one(p, f"```python\n{code}\n```", bench="mbpp")
    assert not grade_one(p, "[BEGIN]\ndef similar_elements(a, b):\n    return ()\n[DONE]", bench="mbpp")


def test_no_code_at_all_is_wrong_without_running(he0):
    grades = CodeTask("humaneval").grade([he0, he0], ["", "   \n"])
    assert [(g.answer, g.correct) for g in grades] == [(None, False), (None, False)]


# --------------------------------------------------------------------------- grading


@pytest.mark.parametrize(
    "cheat",
    [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "raise SystemExit",
        "print('all tests passed')\nimport sys\nsys.exit(0)",
        "import os\nos.write(1, b'\\nscore-tests-passed-0123456789abcdef0123456789abcdef\\n')\nos._exit(0)",
    ],
)
def test_exiting_before_the_tests_never_counts(he0, cheat):
    """Exit status 0 is not enough: the tests must run to the end, in the tester."""
    out = f"```python\n{GOOD}\n{cheat}\n```"
    assert not grade_one(he0, out)


HACKS = {
    # The three faked passes, as they were written against the printed-marker grader.
    "marker-from-co_consts": "import sys, posix\n"
    "for c in sys._getframe(0).f_code.co_consts:\n"
    "    if isinstance(c, bytes) and b'score-tests-passed-' in c:\n"
    "        posix.write(1, c)\n"
    "posix._exit(0)\n",
    "settrace-skips-asserts": "import sys\n"
    "def skip(frame, event, arg):\n"
    "    if event == 'line' and frame.f_code.co_name in ('<module>', 'check'):\n"
    "        frame.f_lineno = max(line for _, _, line in frame.f_code.co_lines() if line)\n"
    "    return skip\n"
    "sys.settrace(skip)\nsys._getframe().f_trace = skip\n",
    "always-equal-result": "class Eq:\n    def __eq__(self, other):\n        return True\n"
    "def has_close_elements(numbers, threshold):\n    return Eq()\n",
    # Variants.
    "bool-subclass-of-int": "class B(int):\n    __eq__ = lambda self, other: True\n"
    "def has_close_elements(numbers, threshold):\n    return B(0)\n",
    "patched-builtins": "import builtins\nbuiltins.abs = lambda x: 0\n"
    "def has_close_elements(numbers, threshold):\n    return False\n",
    "redefined-check": "def check(candidate):\n    pass\n"
    "def has_close_elements(numbers, threshold):\n    return False\n",
}


@pytest.mark.parametrize("name", list(HACKS))
def test_reward_hacks_are_graded_wrong(he0, name):
    """Each of these was graded correct by the printed-marker grader (programs and tests in one
    process) or is a variant of one; the tester's verdict makes them all wrong."""
    assert not grade_one(he0, f"```python\n{HACKS[name]}```")


def test_prompt_helpers_come_from_the_prompt(humaneval):
    """HumanEval/38's tests encode with the prompt's encode_cyclic: a program that rewrites the
    helper to the identity (and decodes with the identity) does not pass."""
    p = humaneval["HumanEval/38"]
    task = CodeTask("humaneval")
    assert task.tests(p).startswith(p.meta["prompt"].rstrip())
    assert not task.tests(humaneval["HumanEval/0"]).startswith(humaneval["HumanEval/0"].meta["prompt"][:30])
    cheat = "def encode_cyclic(s: str):\n    return s\n\n\ndef decode_cyclic(s: str):\n    return s\n"
    assert not grade_one(p, f"```python\n{cheat}```")
    assert grade_one(p, p.meta["canonical_solution"])


def test_a_task_function_named_like_a_builtin_is_the_programs():
    """The tester never lets a program's name hide a built-in (`def abs` would fake approximate
    tests), but a function the task itself names like one (MBPP's reference defines it) is bound."""
    p = mbpp_problem({"task_id": 9001, "text": "Write a function to find the larger of two numbers.",
                      "code": "def max(a, b):\n    return a if a > b else b",
                      "test_list": ["assert max(1, 2) == 2", "assert max(3, 2) == 3"], "test_setup_code": ""})
    assert CodeTask("mbpp").tests(p).startswith("max = __program__.max\n")
    assert grade_one(p, f"[BEGIN]\n{p.meta['code']}\n[DONE]", bench="mbpp")
    assert not grade_one(p, "[BEGIN]\ndef max(a, b):\n    return 0\n[DONE]", bench="mbpp")


def test_infinite_loop_and_crash_are_wrong_and_quick(he0):
    import time

    t = time.monotonic()
    grades = CodeTask("humaneval", timeout=1).grade(
        [he0] * 3,
        [
            "```python\ndef has_close_elements(numbers, threshold):\n    while True: pass\n```",
            "```python\nimport ctypes\nctypes.string_at(0)\n```",
            f"```python\n{GOOD}```",
        ],
    )
    assert [g.correct for g in grades] == [False, False, True]
    assert time.monotonic() - t < 5


def test_grade_checks_lengths(he0):
    with pytest.raises(ValueError):
        CodeTask("humaneval").grade([he0], [])


def test_all_humaneval_canonical_solutions_pass_and_pass_stubs_fail(humaneval):
    """164 body-only completions (the canonical solutions) pass; 164 full rewrites whose body is
    `pass` fail. 328 sandboxed programs on the machine's CPUs."""
    problems = list(humaneval.values())
    assert len(problems) == 164
    task = CodeTask("humaneval")
    right = task.grade(problems, [p.meta["canonical_solution"] for p in problems])
    assert [p.id for p, g in zip(problems, right, strict=True) if not g.correct] == []
    stubs = [f"```python\n{p.meta['prompt']}    pass\n```" for p in problems]
    wrong = task.grade(problems, stubs)
    assert [p.id for p, g in zip(problems, wrong, strict=True) if g.correct] == []


# --------------------------------------------------------------------------- prompts and loading


def test_task_and_prompts(he0):
    task = CodeTask("humaneval")
    assert task.instruction == CODE_INSTRUCTION and task.name == "humaneval"
    (msg,) = task.messages(he0)
    assert msg["role"] == "user" and he0.meta["prompt"] in msg["content"] and "```python" in msg["content"]
    p = mbpp_problem(
        {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given "
         "character from the string.", "code": "def remove_Occ(s,ch):\n    return s",
         "test_list": ['assert remove_Occ("hello","l") == "heo"'], "test_setup_code": ""}
    )
    (msg,) = CodeTask("mbpp").messages(p)
    text = msg["content"]
    assert text.startswith(
        "You are an expert Python programmer, and here is your task: Write a function to find the similar "
        "elements from the given two tuple lists. Your code should pass these tests:\n\n"
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
    )
    assert text.count("[DONE]") == 3 and text.count("[BEGIN]") == 4
    assert "is_not_prime" in text and "heap_queue_largest" in text
    assert text.endswith(
        "here is your task: Write a python function to remove first and last occurrence of a given character "
        "from the string. Your code should pass these tests:\n\n"
        'assert remove_Occ("hello","l") == "heo"\n[BEGIN]\n'
    )
    with pytest.raises(ScoreError):
        CodeTask("apps")


def test_load_task_humaneval():
    task, problems = load_task("humaneval")
    assert isinstance(task, CodeTask) and task.instruction == CODE_INSTRUCTION and len(problems) == 164
    p = problems[0]
    assert p.id == "HumanEval/0" and "def check(candidate)" in p.answer
    assert set(p.meta) >= {"entry_point", "prompt", "canonical_solution"}
    with pytest.raises(ScoreError, match="only a test split"):
        load_code_problems("humaneval", split="train")


def test_mbpp_offline_says_to_pass_data(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'google-research-datasets/mbpp' on the Hub (offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ScoreError) as e:
        load_code_problems("mbpp", split="train")
    msg = str(e.value)
    assert "--data" in msg and "google-research-datasets/mbpp" in msg and "\n" not in msg
    with pytest.raises(ScoreError, match="no split"):
        load_code_problems("mbpp", split="dev")


def test_mbpp_rows_from_the_hub_become_problems(monkeypatch):
    import datasets

    calls = []

    def fake(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"task_id": 2 + i, "test_setup_code": "", "challenge_test_list": [], **s}
                for i, s in enumerate(MBPP_SHOTS)]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    problems = load_code_problems("mbpp", split="train")
    assert calls == [("google-research-datasets/mbpp", "full", "train")]
    names = ["similar_elements", "is_not_prime", "heap_queue_largest"]
    assert [p.meta["entry_point"] for p in problems] == names
    grades = CodeTask("mbpp").grade(problems, [f"[BEGIN]\n{p.meta['code']}\n[DONE]" for p in problems])
    assert all(g.correct for g in grades)


def test_humaneval_from_a_data_file(tmp_path, humaneval, jsonl):
    """--data with --bench humaneval: rows with only the prompt and the tests still grade."""
    rows = [{"problem": p.meta["prompt"], "answer": p.answer} for p in list(humaneval.values())[:3]]
    path = jsonl(tmp_path / "he.jsonl", rows)
    task, problems = load_task("humaneval", data=str(path))
    assert isinstance(task, CodeTask) and problems[0].meta == {}
    sols = [p.meta["canonical_solution"] for p in list(humaneval.values())[:3]]
    assert all(g.correct for g in task.grade(problems, sols))
    assert not any(g.correct for g in task.grade(problems, ["    pass\n"] * 3))


# --------------------------------------------------------------------------- failure reasons


def test_failure_reasons_per_attempt(he0):
    outputs = {
        None: f"```python\n{GOOD}```",
        "failed assert": f"```python\n{BAD}```",
        "syntax error": "```python\ndef has_close_elements(numbers, threshold)\n    return True\n```",
        "ZeroDivisionError": "```python\ndef has_close_elements(numbers, threshold):\n    return 1 / 0\n```",
        "timeout": "```python\ndef has_close_elements(numbers, threshold):\n    while True: pass\n```",
        "memory": "```python\nhog = bytearray(8 * 1024 ** 3)\n```",
        "ModuleNotFoundError": "```python\nimport no_such_module\n```",
        "exited before the tests": "```python\nimport sys\nsys.exit(0)\n```",
        "no code": "",
    }
    grades = CodeTask("humaneval", timeout=2, memory_mb=512).grade([he0] * len(outputs), list(outputs.values()))
    assert [g.reason for g in grades] == list(outputs)
    assert [g.correct for g in grades] == [True] + [False] * (len(outputs) - 1)


def test_eval_rows_carry_reasons_and_pass_at_k(he0, tmp_path, char_tokenizer, scripted):
    from score_cli.evaluate import EvalConfig, evaluate
    from score_cli.rollout import Decoding

    bad = f"```python\n{BAD}```"
    good = f"```python\n{GOOD}```"
    script = {he0.question: [[good, good], [bad, good], [bad, bad]]}  # 3 samples x 2 attempts
    res = evaluate(EvalConfig(model="scripted", bench="humaneval", limit=1, samples=3, output_dir=str(tmp_path / "o"),
                              decoding=Decoding(temperature=1.0)),
                   tokenizer=char_tokenizer, generator=scripted(char_tokenizer, script, CODE_INSTRUCTION))
    m = {k: v["value"] for k, v in res.metrics.items()}
    assert m["pass@1@t1"] == pytest.approx(1 / 3) and m["pass@3@t1"] == 1.0
    assert m["pass@1@t2"] == pytest.approx(2 / 3) and m["accuracy@t1"] == pytest.approx(1 / 3)
    reasons = [[a["reason"] for a in chain] for chain in res.rows[0]["chains"]]
    assert reasons == [[None, None], ["failed assert", None], ["failed assert", "failed assert"]]
