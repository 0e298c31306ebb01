"""The toy world's base model: a character tokenizer and tiny causal LMs trained from scratch,
offline, on a CPU, on worked solutions of the toy task (`score_cli.tasks.toy_task`).

Everything here is built locally and saved with `save_pretrained`, so every command loads a toy
model exactly like a hub model.

The base model (`train_toy_model`) is a stand-in for the paper's base model: it is trained by
imitation on a *noisy solver* that drops carries and slips digits at fixed rates, so it answers
about half of the problems right when sampled, and it has seen two-attempt conversations whose
second attempt is either a copy of the first or a new try that keeps some of its first lines and
redoes the rest - chosen without looking at whether the first attempt was right. It therefore
writes a real second attempt but has no reason to fix a wrong first one: correcting (keeping the
right lines, redoing from the wrong one) is left for RL to find.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from score_cli.environment import cpu_kernels, cpu_name, package_versions
from score_cli.errors import ScoreError
from score_cli.tasks.base import Problem
from score_cli.tasks.toy_task import (
    CHECKS,
    GOLD,
    TOY_INSTRUCTION,
    NoisySolver,
    ToyTask,
    answer_of,
    draw_problem,
    first_different_line,
    question_text,
)

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {
    "pad": "<pad>", "bos": "<s>", "eos": "</s>", "user": "<|user|>", "assistant": "<|assistant|>"
}
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"

# A minimal chat template: "<s><|user|>...</s><|assistant|>...</s>". An assistant turn ends with
# EOS, so the rollout's instruction suffix is "<|user|>{instruction}</s><|assistant|>".
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}{{ eos_token }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# The file `train_toy_model` writes last: how the model was made. Its presence marks a finished
# toy model (`score demo` reuses one, `score train` picks the toy task for one).
RECORD_FILE = "toy_model.json"


# ---------------------------------------------------------------------------------------------
# Tokenizer and model
# ---------------------------------------------------------------------------------------------


def build_char_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    """A character-level tokenizer with a chat template; it round-trips text exactly."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(alphabet)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["pad"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return with_chat_template(tok)


def with_chat_template(tok) -> PreTrainedTokenizerFast:
    """A `tokenizers.Tokenizer` holding SPECIAL_TOKENS, as a transformers tokenizer with the toy chat template."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        additional_special_tokens=[SPECIAL_TOKENS["user"], SPECIAL_TOKENS["assistant"]],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(
    tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, max_len: int = 2048, seed: int = 0,
    kv_heads: int | None = None, intermediate: int | None = None,
):
    """A randomly initialised Llama-architecture causal LM sized for tests and the toy world.

    `kv_heads` (grouped-query attention; default: `heads`) and `intermediate` (the MLP width;
    default 4 x `hidden`) let benchmarks give it a real model's proportions.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


# ---------------------------------------------------------------------------------------------
# Training data for the base model: imitation of the noisy solver, with second attempts that do
# not depend on whether the first was right
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyData:
    """How the base model's conversations are generated.

    A conversation is [question, y1] or, with probability `two_turn`, [question, y1, instruction,
    y2]. y1 comes from `first`. y2 is a verbatim copy of y1 with probability `copy`, otherwise an
    independent new try from `second` (opened by the line `retry_marker` when it is set, so that a
    reader, and the model, knows from y2's first token which of the two it is); neither choice looks
    at y1's correctness, so the data shows how to write a second attempt but never which first
    attempts to fix.

    With `keep_prefix` a new try keeps y1's first k column lines, k drawn uniformly from 0 (a
    fresh start) to all but the last, and redoes the remaining columns from what they wrote, as a
    person who reworks a solution from some line on; k never looks at where y1 went wrong, so
    whether to keep a line (it is right) or redo it is left for RL to learn (columns method only).

    With `max_attempts` N > 2, a conversation with a second attempt has 2 to N attempts (uniformly),
    each further attempt made from the one before it by the same rule (a copy, or a new try that
    keeps a blind prefix of its lines): the model sees later rounds of the same instruction, so that
    it can be trained and evaluated on more than two attempts (`--turns`). N = 2 draws nothing more
    (the same conversations as before the option existed).

    With `review` every attempt after the first opens with a line-by-line check of the attempt
    before it (`toy_task.review`: each column step and "ok" or "no", always right), then the new
    attempt, made exactly as without it: the base has seen its first attempt checked but never
    seen a check change what it writes next, so acting on the check is left for RL to learn.
    `review_kind` "nines" checks the stated answer by casting out nines instead (`toy_task.nines`:
    digit sums and one subtraction, cheaper than re-working each step).

    With `short_copy` a copy restates only y1's final-answer line ("The final answer is $652$."):
    keeping y1 is then a few tokens to get right instead of a whole solution to copy (two attempts
    only).

    With `copy_slip` > 0 a short copy restates y1's answer with one digit wrong at that rate (a lossy
    keep: the second attempt means to keep y1 and garbles it, whether y1 was right or not). It makes
    the second attempt worse than the first for a reason RL can remove without touching the retry
    (in the toy world's runs RL removes it by no longer keeping at all; docs/experiments.md, section
    24). The slip is drawn from `slip_rng` when given (a stream of its own, so that the conversations
    are those of the same data without the slip, apart from the slipped answers).

    With `recheck` > 0 that share of the new tries (not of the copies) goes on after its answer
    with a comparison against y1's answer (`compare_answers`): "Compare:", the two answers side by
    side, one line per digit, right to left, in the solver's own subtraction form ("7-7=0", "13-8=5": a digit of the new
    answer minus y1's, so equal digits give 0), then "same" (the attempt ends: its answer, the new
    try's, is y1's) or "differ" and a third solution by `second`, whose answer is the attempt's. A
    person who redoes a problem and gets another answer works it once more, and the third answer
    breaks the tie. What the attempt does is decided by what is written (the two answers), never by
    whether y1 is right, and a redo after a right y1 is broken only when both new solutions slip.
    Drawn from the side stream (`slip_rng`), so that y1, the copies and the first new tries are
    those of the data without it.

    With `noisy_first` that share of the conversations with a second attempt has a y1 written by
    `noisy` (a solver that slips often) and not trained on (its tokens are context, not labels):
    the second attempt, a copy or a new try drawn as always, then follows a y1 whose lines are
    mostly wrong, so that a new try learns to work the columns from the question rather than lean
    on y1's lines (the lean that makes the retry weaker after a wrong y1 than after a right one,
    docs/experiments.md section 15). Whether y2 keeps or retries still never looks at y1.

    With probability `verify` the conversation is instead [question, y1, "Is the solution above
    right?", verdict]: "yes", or "no: line k" naming y1's first wrong line. That is a judging skill
    (the paper's base models can say whether a solution is right when asked) that is never followed
    by a rewrite, so it teaches no correction either.

    The field defaults are the previous release's base (docs/experiments.md, base e18), kept so
    that the log's commands still build what they built: a solver that slips more than it drops
    carries (60% of its solutions right), half of the conversations with a second attempt, half of
    those a copy and half a new try that keeps a blind prefix of y1's lines, by a second solver that
    slips a little more. The toy world's base today is built from `DEFAULT_DATA` (below).
    """

    first: NoisySolver = NoisySolver(drop=0.1, slip=0.15)
    second: NoisySolver = NoisySolver(drop=0.1, slip=0.2)
    copy: float = 0.5
    two_turn: float = 0.5
    retry_marker: str = ""
    verify: float = 0.0
    keep_prefix: bool = True
    max_attempts: int = 2
    review: bool = False
    review_kind: str = "lines"
    short_copy: bool = False
    noisy_first: float = 0.0
    noisy: NoisySolver = NoisySolver(drop=0.1, slip=0.5)
    copy_slip: float = 0.0
    recheck: float = 0.0

    def __post_init__(self) -> None:
        if self.short_copy and self.max_attempts > 2:
            raise ValueError("short_copy works with two attempts only (max_attempts 2)")
        if self.copy_slip and not self.short_copy:
            raise ValueError("copy_slip garbles a short copy's answer: it needs short_copy")
        if not 0.0 <= self.copy_slip <= 1.0:
            raise ValueError(f"copy_slip is a probability, got {self.copy_slip}")
        if self.review_kind not in CHECKS:
            raise ValueError(f"review_kind is one of {', '.join(CHECKS)}, got {self.review_kind!r}")
        if not 0.0 <= self.recheck <= 1.0:
            raise ValueError(f"recheck is a probability, got {self.recheck}")
        if self.recheck and (self.max_attempts > 2 or self.review or self.retry_marker):
            raise ValueError("recheck works with two attempts, no review and no retry_marker")

    def conversation(self, rng: random.Random, problem: tuple[int, str, int] | None = None,
                     slip_rng: random.Random | None = None) -> dict:
        """One conversation about a random train problem, or about `problem` = (a, op, b); a short
        copy's slip (`copy_slip`) is drawn from `slip_rng` when given, else from `rng`."""
        a, op, b = problem or draw_problem(rng, "train")
        y1 = self.first.solve(a, op, b, rng)
        row = {"question": question_text(a, op, b), "answer": answer_of(a, op, b), "y1": y1, "y2": None,
               "copied": None, "verdict": None}
        if self.verify and rng.random() < self.verify:
            row["verdict"] = verdict(y1, GOLD.solve(a, op, b))
        elif rng.random() < self.two_turn:
            if self.noisy_first and rng.random() < self.noisy_first:
                row["y1"] = y1 = self.noisy.solve(a, op, b, rng)
                row["y1_trained"] = False
            row["copied"], y2, kept = self._next_attempt(y1, (a, op, b), rng)
            side = slip_rng or rng
            if row["copied"] and self.copy_slip and side.random() < self.copy_slip:
                y2 = slipped_answer(y2, side)
                row["slipped"] = True
            if not row["copied"] and self.recheck and side.random() < self.recheck:
                y2, row["rechecked"] = self._rechecked(y1, y2, (a, op, b), side)
            row["y2"] = self._with_review(y1, y2, (a, op, b))
            if kept is not None:
                row["kept"] = kept
            if self.max_attempts > 2:
                row["more"], last = [], y2
                for _ in range(rng.randint(2, self.max_attempts) - 2):
                    previous, last = last, self._next_attempt(last, (a, op, b), rng)[1]
                    row["more"].append(self._with_review(previous, last, (a, op, b)))
        return row

    def _rechecked(self, y1: str, retry: str, problem: tuple[int, str, int], rng: random.Random) -> tuple[str, str]:
        """(`retry` followed by its comparison with y1 and, when the answers differ, a third
        solution; "same" or "differ")."""
        block = compare_answers(stated_answer(retry), stated_answer(y1))
        if block.endswith("same"):
            return f"{retry}\n{block}", "same"
        return f"{retry}\n{block}\n{self.second.solve(*problem, rng)}", "differ"

    def _with_review(self, previous: str, attempt: str, problem: tuple[int, str, int]) -> str:
        """`attempt`, opened with the check of `previous` when `review` is on."""
        return f"{CHECKS[self.review_kind](previous, *problem)}\n{attempt}" if self.review else attempt

    def _next_attempt(self, previous: str, problem: tuple[int, str, int], rng: random.Random):
        """(copied, the next attempt, lines kept or None): a copy of `previous` with probability
        `copy`, else a new try by `second` (keeping a blind prefix of `previous`'s lines with
        `keep_prefix`)."""
        if rng.random() < self.copy:
            return True, previous.splitlines()[-1] if self.short_copy else previous, None
        kept = None
        if self.keep_prefix:
            lines = previous.removeprefix(f"{self.retry_marker}\n" if self.retry_marker else "").splitlines()[:-1]
            kept = rng.randrange(len(lines))  # the column lines, without the final-answer line
            retry = self.second.resume(*problem, lines[:kept], rng)
        else:
            retry = self.second.solve(*problem, rng)
        return False, (f"{self.retry_marker}\n{retry}" if self.retry_marker else retry), kept


def _answer_span(line: str) -> tuple[int, int]:
    """Where the answer sits in a final-answer line ("The final answer is $628$."): between its `$`s."""
    start = line.index("$") + 1
    return start, line.index("$", start)


def slipped_answer(line: str, rng: random.Random) -> str:
    """`line` (a final-answer line) with one digit of its answer replaced by another digit (never a
    leading zero), so that the answer it states is wrong."""
    digits = [i for i in range(*_answer_span(line)) if line[i].isdigit()]
    i = rng.choice(digits)
    lead = i == digits[0] and len(digits) > 1
    new = rng.choice([d for d in "0123456789" if d != line[i] and not (lead and d == "0")])
    return line[:i] + new + line[i + 1:]


def stated_answer(solution: str) -> str:
    """The answer a worked toy solution states on its last line ("The final answer is $628$.")."""
    last = solution.splitlines()[-1]
    start, end = _answer_span(last)
    return last[start:end]


def compare_answers(new: str, old: str) -> str:
    """"Compare:", the two answers side by side ("629 628": y1's restated next to the new one, so that
    the digits compared are a few characters apart, not a whole attempt), a line per digit, right to
    left, zero-padded (a digit of `new` minus `old`'s, borrowing ten when it is smaller, as the solver
    writes a column, so the result is 0 exactly when the digits are equal), then "same" or "differ"."""
    width = max(len(new), len(old))
    padded_new, padded_old = new.zfill(width), old.zfill(width)
    lines = ["Compare:", f"{new} {old}"]
    for x, y in zip(map(int, padded_new[::-1]), map(int, padded_old[::-1]), strict=True):
        top = x if x >= y else x + 10
        lines.append(f"{top}-{y}={top - y}")
    lines.append("same" if padded_new == padded_old else "differ")
    return "\n".join(lines)


VERIFY_INSTRUCTION = "Is the solution above right?"


def verdict(solution: str, gold: str) -> str:
    """"yes" when `solution` is the gold worked solution, else "no: line k" for its first wrong line."""
    wrong = first_different_line(solution, gold)
    return "yes" if wrong is None else f"no: line {wrong + 1}"


# The toy world's base data (docs/experiments.md, sections 15-17, 24 and 27, recipe "S13" with a
# lossy keep): 70% of the conversations have a second attempt; a quarter of those keep y1 as a
# one-line restatement of its answer, 15% of which get a digit wrong (`copy_slip`), the rest are a
# fresh try from scratch by a solver that slips a little less than the first (slip 0.13 against
# 0.15). The retry the base learns leans on y1 and ends about as good as a fresh first attempt; the
# garbled keeps put attempt 2 under attempt 1 (Delta -2.3 to -4.7 on the selection problems at six
# of seven seeds), as in the paper's base models, for a reason RL can remove without weakening the
# retry. Whether the second attempt keeps, garbles or retries never depends on whether y1 was right.
# `{"copy_slip": 0.2}` is the previous release's base data, `{"copy_slip": 0}` the one before.
DEFAULT_DATA = ToyData(second=NoisySolver(drop=0.1, slip=0.13), copy=0.25, two_turn=0.7, keep_prefix=False,
                       short_copy=True, copy_slip=0.15)


def toy_data(overrides: dict, base: ToyData = DEFAULT_DATA) -> ToyData:
    """`base` with the fields in `overrides` replaced (JSON-like: solvers as {"second": {"slip": 0.15}},
    over the base's solver); an unknown field or a bad value is a one-line error naming it."""
    from dataclasses import fields, replace

    names = {f.name for f in fields(ToyData)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ScoreError(f"unknown toy data field(s) {', '.join(unknown)}: choose from {', '.join(sorted(names))}")
    values = dict(overrides)
    try:
        for key in ("first", "second", "noisy"):
            if key in values:
                if not isinstance(values[key], dict):
                    raise TypeError(f"{key} must be an object like {{\"drop\": 0.1, \"slip\": 0.15}}")
                values[key] = replace(getattr(base, key), **values[key])
        return replace(base, **values)
    except (TypeError, ValueError) as e:
        raise ScoreError(f"bad toy data {json.dumps(overrides)}: {e}") from None


def toy_conversations(n: int, *, seed: int = 0, data: ToyData | None = None) -> list[dict]:
    """`n` training conversations (train-split problems only; `DEFAULT_DATA`'s unless `data`), the
    same for the same seed."""
    data = data or DEFAULT_DATA
    rng, slip_rng = data_streams("toy-data", seed)
    return [data.conversation(rng, slip_rng=slip_rng) for _ in range(n)]


def data_streams(name: str, seed: int) -> tuple[random.Random, random.Random]:
    """The main and the side random stream of a run of conversations (`ToyData.conversation`'s rng
    and slip_rng): the side one draws only what later options added (the lossy keep, the recheck),
    so that turning them on leaves every main-stream draw as it was."""
    return random.Random(f"{name}/{seed}"), random.Random(f"{name}-slip/{seed}")


def conversation_ids(tokenizer, row: dict, instruction: str = TOY_INSTRUCTION) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its labels (-100 except on the assistant's tokens and EOS).

    Built with the rollout's own functions, so training sees exactly the token sequence that
    evaluation and RL give the model: x1 + y1 + EOS + instruction turn + y2 + EOS (+ instruction
    turn + y3 + EOS ...).
    """
    from score_cli.rollout import end_of_turn_id, first_attempt_ids, instruction_ids

    eos = end_of_turn_id(tokenizer)
    problem = Problem(id="", question=row["question"], answer=row["answer"])
    x1 = first_attempt_ids(tokenizer, ToyTask(), problem)
    y1 = [*tokenizer(row["y1"], add_special_tokens=False)["input_ids"], eos]
    ids, labels = [*x1, *y1], [-100] * len(x1) + (y1 if row.get("y1_trained", True) else [-100] * len(y1))
    if row.get("verdict") is not None:
        p = instruction_ids(tokenizer, VERIFY_INSTRUCTION)
        answer = [*tokenizer(row["verdict"], add_special_tokens=False)["input_ids"], eos]
        ids += [*p, *answer]
        labels += [-100] * len(p) + answer
    elif row["y2"] is not None:
        p = instruction_ids(tokenizer, instruction)
        for attempt in [row["y2"], *row.get("more", [])]:  # y2, then any further attempts (max_attempts)
            y = [*tokenizer(attempt, add_special_tokens=False)["input_ids"], eos]
            ids += [*p, *y]
            labels += [-100] * len(p) + y
    return ids, labels


# ---------------------------------------------------------------------------------------------
# Training from scratch
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyTraining:
    """Model size and optimisation; training length is a fixed number of steps (deterministic).

    The field defaults are the previous release's base (docs/experiments.md, base e18): a
    1.06M-parameter Llama; 1600 steps of 16 correct single-attempt solutions, in which it learns the
    arithmetic, then 1200 steps of 16 conversations. The toy world's base is `DEFAULT_TRAINING`
    (below): the same and a 600-step tail, about 5 minutes alone on a 2-core CPU. Built on another
    machine the same recipe can land elsewhere (the record names the CPU; sections 12-13). Small
    batches and a low learning rate learn fastest here: batch 64, or lr 3e-3 and 5e-3, stayed under
    30% for the same compute.
    """

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    steps: int = 2800
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.01
    fact_steps: int = 0  # the first steps drill single-digit column facts ("8+9+1=18") only
    clean_steps: int = 1600  # then steps on single-turn correct solutions only (learn the algorithm)
    # After `steps`, this many more conversation steps at a constant `tail_lr`, with a fresh optimiser:
    # the retry is still improving when the cosine schedule ends, and a tail at a low rate brings
    # every seed tried to about the same retry (docs/experiments.md, section 16). 0: no tail.
    tail_steps: int = 0
    tail_lr: float = 1e-4


# The toy world's base training: ToyTraining's defaults and a 600-step tail at lr 1e-4, which brought
# every base seed tried to about the same retry (docs/experiments.md, sections 16-17).
DEFAULT_TRAINING = ToyTraining(tail_steps=600)


def _batches(tokenizer, data: ToyData, rng: random.Random, batch_size: int, pool: int = 8,
             slip_rng: random.Random | None = None):
    """Padded training batches, endlessly: `pool` batches' worth of conversations are sorted by
    length and cut into batches (little padding), which are then served in random order."""
    while True:
        rows = [conversation_ids(tokenizer, data.conversation(rng, slip_rng=slip_rng))
                for _ in range(batch_size * pool)]
        rows.sort(key=lambda r: len(r[0]))
        chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield _padded(tokenizer, chunk)


def _padded(tokenizer, rows: list[tuple[list[int], list[int]]]):
    """(ids, attention mask, labels) tensors of (ids, labels) rows, right-padded to the longest."""
    import torch

    width = max(len(x) for x, _ in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (x, y) in enumerate(rows):
        ids[row, : len(x)], labels[row, : len(y)] = torch.tensor(x), torch.tensor(y)
        mask[row, : len(x)] = 1
    return ids, mask, labels


def column_fact(rng: random.Random) -> str:
    """One column step as the worked solutions write it, e.g. "8+9+1=18" or "12-7-1=4"."""
    x, y, c = rng.randrange(10), rng.randrange(10), rng.randrange(2)
    if rng.random() < 0.5:
        return f"{x}+{y}" + ("+1" if c else "") + f"={x + y + c}"
    top = x + 10 if x - y - c < 0 else x
    return f"{top}-{y}" + ("-1" if c else "") + f"={top - y - c}"


def _fact_batches(tokenizer, rng: random.Random, batch_size: int, per_row: int = 8):
    """Drill batches: each row is an assistant turn of `per_row` column facts, one a line."""
    eos = tokenizer.eos_token_id
    while True:
        rows = [tokenizer("\n".join(column_fact(rng) for _ in range(per_row)), add_special_tokens=False)["input_ids"]
                + [eos] for _ in range(batch_size)]
        yield _padded(tokenizer, [(r, r) for r in rows])


def toy_optimizer(model, lr: float, weight_decay: float = 0.01):
    """The toy base's optimiser (AdamW, beta2 0.98), for its build and for any training that continues it."""
    import torch

    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)


def train_on(model, tokenizer, data: ToyData, rng: random.Random, *, steps: int, lr: float,
             weight_decay: float = 0.01, batch_size: int = 16,
             on_step: Callable[[int, float, int], None] | None = None,
             slip_rng: random.Random | None = None) -> None:
    """`steps` steps on `data`'s conversations at a constant `lr` with a fresh optimiser: the build's
    tail, and any training that continues a built base (`scripts/toy_lab.py extend`).
    `on_step(step, loss, tokens)` is called after each step."""
    opt = toy_optimizer(model, lr, weight_decay)
    batches = _batches(tokenizer, data, rng, batch_size, slip_rng=slip_rng)
    model.train()
    for step in range(1, steps + 1):
        ids, mask, labels = next(batches)
        loss = optimizer_step(model, opt, ids, mask, labels)
        if on_step is not None:
            on_step(step, loss, int(mask.sum()))


def optimizer_step(model, opt, ids, mask, labels) -> float:
    """One step of next-token loss on a padded batch, gradients clipped to norm 1; the loss before it."""
    import torch

    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def train_toy_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    training: ToyTraining | None = None,
    data: ToyData | None = None,
    log_every: int = 50,
    threads: int | None = 2,
    on_step: Callable[[int, Any], None] | None = None,
) -> Path:
    """Train the toy base model from scratch on CPU and save it like a hub model in `out_dir`.

    Deterministic under `seed` on one machine for given package versions and thread count; on
    another CPU (other vector kernels) float sums round differently and the same seed can train a
    noticeably different model (the record names the CPU, versions and threads). `threads` (intra-op
    threads while training, at most the machine's cores; None keeps torch's setting) is 2 by default:
    alone on a 2-core machine that builds a base about 30% faster than one thread (9 minutes
    instead of 13 for e18 on an earlier VM), and more threads do not pay for a model this small.
    Beside other heavy jobs use 1 (two 2-thread jobs on two cores ran up to 30 times slower). The
    record file is written last, so a directory holding it holds a complete model. `on_step(step, model)` is
    called after every optimiser step (for experiments that look at the model along the way).
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    try:
        return _train(out_dir, seed=seed, training=training, data=data, log_every=log_every, on_step=on_step)
    finally:
        torch.set_num_threads(previous)


def _train(
    out_dir: str | Path,
    *,
    seed: int,
    training: ToyTraining | None,
    data: ToyData | None,
    log_every: int,
    on_step: Callable[[int, Any], None] | None,
) -> Path:
    import torch

    from score_cli.files import atomic_write_json

    training = training or DEFAULT_TRAINING
    data = data or DEFAULT_DATA
    out = Path(out_dir)
    tokenizer = build_char_tokenizer()
    model = tiny_causal_lm(tokenizer, hidden=training.hidden, layers=training.layers, heads=training.heads,
                           max_len=1024, seed=seed)
    # Eager attention trains this small model faster on a CPU than SDPA (sequences of ~100-300
    # characters): 15-20% per step here. The saved config keeps the default (`make bench`'s model too).
    saved_attention = model.config._attn_implementation
    model.set_attn_implementation("eager")
    n_params = sum(p.numel() for p in model.parameters())
    log.info("toy model: %d parameters, %d steps of %d conversations", n_params, training.steps,
             training.batch_size)
    opt = toy_optimizer(model, training.lr, training.weight_decay)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to a tenth
        if step < training.warmup:
            return (step + 1) / training.warmup
        t = (step - training.warmup) / max(1, training.steps - training.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    main, side = data_streams("toy-data", seed)
    batches = _batches(tokenizer, data, main, training.batch_size, slip_rng=side)
    clean = _batches(tokenizer, ToyData(first=GOLD, two_turn=0.0), random.Random(f"toy-clean/{seed}"),
                     training.batch_size)
    facts = _fact_batches(tokenizer, random.Random(f"toy-facts/{seed}"), training.batch_size)
    model.train()
    t0, losses, tokens = time.perf_counter(), [], 0
    total = training.steps + training.tail_steps

    def after(step: int, loss: float, n_tokens: int) -> None:
        nonlocal tokens
        losses.append(loss)
        tokens += n_tokens
        if log_every and (step % log_every == 0 or step == total):
            recent = losses[-log_every:]
            log.info("step %d/%d  loss %.4f  %d tokens  %.0f s", step, total, sum(recent) / len(recent), tokens,
                     time.perf_counter() - t0)
        if on_step is not None:
            model.eval()
            on_step(step, model)
            model.train()

    for step in range(1, training.steps + 1):
        if step <= training.fact_steps:
            ids, mask, labels = next(facts)
        else:
            ids, mask, labels = next(clean if step <= training.fact_steps + training.clean_steps else batches)
        loss = optimizer_step(model, opt, ids, mask, labels)
        sched.step()
        after(step, loss, int(mask.sum()))
    if training.tail_steps:
        main, side = data_streams("toy-tail", seed)
        train_on(model, tokenizer, data, main, steps=training.tail_steps,
                 lr=training.tail_lr, weight_decay=training.weight_decay, batch_size=training.batch_size,
                 on_step=lambda step, loss, n: after(training.steps + step, loss, n), slip_rng=side)
    seconds = time.perf_counter() - t0
    model.eval()
    model.set_attn_implementation(saved_attention)
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD_FILE).unlink(missing_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / RECORD_FILE, {
        "what": "toy base model: trained from scratch by score_cli.toy_model.train_toy_model",
        "seed": seed,
        "parameters": n_params,
        "training": asdict(training),
        "data": asdict(data),
        "instruction": TOY_INSTRUCTION,
        "train_tokens": tokens,
        "train_seconds": round(seconds, 1),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "torch": torch.__version__,
        # reproducible for the same machine, package versions and thread count (another CPU's kernels
        # round differently, and the trajectory diverges: docs/experiments.md, section 12)
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_kernels": cpu_kernels(),
        "packages": package_versions(),
    })
    log.info("toy model saved to %s (%.0f s)", out, seconds)
    return out


def make_test_model(out_dir: str | Path, seed: int = 0) -> Path:
    """A very small toy model trained for seconds, for unit tests and fixtures: it loads like a hub
    model and writes the answer format, with mostly wrong answers."""
    small = ToyTraining(hidden=32, layers=2, heads=2, steps=150, batch_size=16, lr=1e-2, warmup=10, clean_steps=0)
    return train_toy_model(out_dir, seed=seed, training=small, data=ToyData(), log_every=0, threads=1)
