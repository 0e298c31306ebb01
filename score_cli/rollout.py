"""The multi-attempt rollout shared by evaluation and training.

Attempt 1 is generated from the task prompt. Attempt k+1's input is built by token
concatenation, never by re-rendering the conversation (a chat template may render earlier turns
differently the second time):

    x_{k+1} = x_k + y_k (+ EOS if y_k was cut off) + [user turn: instruction] + [generation prompt]

`score eval` and the trainers both call `run_attempts`; only the `Generator` differs (batched
transformers generation here, vLLM in `vllm_backend`, TRL's generation in training). With
transformers, both call `generate_batch`, which lets attempt k+1 continue attempt k's KV cache.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from score_cli.tasks import Problem, Task

if TYPE_CHECKING:  # torch is imported where a tensor is made: `score` checks its arguments without it
    import torch

# Turn index given to completion tokens that the model did not write (instruction, appended EOS).
NOT_GENERATED = -1


# ---------------------------------------------------------------------------------------------
# Token-level construction of each attempt's input
# ---------------------------------------------------------------------------------------------


def has_chat_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def task_prompt(tokenizer, task: Task, problem: Problem) -> list[dict[str, str]] | str:
    """The attempt-1 prompt: chat messages for tokenizers with a chat template, plain text otherwise."""
    return task.messages(problem) if has_chat_template(tokenizer) else task.plain_prompt(problem)


def encode_prompt(tokenizer, prompt: list[dict[str, str]] | str) -> list[int]:
    """Token ids of an attempt-1 prompt (messages get the chat template's generation prompt)."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    return _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))


def first_attempt_ids(tokenizer, task: Task, problem: Problem) -> list[int]:
    """Attempt 1's input: the task prompt in the tokenizer's chat template, or plain text."""
    return encode_prompt(tokenizer, task_prompt(tokenizer, task, problem))


def prompt_text(tokenizer, task: Task, problem: Problem) -> str:
    """Attempt 1's input as text, as the model reads it (saved with a run). A chat template that
    cannot render the prompt (e.g. one with no system role, given --system-prompt) is one line."""
    from score_cli.errors import ScoreError

    try:
        ids = first_attempt_ids(tokenizer, task, problem)
    except Exception as e:  # noqa: BLE001 - jinja's TemplateError, or whatever a template raises
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        fix = (": put that text in --prompt-template instead of --system-prompt"
               if any(m["role"] == "system" for m in task.messages(problem)) else "")
        raise ScoreError(f"the model's chat template cannot render the attempt-1 prompt ({reason}){fix}") from None
    return tokenizer.decode(ids)


def instruction_ids(tokenizer, instruction: str) -> list[int]:
    """The tokens that follow a finished attempt: a user turn holding `instruction`, then the
    generation prompt for the next assistant turn.

    With a chat template, this is the suffix of a rendered dummy conversation after the end of the
    assistant's turn (its EOS token), so it matches what the template itself would render there.
    """
    if not has_chat_template(tokenizer):
        return list(tokenizer(f"\n\n{instruction}\n\n", add_special_tokens=False)["input_ids"])
    history = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    prefix = _ids(tokenizer.apply_chat_template(history, tokenize=True, return_dict=False))
    full = _ids(
        tokenizer.apply_chat_template(
            [*history, {"role": "user", "content": instruction}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
    )
    # Cut right after the assistant's end-of-turn token: some templates add "\n" after it, and
    # that newline belongs to the instruction turn, since the model stops at the EOS.
    eos_at = [i for i, t in enumerate(prefix) if t == end_of_turn_id(tokenizer)]
    if eos_at:
        prefix = prefix[: eos_at[-1] + 1]
    if full[: len(prefix)] != prefix:
        raise ValueError("chat template renders earlier turns differently when a user turn follows")
    return full[len(prefix) :]


def _ids(x) -> list[int]:
    return list(x["input_ids"] if isinstance(x, dict) else x)


def end_of_turn_id(tokenizer) -> int:
    """The token an attempt ends with: the tokenizer's EOS (chat models set it to end-of-turn)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: set one so attempts can end")
    return int(tokenizer.eos_token_id)


def next_attempt_input(
    prev_input: Sequence[int], prev_output: Sequence[int], *, eos_id: int, instruction: Sequence[int]
) -> list[int]:
    """x_{k+1} = x_k + y_k (+ EOS where y_k was cut off) + instruction turn."""
    closed = list(prev_output) if prev_output and prev_output[-1] == eos_id else [*prev_output, eos_id]
    return [*prev_input, *closed, *instruction]


# ---------------------------------------------------------------------------------------------
# Running the attempts
# ---------------------------------------------------------------------------------------------


class Generator(Protocol):
    """Generates one completion per input; `group_size` consecutive inputs share a prompt."""

    def __call__(
        self, inputs: list[list[int]], *, group_size: int = 1
    ) -> tuple[list[list[int]], list[list[float]] | None]: ...


@dataclass
class Rollout:
    """All attempts at one problem: `inputs[k]` was given to the model, `outputs[k]` came back."""

    inputs: list[list[int]] = field(default_factory=list)
    outputs: list[list[int]] = field(default_factory=list)
    logprobs: list[list[float]] | None = None

    def completion(self, eos_id: int, instruction: Sequence[int]) -> tuple[list[int], list[int], list[float]]:
        """The whole rollout after the prompt as one sequence for training: y1 (+EOS) + p + y2 ...

        Returns the token ids, each token's attempt index (0, 1, ...; NOT_GENERATED for the
        instruction and for EOS tokens that were appended, not sampled) and the sampling
        log-probs (0.0 where not generated, or where the generator reported none).
        """
        ids: list[int] = []
        turn: list[int] = []
        logps: list[float] = []
        last = len(self.outputs) - 1
        for k, out in enumerate(self.outputs):
            lp = self.logprobs[k] if self.logprobs is not None else [0.0] * len(out)
            ids += out
            turn += [k] * len(out)
            logps += list(lp)
            if k < last:
                if not out or out[-1] != eos_id:
                    ids.append(eos_id)
                    turn.append(NOT_GENERATED)
                    logps.append(0.0)
                ids += instruction
                turn += [NOT_GENERATED] * len(instruction)
                logps += [0.0] * len(instruction)
        return ids, turn, logps


def run_attempts(
    generate: Generator,
    first_inputs: Sequence[Sequence[int]],
    *,
    turns: int,
    instruction: Sequence[int],
    eos_id: int,
    group_size: int = 1,
) -> list[Rollout]:
    """Generate `turns` attempts for each input; attempt k+1 sees attempts 1..k and the instruction.

    A generator with a `wave_size` gets the inputs in waves of that many, longest first, each wave
    through all its attempts before the next: it can keep a wave's KV cache from one attempt to the
    next (`HFGenerator` does) without holding the cache of every input at once.
    """
    if turns < 1:
        raise ValueError("turns must be at least 1")
    rollouts = [Rollout(inputs=[list(x)]) for x in first_inputs]
    order = list(range(len(rollouts)))
    wave = getattr(generate, "wave_size", None) or len(order) or 1
    if wave < len(order):
        order.sort(key=lambda i: -len(rollouts[i].inputs[0]))
    for start in range(0, len(order), wave):
        _attempts(generate, [rollouts[i] for i in order[start : start + wave]], turns=turns,
                  instruction=instruction, eos_id=eos_id, group_size=group_size)
    return rollouts


def _attempts(generate: Generator, rollouts: list[Rollout], *, turns: int, instruction: Sequence[int], eos_id: int,
              group_size: int) -> None:
    """All attempts of some rollouts, one generator call per attempt."""
    track_logprobs = True
    for k in range(turns):
        inputs = [r.inputs[k] for r in rollouts]
        outputs, logprobs = generate(inputs, group_size=group_size if k == 0 else 1)
        track_logprobs = track_logprobs and logprobs is not None
        for i, r in enumerate(rollouts):
            r.outputs.append(list(outputs[i]))
            if track_logprobs:
                r.logprobs = (r.logprobs or []) + [list(logprobs[i])]
            if k + 1 < turns:
                r.inputs.append(next_attempt_input(r.inputs[k], outputs[i], eos_id=eos_id, instruction=instruction))
    if not track_logprobs:
        for r in rollouts:
            r.logprobs = None


# ---------------------------------------------------------------------------------------------
# Batched transformers generation (evaluation)
# ---------------------------------------------------------------------------------------------


@dataclass
class Decoding:
    """Decoding settings; greedy (temperature 0) by default, as in the paper's evaluation."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 32
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token rows, left-padded to the longest."""
    import torch

    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(list(r))
            mask[i, width - len(r) :] = 1
    return ids, mask


@dataclass
class Continuation:
    """What one batched `generate` call leaves so that the next attempt need not re-read its rows.

    `rows[i]` is input i followed by its output; `sequences` holds them as generated (left padding,
    then padding after an early EOS, both masked in `mask`); `cache` is the KV cache of every column
    but the last (the last sampled token was never fed to the model).
    """

    rows: list[list[int]]
    sequences: torch.Tensor
    mask: torch.Tensor
    cache: Any

    def extends(self, inputs: Sequence[Sequence[int]]) -> bool:
        """Whether each input is its row followed by at least one new token (attempt k+1 after k)."""
        return len(inputs) == len(self.rows) and all(
            len(x) > len(r) and list(x[: len(r)]) == r for x, r in zip(inputs, self.rows, strict=True)
        )

    def release(self) -> None:
        """Drop the tensors (the KV cache above all), so they are freed whoever still holds this."""
        self.rows, self.sequences, self.mask, self.cache = [], None, None, None


def generate_batch(
    model, inputs: Sequence[Sequence[int]], *, pad_id: int, eos_ids: Sequence[int],
    previous: Continuation | None = None, keep: bool = False, **generate_kw,
) -> tuple[list[list[int]], Continuation | None]:
    """One left-padded `model.generate` call; each output is cut after its first EOS.

    Where every input extends `previous`'s row (x_{k+1} = x_k + y_k + instruction), the call reads
    only the new tokens: attempt k's KV cache holds the rest, and padding in between is masked
    (positions come from the mask, so the model sees what a fresh call would feed it). With `keep`,
    returns the `Continuation` of this call for the next attempt (None where the model's cache
    cannot be continued). A `previous` that the inputs do not extend is released first.
    """
    import torch

    device = model.device
    if previous is not None and not previous.extends(inputs):
        previous.release()  # stale: free its cache before this call allocates its own
        previous = None
    if previous is not None:
        tail, tail_mask = left_pad([x[len(r) :] for x, r in zip(inputs, previous.rows, strict=True)], pad_id)
        ids = torch.cat([previous.sequences, tail.to(device)], dim=1)
        mask = torch.cat([previous.mask, tail_mask.to(device)], dim=1)
        generate_kw[_cache_kwarg()] = previous.cache
    else:
        ids, mask = (t.to(device) for t in left_pad(inputs, pad_id))
    del previous
    if (config := generate_kw.get("generation_config")) is not None:  # one place for generation settings
        generate_kw["generation_config"] = copy.copy(config)
        generate_kw["generation_config"].return_dict_in_generate = True
    else:
        generate_kw["return_dict_in_generate"] = True
    out = model.generate(input_ids=ids, attention_mask=mask, **generate_kw)
    new = out.sequences[:, ids.size(1) :]
    is_eos = torch.isin(new, torch.tensor(list(eos_ids), device=new.device))
    lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, new.size(1))
    outputs = [row[:n] for row, n in zip(new.tolist(), lengths.tolist(), strict=True)]
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if not (keep and _continuable(cache, out.sequences.size(1) - 1)):
        return outputs, None
    kept = torch.arange(new.size(1), device=new.device)[None, :] < lengths[:, None]
    return outputs, Continuation(
        rows=[[*x, *o] for x, o in zip(inputs, outputs, strict=True)],
        sequences=out.sequences, mask=torch.cat([mask, kept.to(mask.dtype)], dim=1), cache=cache,
    )


@functools.cache
def _cache_kwarg() -> str:
    """`generate`'s keyword for a KV cache to continue from (`cache` in newer transformers)."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def _continuable(cache, length: int) -> bool:
    """Only a plain dynamic cache of full attention, exactly `length` long, is extended: static caches
    have no room for more, sliding-window ones have dropped tokens."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    return (
        isinstance(cache, DynamicCache) and bool(layers)
        and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
        and cache.get_seq_length() == length
    )


class HFGenerator:
    """Left-padded batched `model.generate`, longest inputs first to waste little padding.

    `run_attempts` hands it one batch at a time (`wave_size`) through all attempts, so attempt k+1
    continues from attempt k's KV cache (`reuse_cache`) instead of re-reading x + y_k. `on_batch(
    n_sequences, n_new_tokens)` is called after every batch (for progress bars).
    """

    def __init__(self, model, tokenizer, decoding: Decoding, on_batch: Callable[[int, int], None] | None = None,
                 reuse_cache: bool = True):
        self.model = model
        self.decoding = decoding
        self.on_batch = on_batch
        self.reuse_cache = reuse_cache
        self.wave_size = decoding.batch_size if reuse_cache else None
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.generated_tokens = 0
        self.generate_seconds = 0.0
        self._last: Continuation | None = None

    def __call__(self, inputs: list[list[int]], *, group_size: int = 1):
        import torch

        d = self.decoding
        one_batch = len(inputs) <= d.batch_size  # a wave: kept in order, so the next attempt can continue it
        order = list(range(len(inputs))) if one_batch else sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
        outputs: list[list[int]] = [[] for _ in inputs]
        kw = generate_kwargs(d, self.eos_ids, self.pad_id)
        for start in range(0, len(order), d.batch_size):
            idx = order[start : start + d.batch_size]
            previous, self._last = (self._last if one_batch else None), None
            t0 = time.perf_counter()
            with torch.inference_mode():
                new, self._last = generate_batch(
                    self.model, [inputs[i] for i in idx], pad_id=self.pad_id, eos_ids=self.eos_ids,
                    previous=previous, keep=self.reuse_cache and one_batch, **kw,
                )
            del previous
            self.generate_seconds += time.perf_counter() - t0
            for i, o in zip(idx, new, strict=True):
                outputs[i] = o
            n_tokens = sum(len(o) for o in new)
            self.generated_tokens += n_tokens
            if self.on_batch is not None:
                self.on_batch(len(idx), n_tokens)
        return outputs, None


def generate_kwargs(d: Decoding, eos_ids: list[int], pad_id: int) -> dict[str, Any]:
    """The `model.generate` keyword arguments for a `Decoding` (shared with the throughput bench)."""
    kw: dict[str, Any] = {"max_new_tokens": d.max_new_tokens, "eos_token_id": eos_ids, "pad_token_id": pad_id}
    if d.greedy:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kw.update(do_sample=True, temperature=d.temperature, top_p=d.top_p, top_k=0)
    return kw


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [end_of_turn_id(tokenizer)]
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for t in extra if isinstance(extra, list) else [extra]:
        if t is not None and t not in ids:
            ids.append(int(t))
    return ids
