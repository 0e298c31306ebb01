"""Training step time: a SCoRe two-attempt step vs TRL's own GRPOTrainer single-attempt step.

Same model, prompts, batch, number of generations, learning rate and per-attempt length; a random
tiny model rarely emits EOS, so both generate their full lengths. A SCoRe step generates and trains
on two attempts (plus the instruction between them), so about 2x is the natural cost; the goal is
at most 2.0x. The toy's character-level tokenizer makes the instruction as long as an attempt, so
the time per token (prompt + completion tokens each step processes) is reported too.

    python benchmarks/bench_train.py [--steps 6] [--max-new-tokens 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)


def main(argv: list[str] | None = None) -> dict:
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from score_cli.tasks import Grade, Problem, Task
    from score_cli.toy import build_char_tokenizer, tiny_causal_lm
    from score_cli.trainers import SCoReConfig, SCoReTrainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--out", type=str, default=None)
    args = ap.parse_args(argv)

    class Toyish(Task):
        name = "bench"
        instruction = "There might be an error in the solution above. Please correct it."

        def grade(self, problems, outputs):
            return [Grade(o[:1], o[:1] == p.answer) for p, o in zip(problems, outputs, strict=True)]

    task = Toyish()
    problems = [Problem(str(i), f"What is {i} + {i + 3}? Think step by step.", str(2 * i + 3)) for i in range(256)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_char_tokenizer()
        tiny_causal_lm(tok, hidden=args.hidden, layers=args.layers, heads=4).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        common = dict(
            per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
            max_steps=args.steps + 1, learning_rate=1e-5, report_to="none", save_strategy="no", logging_steps=1,
            use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(), seed=0, disable_tqdm=True,
        )
        timer_grpo, timer_score = StepTimer(), StepTimer()

        def reward(completions, answer, **_):
            return [float(c[:1] == a) for c, a in zip(completions, answer, strict=True)]

        ds = Dataset.from_list([{"prompt": task.messages(p), "answer": p.answer} for p in problems])
        grpo = GRPOTrainer(
            model=tmp, reward_funcs=[reward], train_dataset=ds, processing_class=tok, callbacks=[timer_grpo],
            args=GRPOConfig(output_dir=str(Path(tmp) / "g"), max_completion_length=args.max_new_tokens, beta=0.01,
                            scale_rewards="none", gradient_checkpointing=False, **common),
        )
        grpo.train()
        grpo_tokens = grpo.state.num_input_tokens_seen / grpo.state.global_step
        score = SCoReTrainer(
            tmp, SCoReConfig(output_dir=str(Path(tmp) / "s"), max_attempt_length=args.max_new_tokens, stage=1,
                             ref_model=tmp, gradient_checkpointing=False, **common),
            task, problems, processing_class=tok, callbacks=[timer_score],
        )
        score.train()
        score_tokens = score.state.num_input_tokens_seen / score.state.global_step

    g = statistics.median(timer_grpo.times[1:])  # the first step warms up
    s = statistics.median(timer_score.times[1:])
    results = {
        "bench": "train_step",
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "sequences_per_step": args.prompts * args.generations,
        "max_new_tokens_per_attempt": args.max_new_tokens,
        "grpo_single_attempt_step_s": round(g, 3),
        "score_two_attempt_step_s": round(s, 3),
        "ratio": round(s / g, 3),
        "goal": "<= 2.0",
        "grpo_tokens_per_step": round(grpo_tokens),
        "score_tokens_per_step": round(score_tokens),
        "ratio_per_token": round((s / score_tokens) / (g / grpo_tokens), 3),
    }
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
