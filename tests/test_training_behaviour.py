"""Training changes behaviour the way the objective says: the rewarded attempt's reward rises."""

from __future__ import annotations

import statistics

import torch
from transformers import AutoTokenizer

from score_cli.tasks import Grade, Problem, Task
from score_cli.trainers import SCoReConfig, SCoReTrainer


class StartsWithDigit(Task):
    """Reward 1 when the attempt starts with a digit: rare (~10%) for a random model, easy to learn."""

    name = "digit"
    instruction = "Again."

    def grade(self, problems, outputs):
        return [Grade(o[:1], o[:1].isdigit()) for o in outputs]


def train(model_dir, tmp_path, **overrides):
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    problems = [Problem(str(i), f"Q{i}:", "0") for i in range(64)]
    cfg = SCoReConfig(output_dir=str(tmp_path / "o"), ref_model=str(model_dir), num_generations=4,
                      per_device_train_batch_size=32, max_attempt_length=3, learning_rate=3e-2, max_steps=30,
                      logging_steps=1, report_to="none", save_strategy="no", seed=0, **overrides)
    torch.manual_seed(0)
    trainer = SCoReTrainer(str(model_dir), cfg, StartsWithDigit(), problems, processing_class=tok)
    trainer.train()
    return [h for h in trainer.state.log_history if "reward/t2" in h]


def early_late(history, key, n=6):
    values = [h[key] for h in history]
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def test_stage1_raises_the_attempt_two_reward(tiny_model_dir, tmp_path):
    history = train(tiny_model_dir, tmp_path, stage=1, beta2=0.1)
    before, after = early_late(history, "reward/t2")
    assert after > before + 0.2, (before, after)
    assert all(h["kl/t1"] >= 0 and h["kl/t2"] >= 0 for h in history)


def test_single_turn_rl_raises_the_attempt_one_reward(tiny_model_dir, tmp_path):
    history = train(tiny_model_dir, tmp_path, stage=2, single_turn=True)
    before, after = early_late(history, "reward/t1")
    assert after > before + 0.2, (before, after)


def test_stage1_with_three_attempts_raises_the_last_attempt_reward(tiny_model_dir, tmp_path):
    history = train(tiny_model_dir, tmp_path, stage=1, beta2=0.1, turns=3)
    before, after = early_late(history, "reward/t3")
    assert after > before + 0.2, (before, after)
    assert all(h["kl/t3"] >= 0 and "delta/t2t3" in h for h in history)
