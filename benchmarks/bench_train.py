"""Training step time: a SCoRe two-attempt step vs TRL's own GRPOTrainer single-attempt step.

Both trainers get the same small random model, tokenizer, prompts, batch, number of generations,
learning rate, KL coefficient, reward (the task's grader) and per-attempt length. A SCoRe step
generates two attempts one after the other, the second from the longer context x + y1 + the
instruction, and trains on x + y1 + instruction + y2; the issue's goal is at most 2.0x a
single-attempt step. Two settings:

- `math` (default): the MATH task as `score stage1 --bench math` runs it - the paper's prompt and
  self-correction instruction, CHAMP competition problems, math-verify grading - with a byte-level
  BPE tokenizer trained here, offline, on English and math text (Python's docs and CHAMP's
  solutions), so prompt (~130), instruction (90) and attempt (128) lengths in tokens are in the
  proportions of a real run with short attempts; the model has the recipes' model's proportions
  (`--shape qwen`, 512 wide: see SHAPES).
- `toy`: the toy world's character-level tokenizer, short questions (~12 tokens) and a 68-token
  instruction, twice an attempt of 32, on a 128-wide model (`--shape tiny`): a worst case.

The time per token trained is reported too.

`--turns N` (N > 2) adds a third trainer to the alternation: a SCoRe step with N attempts, each
continuing the previous one's KV cache. Its cost per *generated* token (step time over the attempt
tokens generated in the step, read from the `length/tK` logs) is compared with the two-attempt
step's: the goal is at most 1.10 (the later attempts' longer context costs little with the cache).

The trainers alternate for `--rounds` rounds and each keeps its best round, so warm-up and load
drift favour neither. A round's figure is the mean step time over its steps after a warm-up step:
both trainers draw the same prompts at the same step (same seed and dataset order), and prompts of
different lengths make some steps slower than others, so the mean compares the same work where a
median could pick different steps on each side. Process CPU time is reported beside wall-clock
time: on a shared VM it is less disturbed by other tenants.

    python benchmarks/bench_train.py [--setting math|toy] [--shape qwen|tiny] [--rounds 3] [--turns 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

# glibc's malloc hands freed memory back to the OS at once; on a VM that reclaims memory, each
# step's large allocations then page-fault again (seconds of system time, step times varying 2x).
# Keep freed memory mapped, for both trainers alike; `main` re-executes itself with these set.
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36), "MALLOC_TOP_PAD_": str(2**30),
}


class StepTimer(TrainerCallback):
    """Wall-clock and process CPU seconds of each training step."""

    def __init__(self):
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)
        self.cpu_times.append(time.process_time() - self._c0)


def subword_tokenizer(vocab_size: int = 8192):
    """A byte-level BPE tokenizer with the toy chat template, trained offline in a few seconds.

    Corpus: the English of Python's own documentation (`pydoc_data`, shipped with CPython) and
    CHAMP's problems and solutions. The paper's MATH instruction comes out at 90 tokens (about 1.5
    per word) and a prompt at about 130, where a character-level tokenizer gives one per character.
    """
    import pydoc_data.topics

    import champ_dataset
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from score_cli.toy_model import SPECIAL_TOKENS, with_chat_template

    texts = list(pydoc_data.topics.topics.values())
    for p in champ_dataset.load("v0").problems.values():
        texts += [p.text, *(step.text for step in (p.solution.steps if p.solution else []))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return with_chat_template(tok)


# Model proportions. What sets a second attempt's extra cost is attention over the longer context
# beside the rest of the per-token work, so the shape matters, not only the size:
# - qwen: Qwen2.5-Math-1.5B's (the recipes' model: 12 heads of 128, 2 KV heads, MLP 5.83x the
#   width) at width 512: heads of 64, 4 query heads per KV head, MLP 5.83x.
# - tiny: a 128-wide model without grouped-query attention and a 4x MLP, where attention over a
#   few hundred tokens is a far larger share of the work than in any released model.
SHAPES = {
    "qwen": {"hidden": 512, "head_dim": 64, "queries_per_kv_head": 4, "mlp_ratio": 8960 / 1536},
    "tiny": {"hidden": 128, "head_dim": 32, "queries_per_kv_head": 1, "mlp_ratio": 4.0},
}


def model_shape(name: str, hidden: int | None = None) -> dict[str, int]:
    """`tiny_causal_lm` keyword arguments of a shape, at its own width or at `hidden`."""
    s = SHAPES[name]
    width = hidden or s["hidden"]
    heads = max(1, width // s["head_dim"])
    return {"hidden": width, "heads": heads, "kv_heads": max(1, heads // s["queries_per_kv_head"]),
            "intermediate": round(width * s["mlp_ratio"])}


def setting(name: str):
    """(tokenizer, task, problems) of a bench setting."""
    from score_cli.tasks.math_task import MathTask, champ_problems
    from score_cli.tasks.toy_task import ToyTask, toy_problems
    from score_cli.toy_model import build_char_tokenizer

    if name == "math":
        return subword_tokenizer(), MathTask(), champ_problems()
    return build_char_tokenizer(), ToyTask(), toy_problems("train", n=256)


def measured(timer: StepTimer, trainer) -> tuple[float, float, float, list[float], float]:
    """(mean wall s, mean CPU s, tokens, wall s of each step, generated tokens) per step of one
    round; the first step warms up. Generated tokens: every attempt's, from the `length/tK` logs."""
    logs = [h for h in trainer.state.log_history if "length/t1" in h][1:]
    generated = statistics.fmean(
        sum(v for k, v in h.items() if k.startswith("length/t")) * trainer.args.per_device_train_batch_size
        for h in logs
    ) if logs else float("nan")
    return (statistics.fmean(timer.times[1:]), statistics.fmean(timer.cpu_times[1:]),
            trainer.state.num_input_tokens_seen / trainer.state.global_step, [round(t, 2) for t in timer.times],
            generated)


def mean_tokens(rows: list[list[int]]) -> float:
    return round(sum(len(r) for r in rows) / len(rows), 1)


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from score_cli.rollout import first_attempt_ids, instruction_ids
    from score_cli.toy_model import tiny_causal_lm
    from score_cli.trainers import SCoReConfig, SCoReTrainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=("math", "toy"), default="math")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round, after a warm-up step; "
                    "default 3 (math), 6 (toy)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="per attempt; default 128 (math), 32 (toy)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None,
                    help="the model's proportions; default qwen (math), tiny (toy)")
    ap.add_argument("--hidden", type=int, default=None, help="width; default the shape's")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--no-cache-reuse", action="store_true",
                    help="attempt 2 re-reads x + y1 + instruction instead of continuing attempt 1's KV cache")
    ap.add_argument("--turns", type=int, default=2,
                    help="also time a SCoRe step with this many attempts (> 2) beside the two-attempt one")
    ap.add_argument("--out", type=str, default=None)
    args = ap.parse_args(argv)
    max_new = args.max_new_tokens or (128 if args.setting == "math" else 32)
    steps = args.steps or (3 if args.setting == "math" else 6)
    shape_name = args.shape or ("qwen" if args.setting == "math" else "tiny")
    shape = model_shape(shape_name, args.hidden)

    tok, task, problems = setting(args.setting)
    firsts = [first_attempt_ids(tok, task, p) for p in problems]
    instruction = instruction_ids(tok, task.instruction)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_causal_lm(tok, layers=args.layers, max_len=4096, **shape)
        n_params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        common = dict(
            per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
            max_steps=steps + 1, learning_rate=1e-5, report_to="none", save_strategy="no", logging_steps=1,
            use_cpu=not cuda, bf16=cuda, seed=0, disable_tqdm=True, log_level="warning",
        )
        by_id = {p.id: p for p in problems}

        def reward(completions, problem_id, **_):  # the task's own grader, as SCoRe's rewards
            texts = [c[0]["content"] for c in completions]
            return [float(g.correct) for g in task.grade([by_id[i] for i in problem_id], texts)]

        ds = Dataset.from_list([{"prompt": task.messages(p), "problem_id": p.id} for p in problems])

        def timed_round(make_trainer) -> tuple[float, float, float, list[float], float]:
            timer = StepTimer()
            trainer = make_trainer(timer)
            trainer.train()
            return measured(timer, trainer)

        def grpo(i: int, timer: StepTimer) -> GRPOTrainer:
            return GRPOTrainer(
                model=tmp, reward_funcs=[reward], train_dataset=ds, processing_class=tok, callbacks=[timer],
                args=GRPOConfig(output_dir=str(Path(tmp) / f"g{i}"), max_completion_length=max_new, beta=0.01,
                                scale_rewards="none", gradient_checkpointing=False, **common),
            )

        def score(i: int, timer: StepTimer, turns: int = 2) -> SCoReTrainer:
            return SCoReTrainer(
                tmp, SCoReConfig(output_dir=str(Path(tmp) / f"s{turns}-{i}"), max_attempt_length=max_new, stage=1,
                                 ref_model=tmp, gradient_checkpointing=False, turns=turns,
                                 reuse_attempt_cache=not args.no_cache_reuse, **common),
                task, problems, processing_class=tok, callbacks=[timer],
            )

        grpo_runs, score_runs, more_runs = [], [], []
        for i in range(args.rounds):
            grpo_runs.append(timed_round(functools.partial(grpo, i)))
            score_runs.append(timed_round(functools.partial(score, i)))
            more = ""
            if args.turns > 2:
                more_runs.append(timed_round(functools.partial(score, i, turns=args.turns)))
                more = f", score with {args.turns} attempts {more_runs[-1][0]:.3f} s"
            print(f"round {i + 1}: grpo {grpo_runs[-1][0]:.3f} s, score {score_runs[-1][0]:.3f} s{more}", flush=True)
    g, _, g_tokens, _, _ = min(grpo_runs)  # the round with the best wall-clock mean
    s, _, s_tokens, _, s_generated = min(score_runs)

    results = {
        "bench": "train_step",
        "setting": args.setting,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "tokenizer": f"{'byte-level BPE' if args.setting == 'math' else 'character-level'}, {len(tok)} tokens",
        "model": {"shape": shape_name, "layers": args.layers, **shape, "parameters": n_params},
        "sequences_per_step": args.prompts * args.generations,
        "prompt_tokens_mean": mean_tokens(firsts),
        "instruction_tokens": len(instruction),
        "max_new_tokens_per_attempt": max_new,
        "rounds": args.rounds,
        "timed_steps_per_round": steps,
        "grpo_single_attempt_step_s": round(g, 3),
        "score_two_attempt_step_s": round(s, 3),
        "ratio": round(s / g, 3),
        "goal": "<= 2.0",
        "score_reuses_attempt_cache": not args.no_cache_reuse,
        "grpo_rounds_s": [round(r[0], 3) for r in grpo_runs],
        "score_rounds_s": [round(r[0], 3) for r in score_runs],
        "step_s_warmup_first": {"grpo": [r[3] for r in grpo_runs], "score": [r[3] for r in score_runs]},
        "ratio_cpu_time": round(min(r[1] for r in score_runs) / min(r[1] for r in grpo_runs), 3),
        "grpo_tokens_per_step": round(g_tokens),
        "score_tokens_per_step": round(s_tokens),
        "ratio_per_token": round((s / s_tokens) / (g / g_tokens), 3),
        "score_generated_tokens_per_step": round(s_generated),
        "score_s_per_1k_generated_tokens": round(1000 * s / s_generated, 3),
    }
    if more_runs:
        n, (m, _, m_tokens, _, m_generated) = args.turns, min(more_runs)
        results.update({
            f"score_{n}_attempt_step_s": round(m, 3),
            f"score_{n}_attempt_rounds_s": [round(r[0], 3) for r in more_runs],
            f"score_{n}_attempt_tokens_per_step": round(m_tokens),
            f"score_{n}_attempt_generated_tokens_per_step": round(m_generated),
            f"score_{n}_attempt_s_per_1k_generated_tokens": round(1000 * m / m_generated, 3),
            "ratio_per_generated_token_vs_two_attempts": round((m / m_generated) / (s / s_generated), 3),
            "goal_per_generated_token_vs_two_attempts": "<= 1.10",
        })
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    main(sys.argv[1:])
