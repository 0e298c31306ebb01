"""Math answer checking: extract the final answer, decide equivalence with math-verify, safely.

Pitfalls this module exists for (SCORE_PAPER.md, STACK_NOTES.md):
- An output with no final-answer marker scores 0. math-verify alone falls back to the last number
  in the text, which credits unfinished work; we only hand it the extracted answer.
- Accept "The final answer is $X$" (the paper's prompt) and \\boxed{X}; the last one wins.
- `verify(gold, pred)` is not symmetric: gold first.
- math-verify's own timeouts use signal.alarm, which fails off the main thread. Every check runs
  in a worker process's main thread (its timeouts work there), and the parent also enforces a hard
  wall-clock limit, killing and replacing a worker that overruns, so a pathological answer can
  never hang a run, whatever thread or process `grade_math` is called from.
- math-verify turns prose ("No", "True") into products of symbols ("No" == "on") and misreads
  Python's `**`: plain-word answers are compared as strings, `**` becomes `^`.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import re
import threading
import time
from collections.abc import Sequence

from score_cli.tasks import Grade

log = logging.getLogger(__name__)

_MARKER = re.compile(r"final answer is", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_HOPE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each unescaped '{' -> its matching '}', in one pass (linear even on garbage)."""
    pairs, stack = {}, []
    for i, c in enumerate(text):
        if c == "{" and (i == 0 or text[i - 1] != "\\"):
            stack.append(i)
        elif c == "}" and i > 0 and text[i - 1] != "\\" and stack:
            pairs[stack.pop()] = i
    return pairs


def _after_marker(text: str, end: int) -> str | None:
    """The answer following "final answer is": $...$ if present, else the rest of the sentence."""
    rest = text[end : end + 1000].lstrip(" :")  # answers are short; bounded work per marker
    if rest.startswith("$"):
        close = rest.find("$", 1)
        if rest.startswith("$$"):
            close = rest.find("$$", 2)
            return rest[2:close].strip() if close > 1 else None
        return rest[1:close].strip() if close > 0 else None
    if rest.startswith("\\boxed") or rest.startswith("\\fbox"):
        return None  # the box itself is found by the \boxed scan
    line = rest.split("\n", 1)[0]
    line = _HOPE.sub("", line)
    # up to the end of the sentence: a period followed by space/end, not a decimal point
    m = re.search(r"\.(\s|$)", line)
    answer = (line[: m.start()] if m else line).strip().rstrip(".")
    return answer or None


def extract_answer(text: str) -> str | None:
    """The final answer in a model output: the last "The final answer is X" or \\boxed{X}."""
    if not text:
        return None
    found: list[tuple[int, str]] = []
    for m in _MARKER.finditer(text):
        ans = _after_marker(text, m.end())
        if ans:
            found.append((m.start(), ans))
    boxes = list(_BOXED.finditer(text))
    pairs = _brace_pairs(text) if boxes else {}
    for m in boxes:
        i = m.end()
        if i < len(text) and text[i] == "{":
            close = pairs.get(i)
            if close is not None and text[i + 1 : close].strip():
                found.append((m.start(), text[i + 1 : close].strip()))
        elif i < len(text) and m.group(0).endswith(" "):  # \boxed 5
            tok = re.match(r"[^\s$.,]+", text[i : i + 200])
            if tok:
                found.append((m.start(), tok.group(0)))
    if not found:
        return None
    return max(found, key=lambda x: x[0])[1]


# ---------------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------------
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_UNITS = re.compile(
    r"\s*(?:\\[,;!: ]|~)*\s*\b(cm|m|km|mm|inches|inch|in|feet|ft|foot|units?|degrees?|meters?|cents?|dollars?|"
    r"hours?|minutes?|seconds?|days?|years?|miles?|mph|sq|square)\b\.?\s*(\^?\{?[23]\}?)?\s*$",
    re.IGNORECASE,
)
_WORDS = re.compile(r"^[A-Za-z][A-Za-z ]*$")


def normalize(answer: str) -> str:
    """A canonical string form: no $, spaces, \\left/\\right, \\dfrac, units words or trailing period."""
    s = answer.strip().strip("$").strip()
    s = _TEXT_CMD.sub(r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"(?<!\\)\\[!,; ]", "", s)  # thin spaces, but not the row break \\
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "")
    s = _UNITS.sub("", s)
    s = s.replace("**", "^").rstrip(".").replace(" ", "")
    if re.fullmatch(r"-?[\d,]+(\.\d+)?", s) and "," in s and re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")  # 1,000 -> 1000 (but not the tuple 1,2)
    return s


def _is_words(s: str) -> bool:
    return bool(_WORDS.match(s.strip())) and not re.fullmatch(r"\s*[a-zA-Z]\s*", s)


def answers_match(gold: str, pred: str, *, timeout: int | None = 3) -> bool:
    """Is `pred` equivalent to `gold`? String forms first, then math-verify with gold first.

    `timeout` is math-verify's own (signal-based) limit; pass None off the main thread.
    """
    if pred is None or gold is None:
        return False
    g, p = normalize(str(gold)), normalize(str(pred))
    if not g or not p:
        return False
    if g == p:
        return True
    if _is_words(g) or _is_words(p):  # prose: math-verify would read "No" as n*o
        return g.lower() == p.lower()
    try:
        from math_verify import parse, verify

        pg = parse(f"${g}$", parsing_timeout=timeout)
        pp = parse(f"${p}$", parsing_timeout=timeout)
        if not pg or not pp:
            return False
        return bool(verify(pg, pp, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a checker failure is a wrong answer, never a crash
        return False


# ---------------------------------------------------------------------------------------------
# Bounded, process-isolated checking
# ---------------------------------------------------------------------------------------------


def _worker(conn) -> None:
    """Worker loop: in this process's main thread, so math-verify's signal timeouts work."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        if job[0] == "sleep":  # a test seam: a check that hangs
            time.sleep(job[1])
            conn.send(False)
            continue
        _, gold, pred, timeout = job
        conn.send(answers_match(gold, pred, timeout=timeout))


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(1)
        self.conn.close()


class MathGrader:
    """A small pool of checker processes with a hard per-answer wall-clock limit."""

    def __init__(self, workers: int = 2, timeout: float = 5.0):
        self.n = max(1, workers)
        self.timeout = timeout
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.killed = 0  # workers killed for overrunning (for tests and logs)

    def _ensure(self) -> None:
        while len(self._workers) < self.n:
            self._workers.append(_Worker(self._ctx))

    def check(self, jobs: Sequence[tuple]) -> list[bool]:
        """Run check jobs across the workers; an overrunning job is killed and counts as False."""
        with self._lock:
            self._ensure()
            results: list[bool] = [False] * len(jobs)
            pending = list(range(len(jobs)))[::-1]
            busy: dict[int, tuple[int, float]] = {}  # worker index -> (job index, deadline)
            while pending or busy:
                for w, worker in enumerate(self._workers):
                    if w not in busy and pending:
                        j = pending.pop()
                        worker.conn.send(jobs[j])
                        busy[w] = (j, time.monotonic() + self.timeout)
                conns = [self._workers[w].conn for w in busy]
                ready = mp.connection.wait(conns, timeout=0.05)
                now = time.monotonic()
                for w, (j, deadline) in list(busy.items()):
                    worker = self._workers[w]
                    if worker.conn in ready:
                        try:
                            results[j] = bool(worker.conn.recv())
                        except (EOFError, OSError):  # the worker died: count as wrong, replace it
                            results[j] = False
                            self._replace(w)
                        del busy[w]
                    elif now > deadline or not worker.proc.is_alive():
                        log.warning("answer check exceeded %.1fs; killed its worker and scored it wrong", self.timeout)
                        self.killed += 1
                        self._replace(w)
                        del busy[w]
            return results

    def _replace(self, w: int) -> None:
        self._workers[w].kill()
        self._workers[w] = _Worker(self._ctx)

    def shutdown(self) -> None:
        with self._lock:
            for worker in self._workers:
                try:
                    worker.conn.send(None)
                except (OSError, BrokenPipeError):
                    pass
                worker.kill()
            self._workers = []


_GRADER: MathGrader | None = None
_GRADER_LOCK = threading.Lock()


def get_grader() -> MathGrader:
    """The process-wide grader (started on first use, stopped at exit)."""
    global _GRADER
    with _GRADER_LOCK:
        if _GRADER is None:
            _GRADER = MathGrader()
            atexit.register(_GRADER.shutdown)
        return _GRADER


def grade_math(golds: Sequence[str], outputs: Sequence[str], *, timeout: float | None = None) -> list[Grade]:
    """Grade outputs against gold answers: extraction here, equivalence in bounded workers.

    Cheap decisions (no answer, identical normalised strings, prose) never leave this process.
    """
    grades = [Grade(extract_answer(o), False) for o in outputs]
    jobs, where = [], []
    for i, (gold, g) in enumerate(zip(golds, grades, strict=True)):
        if g.answer is None:
            continue
        ng, np_ = normalize(str(gold)), normalize(g.answer)
        if ng and ng == np_:
            g.correct = True
        elif _is_words(ng) or _is_words(np_):
            g.correct = bool(ng) and ng.lower() == np_.lower()
        else:
            jobs.append(("check", str(gold), g.answer, 3))
            where.append(i)
    if jobs:
        grader = get_grader()
        if timeout is not None:
            grader.timeout = timeout
        for i, ok in zip(where, grader.check(jobs), strict=True):
            grades[i].correct = ok
    return grades
