"""Math answer checking: extract the final answer, decide equivalence, and never hang doing it.

Why this module looks the way it does (SCORE_PAPER.md "Pitfalls", STACK_NOTES.md "math-verify"):

- No marker, no answer. math-verify, given a whole output, falls back to the last number in the
  text, which credits unfinished work. We extract the answer ourselves and only accept
  "The final answer is X" (the paper's prompt asks for it) or ``\\boxed{X}``; the one that comes
  LAST in the text wins, and an output with neither scores 0 with ``answer=None``. Extraction only
  ever looks at the last marker and the last box, with one linear scan each, so megabytes of
  garbage cost milliseconds.
- ``verify(gold, pred)`` is not symmetric: gold first, always.
- math-verify reads prose as products of symbols ("No" == "on", "True" == "rTeu") and misreads
  Python's ``**``. Answers made of plain words are compared as case-insensitive strings only, and
  ``**`` becomes ``^`` before parsing.
- math-verify rounds to 6 decimals (0.0000001 == 0.0000002). Two plain rational numbers (integers,
  decimals, a/b, \\frac{a}{b}) are compared exactly instead, without math-verify.
- math-verify's timeouts use ``signal.alarm``: they raise off the main thread and cannot interrupt
  C code that holds the GIL (a huge integer power, say). So every math-verify check runs in a pool
  of worker processes, each check in its worker's main thread (where the signal timeouts work),
  and the parent enforces a hard wall-clock limit on top: a worker that overruns is killed, its item
  scored wrong, a fresh worker started, and the batch goes on. This holds whether `grade_math` is
  called from the main thread, another thread, or a (daemonic) worker process.
- Workers are fresh interpreters (``subprocess`` running `_worker_main`, the "spawn" start method's
  semantics without its costs): nothing is forked from a process that holds CUDA, threads or a TRL
  trainer, the caller's ``__main__`` is not re-imported (so a restart after a kill costs ~1 s, not a
  re-import of torch), and unlike ``multiprocessing.Process`` they can be started from inside a
  daemonic ``multiprocessing`` worker (a DataLoader or Pool worker). POSIX only, as is the sandbox.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from multiprocessing.connection import Connection, wait

from score_cli.tasks import Grade

log = logging.getLogger(__name__)

# Test seam: "module:function", imported by each worker at start and called as f(gold, pred) before
# every check, so a test can make a check hang or crash the worker and watch the parent recover.
HOOK_ENV = "SCORE_MATH_GRADER_HOOK"

MAX_ANSWER_CHARS = 2000  # longer answers are compared as strings only (no gold answer is this long)
WORKER_MEMORY_BYTES = 2 << 30  # RLIMIT_AS of a worker: a runaway expression dies with MemoryError
STARTUP_TIMEOUT_S = 120.0  # a worker importing sympy on a loaded machine can take a while

# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_MARKER = re.compile(r"final answer is", re.IGNORECASE)
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)
_HOPE = re.compile(r"I hope it is correct", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


def _match_brace(text: str, start: int) -> int | None:
    """Index of the '}' closing the '{' at `start` (escaped braces skipped), or None: one scan."""
    depth = 0
    for m in _BRACE_TOKENS.finditer(text, start):
        tok = m.group(0)
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def _find_unescaped(text: str, needle: str, start: int) -> int:
    """The next `needle` at or after `start` not preceded by a backslash, or -1."""
    while True:
        j = text.find(needle, start)
        if j <= 0 or text[j - 1] != "\\":
            return j
        start = j + 1


def _after_box(text: str, end: int) -> str | None:
    """The argument of a ``\\boxed`` ending at `end`: ``{...}`` (nested braces) or one bare token."""
    i = end
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        close = _match_brace(text, i)
        if close is None:  # unclosed: a truncated output
            return None
        return text[i + 1 : close].strip() or None
    if i == end:  # "\boxed" glued to something that is not a brace: not an argument
        return None
    j = i
    while j < len(text) and not text[j].isspace() and text[j] != "$":
        j += 1
    return text[i:j].rstrip(".,;:") or None


def _after_marker(text: str, end: int) -> str | None:
    """The answer after "final answer is": ``$X$``, ``$$X$$``, ``\\(X\\)``, or the rest of the sentence."""
    i = end
    while i < len(text) and text[i] in " \t:*":
        i += 1
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left, i):
            close = _find_unescaped(text, right, i + len(left))
            if close < 0:  # unclosed: a truncated output
                return None
            return text[i + len(left) : close].strip() or None
    newline = text.find("\n", i)
    line = text[i : newline if newline >= 0 else len(text)]
    hope = _HOPE.search(line)
    if hope:
        line = line[: hope.start()]
    stop = _SENTENCE_END.search(line)  # "3.5. I hope" -> "3.5": a full stop, not a decimal point
    if stop:
        line = line[: stop.start()]
    open_ = _find_unescaped(line, "$", 0)  # "is therefore $5$" -> "5"
    close = _find_unescaped(line, "$", open_ + 1) if open_ >= 0 else -1
    if close > open_ + 1:
        return line[open_ + 1 : close].strip() or None
    return line.strip().strip("*").strip().rstrip(".").strip() or None


def extract_answer(text: str) -> str | None:
    """The final answer of a model output: the last "The final answer is X" or ``\\boxed{X}``.

    Whichever marker comes last in the text decides; if it holds no answer (an empty box, a
    truncated ``$...``), the result is None. No marker at all -> None.
    """
    if not text:
        return None
    marker = box = None
    for marker in _MARKER.finditer(text):  # noqa: B007 - we want the last one
        pass
    for box in _BOX.finditer(text):  # noqa: B007
        pass
    if marker is None and box is None:
        return None
    if box is not None and (marker is None or box.start() > marker.start()):
        return _after_box(text, box.end())
    return _after_marker(text, marker.end())


# ---------------------------------------------------------------------------------------------
# Normalisation and cheap decisions (pure string work: safe in the caller's process)
# ---------------------------------------------------------------------------------------------

_TEXT_WRAPPER = r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox|mathit)\s*"
_WHOLE_TEXT = re.compile(_TEXT_WRAPPER + r"\{([^{}]*)\}")
_UNITS = (
    r"(?:square\s+|sq\.?\s+|cubic\s+)?(?:units?|cm|mm|km|meters?|metres?|centimeters?|millimeters?|"
    r"kilometers?|inch(?:es)?|in|feet|foot|ft|yards?|yd|miles?|mi|mph|km/h|m/s|kg|grams?|g|pounds?|lbs?|"
    r"ounces?|oz|liters?|litres?|ml|mL|gallons?|seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|"
    r"weeks?|months?|years?|degrees?|cents?|dollars?|percent|m)"
)
_TEXT_UNIT = re.compile(_TEXT_WRAPPER + r"\{\s*(" + _UNITS + r")\s*\}")
_UNIT_TAIL = re.compile(  # "5 cm", "5 m^2", "3 hours.": a unit after a space (so "2m" stays 2*m)
    r"(?<=[\d}.])\s+(?:" + _UNITS + r")(?:\s*\^\s*(?:\{[23]\}|[23])|\s+squared|\s+cubed)?(?:\s*\.)?\s*$",
    re.IGNORECASE,
)
_MULTI_LETTER_UNIT_TAIL = re.compile(  # "5cm" (no space): only multi-letter units, "2m" may be 2*m
    r"(?<=\d)(?:cm|mm|km|kg|inches|feet|ft|miles|mph|hours|minutes|seconds|degrees|cents|dollars)\s*\.?$",
    re.IGNORECASE,
)
_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])")
_NEG_SPACE = re.compile(r"(?<!\\)\\!")  # MATH writes 10,\!000
_THIN_SPACE = re.compile(r"(?<!\\)\\[,;: ]|~")
_DEGREES = re.compile(r"\^\s*(?:\{\s*)?\\circ(?:\s*\})?|°|\\circ\s*$|\\degree")
_PERCENT = re.compile(r"\\?%|\\percent")
_DOLLAR = re.compile(r"\\\$|(?<!\\)\$")
_MATH_WORDS = (
    (re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])"), r"\\pi"),
    (re.compile(r"(?<![\\A-Za-z])(?:infinity|infty|inf|oo)(?![A-Za-z])", re.IGNORECASE), r"\\infty"),
)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PAREN_LETTER = re.compile(r"\(([A-Za-z])\)")
_WORDS = re.compile(r"[A-Za-z]+(?:[\s'-]+[A-Za-z]+)*")
_SPACES = re.compile(r"\s+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_SLASH = re.compile(r"([+-]?\d+)/([+-]?\d+)")
_FRAC = re.compile(r"([+-]?)\\frac(?:\{([+-]?\d+)\}\{([+-]?\d+)\}|(\d)(\d))")


def _clean(answer: str) -> str:
    """The answer with presentation stripped (``$``, \\left/\\right, \\dfrac, thin spaces, units,
    degrees, %, money signs, ``\\text{...}`` wrappers, a trailing period, thousands separators) and
    Python/ASCII spellings made LaTeX (``**``, pi, infinity). Spaces are kept (LaTeX needs
    them); it is what math-verify gets. Linear in the length of the answer.
    """
    s = _SPACES.sub(" ", answer).strip().replace("\u2212", "-")  # no long runs for the regexes below
    s = _DOLLAR.sub("", s).strip()
    if s.startswith("\\boxed{") and _match_brace(s, 6) == len(s) - 1:
        s = s[7:-1].strip()
    m = _WHOLE_TEXT.fullmatch(s)  # "\text{2 hours}", "\text{(C)}", "\textbf{No}"
    if m:
        s = m.group(1).strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", "")
    s = _LEFT_RIGHT.sub("", s)
    s = _THIN_SPACE.sub(" ", _NEG_SPACE.sub("", s))
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("", s)
    s = _TEXT_UNIT.sub(r" \1", s)
    s = _SPACES.sub(" ", s).strip().rstrip(".").strip()
    head, tail = s[:-60], s[-60:]  # units sit at the end: bounded regex work on long answers
    tail = _MULTI_LETTER_UNIT_TAIL.sub("", _UNIT_TAIL.sub("", tail))
    if (head + tail).strip():
        s = (head + tail).strip()
    s = s.replace("**", "^")
    for pattern, latex in _MATH_WORDS:
        s = pattern.sub(latex, s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    m = _PAREN_LETTER.fullmatch(s)  # "(C)" -> "C": a multiple-choice letter
    if m:
        s = m.group(1)
    return s.rstrip(".").strip()


def normalize(answer: str) -> str:
    """The canonical string form used for the cheap equality test: `_clean` without any spaces."""
    return _SPACES.sub("", _clean(answer))


def _is_words(cleaned: str) -> bool:
    """Plain words ("No", "True", "Monday", "not possible"): at least two letters, nothing else."""
    return sum(c.isalpha() for c in cleaned[:200]) >= 2 and _WORDS.fullmatch(cleaned) is not None


def _rational(s: str) -> Fraction | None:
    """The exact value of an integer, decimal, a/b or \\frac{a}{b} literal; None for anything else."""
    if len(s) > 200:
        return None
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(s)
        m = _SLASH.fullmatch(s)
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _FRAC.fullmatch(s)
        if m:
            num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
            value = Fraction(int(num), int(den))
            return -value if m.group(1) == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _quick_verdict(gold: str, pred: str) -> bool | None:
    """Decide without math-verify where strings suffice; None means "ask math-verify"."""
    if len(gold) > MAX_ANSWER_CHARS or len(pred) > MAX_ANSWER_CHARS:  # garbage: no parsing at all
        return bool(gold.strip()) and gold.strip() == pred.strip()
    cg, cp = _clean(gold), _clean(pred)
    ng, np_ = _SPACES.sub("", cg), _SPACES.sub("", cp)
    if not ng or not np_:
        return False
    if ng == np_:
        return True
    if _is_words(cg) or _is_words(cp):  # prose: math-verify would make "No" == "on"
        return _SPACES.sub(" ", cg).lower() == _SPACES.sub(" ", cp).lower()
    rg, rp = _rational(ng), _rational(np_)
    if rg is not None and rp is not None:  # exact, where math-verify would round to 6 decimals
        return rg == rp
    return None


def _math_verify(gold: str, pred: str, timeout_s: int | None) -> bool:
    """math-verify on two cleaned answers, gold first; any failure is False."""
    try:
        from math_verify import parse, verify

        parsed_gold = parse(f"${gold}$", parsing_timeout=timeout_s)
        parsed_pred = parse(f"${pred}$", parsing_timeout=timeout_s)
        if not parsed_gold or not parsed_pred:
            return False
        # allow_set_relation_comp: a gold interval (-oo, 3] also accepts the inequality x <= 3
        return bool(verify(parsed_gold, parsed_pred, allow_set_relation_comp=True, timeout_seconds=timeout_s))
    except Exception:  # noqa: BLE001 - a checker failure is a wrong answer, never a crash
        log.debug("math-verify failed on gold=%r pred=%r", gold[:100], pred[:100], exc_info=True)
        return False


def _check(gold: str, pred: str, timeout_s: int | None) -> bool:
    verdict = _quick_verdict(gold, pred)
    if verdict is not None:
        return verdict
    return _math_verify(_clean(gold), _clean(pred), timeout_s)


def answers_match(gold: str, pred: str) -> bool:
    """Is `pred` equivalent to the gold answer `gold`? Never raises.

    Normalised string equality first, plain words as case-insensitive strings, plain rationals
    exactly, then math-verify with gold first. This runs in the calling process: math-verify's own
    timeouts apply on the main thread only and nothing can stop C code holding the GIL, so grading
    model outputs goes through `grade_math`, which bounds the time.
    """
    if gold is None or pred is None:
        return False
    try:
        on_main = threading.current_thread() is threading.main_thread()
        return _check(str(gold), str(pred), 5 if on_main else None)
    except Exception:  # noqa: BLE001
        log.debug("answer check failed", exc_info=True)
        return False


# ---------------------------------------------------------------------------------------------
# Worker processes (each check in a worker's main thread, under a hard limit from the parent)
# ---------------------------------------------------------------------------------------------


def _load_hook():
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return None
    module, _, name = spec.partition(":")
    import importlib

    return getattr(importlib.import_module(module), name)


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone (it may have died with SIGKILL and never closed our pipe)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


_WARM_UP = (("1", "1"), ("2\\sqrt{2}", "\\sqrt{8}"))  # imports, parser, sympy's simplify caches


def _worker_main(job_fd: int, result_fd: int, parent: int) -> None:
    """A worker's loop: receive {id, gold, pred, t} as JSON, answer {id, ok}, in the main thread."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    for name in ("math_verify", "latex2sympy2_extended"):  # its timeout warnings are the parent's to log
        logging.getLogger(name).setLevel(logging.ERROR)
    jobs, results = Connection(job_fd, writable=False), Connection(result_fd, readable=False)
    hook = _load_hook()
    for gold, pred in _WARM_UP:  # not on the first answer's clock
        _math_verify(gold, pred, 5)
    results.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            job = json.loads(jobs.recv_bytes())
        except (EOFError, OSError):
            return
        ok = False
        try:
            if hook is not None:
                hook(job["gold"], job["pred"])
            ok = _check(job["gold"], job["pred"], job["t"])
        except Exception:  # noqa: BLE001 - MemoryError, RecursionError, ...: a wrong answer
            log.debug("check failed", exc_info=True)
        results.send_bytes(json.dumps({"id": job["id"], "ok": bool(ok)}).encode())


class _Worker:
    """One checker process, connected by two pipes."""

    def __init__(self) -> None:
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        env = dict(os.environ)
        # the worker imports score_cli (and a test hook) from wherever this process found them
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        code = (
            "from score_cli.math_grader import _worker_main; "
            f"_worker_main({job_r}, {res_w}, {os.getpid()})"
        )
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code],
                pass_fds=(job_r, res_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            for fd in (job_r, job_w, res_r, res_w):
                os.close(fd)
            raise
        os.close(job_r)
        os.close(res_w)
        self.jobs = Connection(job_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self.ready = False
        self.started = time.monotonic()
        self.job: int | None = None  # index of the item being checked
        self.deadline = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            log.warning("math checker process %d did not die", self.proc.pid)
        self.jobs.close()
        self.results.close()

    def forget(self) -> None:
        """In a forked child: drop our copies of the pipes, leave the parent's process alone."""
        for conn in (self.jobs, self.results):
            try:
                conn.close()
            except OSError:
                pass
        self.proc.returncode = 0  # so Popen.__del__ does not try to reap another process's child


class _Pool:
    """Up to `size` worker processes with a hard per-check wall-clock limit."""

    def __init__(self, size: int, startup_timeout: float = STARTUP_TIMEOUT_S) -> None:
        self.size = max(1, size)
        self.startup_timeout = startup_timeout
        self.workers: list[_Worker] = []
        self.kills = 0  # checks that overran and had their worker killed
        self.crashes = 0  # workers that died while checking
        self.pid = os.getpid()

    def _spawn_to(self, n: int) -> None:
        while len(self.workers) < min(n, self.size):
            self.workers.append(_Worker())

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers.remove(w)

    def run(self, jobs: Sequence[tuple[str, str]], timeout: float) -> list[bool]:
        """Check (gold, pred) pairs; one that does not answer within `timeout` s counts as False."""
        results = [False] * len(jobs)
        todo = collections.deque(range(len(jobs)))
        # math-verify's own alarms (whole seconds, per parse and per comparison): they end most slow
        # checks without a kill; the parent's deadline bounds the sum
        inner = max(1, math.ceil(timeout * 0.8))
        failed_starts = 0
        try:
            while todo or any(w.job is not None for w in self.workers):
                self._spawn_to(len(todo) + sum(w.job is not None for w in self.workers))
                for w in list(self.workers):
                    if w.ready and w.job is None and todo:
                        i = todo.popleft()
                        message = {"id": i, "gold": jobs[i][0], "pred": jobs[i][1], "t": inner}
                        try:
                            w.jobs.send_bytes(json.dumps(message).encode())
                        except OSError:  # died while idle: the item was never checked, retry it
                            todo.appendleft(i)
                            self._replace(w)
                            continue
                        w.job, w.deadline = i, time.monotonic() + timeout
                now = time.monotonic()
                waiting = [w for w in self.workers if w.job is not None or not w.ready]
                deadlines = [w.deadline if w.ready else w.started + self.startup_timeout for w in waiting]
                pause = max(0.0, min(deadlines, default=now) - now)
                ready = wait([w.results for w in waiting], timeout=pause)
                for w in [w for w in waiting if w.results in ready]:
                    try:
                        message = json.loads(w.results.recv_bytes())
                    except (EOFError, OSError, ValueError):
                        if w.job is not None:
                            log.warning("a math checker process died on an answer; scored it wrong")
                            self.crashes += 1
                        else:
                            failed_starts += 1
                        self._replace(w)
                        continue
                    if "ready" in message:
                        w.ready, failed_starts = True, 0
                    elif message.get("id") == w.job:
                        results[w.job] = bool(message["ok"])
                        w.job = None
                now = time.monotonic()
                for w in list(self.workers):
                    if w.job is not None and now > w.deadline:
                        log.warning(
                            "an answer check ran over %.1f s; killed its process and scored it wrong", timeout
                        )
                        self.kills += 1
                        self._replace(w)
                    elif not w.ready and now > w.started + self.startup_timeout:
                        failed_starts += 1
                        self._replace(w)
                if failed_starts >= 3:
                    raise RuntimeError(
                        "math grader: checker processes fail to start (see their errors on stderr); "
                        f"is `{sys.executable} -c 'import math_verify'` working?"
                    )
        except BaseException:
            for w in [w for w in self.workers if w.job is not None]:  # no stale answers later
                self._replace(w)
            raise
        return results

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []

    def forget(self) -> None:
        for w in self.workers:
            w.forget()
        self.workers = []


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def shutdown() -> None:
    """Stop the checker processes (they restart on the next `grade_math`); also run at exit."""
    global _POOL
    locked = _POOL_LOCK.acquire(timeout=10)  # at exit a daemon thread may still be grading
    try:
        if _POOL is not None:
            _POOL.close()
            _POOL = None
    finally:
        if locked:
            _POOL_LOCK.release()


def _after_fork_in_child() -> None:
    """A forked child must not talk to its parent's workers, nor wait on a lock held at fork time."""
    global _POOL, _POOL_LOCK
    if _POOL is not None:
        _POOL.forget()
    _POOL, _POOL_LOCK = None, threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def grade_math(golds: Sequence[str], outputs: Sequence[str], *, timeout: float = 5.0) -> list[Grade]:
    """Grade model outputs against gold answers.

    Answers are extracted here (no marker -> ``Grade(None, False)``); string-decidable pairs are
    settled here too; the rest go to the checker processes, each check limited to `timeout` seconds
    of wall-clock time (an overrun counts as wrong). Safe from any thread or process.
    """
    global _POOL
    if len(golds) != len(outputs):
        raise ValueError(f"grade_math: {len(golds)} gold answers for {len(outputs)} outputs")
    grades = [Grade(extract_answer(o or ""), False) for o in outputs]
    jobs: list[tuple[str, str]] = []
    where: list[int] = []
    for i, (gold, grade) in enumerate(zip(golds, grades, strict=True)):
        if grade.answer is None or gold is None:
            continue
        verdict = _quick_verdict(str(gold), grade.answer)
        if verdict is None:
            jobs.append((str(gold), grade.answer))
            where.append(i)
        else:
            grade.correct = verdict
    if jobs:
        with _POOL_LOCK:
            if _POOL is None or _POOL.pid != os.getpid():
                _POOL = _Pool(_default_workers())
            for i, ok in zip(where, _POOL.run(jobs, timeout), strict=True):
                grades[i].correct = ok
    return grades
