"""The paper's optional training settings: base-model first attempts mixed into Stage II
(`base_attempt_share`) and keeping the checkpoint with the best held-out criterion (`select_checkpoint`)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from score_cli.rollout import NOT_GENERATED, generate_batch
from score_cli.tasks import Problem
from score_cli.trainers import BASE_ATTEMPT, HELDOUT_FILE, SCoReConfig, SCoReTrainer, heldout_split
from tests.test_train_cli import data_file, invoke, one_line_error  # noqa: F401 (data_file is a fixture)
from tests.test_trainer_objective import INSTR, QUESTIONS, ExactTask, make_trainer, perturbed_copy, rloo

BASE_SCRIPT = {q: ["7", "no"] for q in QUESTIONS}  # the base model's attempt 1 is right on every question


# ---------------------------------------------------------------------------------------------
# Options and their one-line errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stage": 2, "base_attempt_share": 1.5}, "base_attempt_share must be in [0, 1]"),
    ({"stage": 2, "base_attempt_share": -0.1}, "base_attempt_share must be in [0, 1]"),
    ({"stage": 2, "use_vllm": True, "base_attempt_share": 0.5}, "not supported with use_vllm"),
    ({"select_checkpoint": "best"}, "select_checkpoint must be one of"),
    ({"select_checkpoint": "delta", "heldout_problems": 0}, "needs held-out problems"),
    ({"heldout_problems": -1}, "heldout_problems must be >= 0"),
    ({"select_checkpoint": "reward", "save_strategy": "no"}, "set save_strategy to steps"),
    ({"stage": 2, "single_turn": True, "select_checkpoint": "delta"}, "use reward or last"),
    ({"turns": 1}, "turns must be at least 2"),
    ({"stage": 2, "single_turn": True, "turns": 3}, "single_turn trains one attempt"),
])
def test_bad_values_are_refused_in_one_line(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as e:
        SCoReConfig(output_dir=str(tmp_path), report_to="none", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs", [{"stage": 1}, {"stage": 2, "single_turn": True}], ids=["stage1", "single-turn"])
def test_base_attempt_share_is_a_stage2_setting_one_recipe_carries(tmp_path, kwargs, caplog):
    """Like alpha, it is read by Stage II (not single-turn) only; elsewhere it is not used, and says so."""
    cfg = SCoReConfig(output_dir=str(tmp_path), report_to="none", base_attempt_share=0.5, **kwargs)
    assert cfg.base_attempt_share == 0.0 and "base_attempt_share 0.5 is not used" in caplog.text
    stage2 = SCoReConfig(output_dir=str(tmp_path), report_to="none", stage=2, base_attempt_share=0.5)
    assert stage2.base_attempt_share == 0.5


def test_defaults_and_options(tmp_path):
    from score_cli.config_options import live_field_specs

    assert SCoReConfig(output_dir=str(tmp_path), report_to="none").heldout_problems == 0
    cfg = SCoReConfig(output_dir=str(tmp_path), report_to="none", select_checkpoint="delta")
    assert cfg.heldout_problems == 64
    specs = {s.name: s for s in live_field_specs()}  # the CLI options (their cache is keyed by trainers.py)
    assert specs["base_attempt_share"].kind == "float" and specs["base_attempt_share"].default == "0.0"
    assert specs["select_checkpoint"].kind == "str" and specs["select_checkpoint"].default == "last"
    assert specs["heldout_problems"].kind == "int"


def test_heldout_split_is_deterministic_and_order_free():
    problems = [Problem(f"p{i}", f"Q{i}", "1") for i in range(20)]
    train, held = heldout_split(problems, 5, seed=42)
    assert len(held) == 5 and len(train) == 15 and not {p.id for p in train} & {p.id for p in held}
    assert heldout_split(list(reversed(problems)), 5, seed=42)[1] == list(reversed(held))  # same problems
    assert {p.id for p in heldout_split(problems, 5, seed=7)[1]} != {p.id for p in held}
    with pytest.raises(ValueError, match="leaves no training problems"):
        heldout_split(problems, 20, seed=42)


def test_cli_errors(tmp_path, tiny_model_dir, data_file):  # noqa: F811
    out = ["--output-dir", tmp_path / "o"]
    one_line_error(invoke("stage2", "--model", tiny_model_dir, "--data", data_file, "--base-attempt-share", 2, *out),
                   "base_attempt_share must be in [0, 1]")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--select-checkpoint", "delta",
                          "--heldout-problems", 12, *out), "leaves no training problems")


# ---------------------------------------------------------------------------------------------
# Base-model first attempts in Stage II
# ---------------------------------------------------------------------------------------------
def mixed_batch(tiny_model_dir, tmp_path, scripted, share=0.5):
    policy = perturbed_copy(tiny_model_dir, tmp_path / "policy")
    trainer, tok = make_trainer(policy, tiny_model_dir, 2, tmp_path, scripted, alpha=10.0, base_attempt_share=share)
    base = scripted(tok, BASE_SCRIPT, INSTR)
    trainer._generate_base = lambda inputs: base(inputs)[0] if inputs else []
    trainer.model.train()
    rows = [{"prompt": q, "problem_id": str(i)} for i, q in enumerate(QUESTIONS) for _ in range(2)]
    return trainer, tok, rows, trainer._generate_and_score_completions(rows)


def test_base_first_attempts_are_whole_groups_out_of_the_loss(tiny_model_dir, tmp_path, scripted):
    trainer, tok, rows, batch = mixed_batch(tiny_model_dir, tmp_path, scripted)
    turn = batch["turn"].tolist()
    from_base = [BASE_ATTEMPT in t for t in turn]
    assert sum(from_base) == 4  # share 0.5 of 4 groups of 2 -> 2 groups
    assert all(from_base[2 * g] == from_base[2 * g + 1] for g in range(4))  # whole groups
    assert trainer._metrics["train"]["base_attempts"][-1] == 0.5

    # the base model's y1 is in the context and graded; attempt 2 (the policy's) follows it
    texts = tok.batch_decode(batch["completion_ids"], skip_special_tokens=True)
    r1 = []
    for b, row in enumerate(rows):
        y1 = BASE_SCRIPT[row["prompt"]][0] if from_base[b] else QUESTIONS[row["prompt"]][0]
        assert texts[b].startswith(y1) and texts[b].endswith(QUESTIONS[row["prompt"]][1])
        r1.append(float(y1 == "7"))
    r2 = [float(QUESTIONS[r["prompt"]][1] == "7") for r in rows]
    assert trainer._attempt_rewards[:, 0].tolist() == r1

    # advantages: attempt 2's return uses r(y1) of the base's y1; the base's y1 has none and no KL
    A1 = [0.0 if from_base[b] else a for b, a in enumerate(rloo(r1, 2))]
    A2 = rloo([b + 10 * (b - a) for a, b in zip(r1, r2, strict=True)], 2)
    mask = (batch["completion_mask"] * batch["tool_mask"]).tolist()
    for b in range(8):
        for t, k in enumerate(turn[b]):
            assert batch["advantages"][b, t].item() == pytest.approx({0: A1[b], 1: A2[b]}.get(k, 0.0), abs=1e-6)
            if k == BASE_ATTEMPT:
                assert mask[b][t] == 0 and batch["kl_coef"][b, t].item() == 0.0
            else:
                assert mask[b][t] == int(k != NOT_GENERATED)
        assert (0 in turn[b]) != from_base[b] and 1 in turn[b]

    # zero weight in the loss: no gradient reaches the base's y1 tokens, and their reference
    # log-probs do not change the loss
    trainer.model.eval()
    leaf = torch.zeros(batch["completion_ids"].shape, requires_grad=True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (leaf - 0.5, None, None)
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    is_base = batch["turn"] == BASE_ATTEMPT
    assert is_base.any() and (leaf.grad[is_base] == 0).all()
    assert (leaf.grad[batch["turn"] == 0] != 0).any() and (leaf.grad[batch["turn"] == 1] != 0).all()
    moved = dict(batch, ref_per_token_logps=batch["ref_per_token_logps"] + 3.0 * is_base)
    assert trainer._compute_loss(trainer.model, moved).item() == pytest.approx(loss.item(), abs=1e-7)


def test_base_groups_are_reproducible(tiny_model_dir, tmp_path, scripted):
    trainer, _ = make_trainer(tiny_model_dir, tiny_model_dir, 2, tmp_path, scripted, base_attempt_share=0.3)
    draws = []
    for _ in range(2):
        trainer._base_draw = (-1, 0)
        draws.append([trainer._base_attempt_rows(8, 2) for _ in range(20)])
    assert draws[0] == draws[1]  # seed, step and draw number fix the choice
    counts = {sum(rows) // 2 for rows in draws[0]}
    assert counts <= {1, 2} and len(counts) == 2  # 0.3 * 4 = 1.2 groups: 1 or 2, rounded stochastically
    trainer.state.global_step = 5
    assert [trainer._base_attempt_rows(8, 2) for _ in range(20)] != draws[0]


@pytest.mark.parametrize("lora", [False, True])
def test_base_first_attempt_is_generated_by_the_base_model(tiny_model_dir, tmp_path, lora):
    """`_generate_base` samples from the KL reference: `ref_model`, or the policy with its LoRA adapter off."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    policy = tiny_model_dir if lora else perturbed_copy(tiny_model_dir, tmp_path / "policy", scale=0.5)
    cfg = SCoReConfig(output_dir=str(tmp_path / "o"), stage=2, ref_model=str(tiny_model_dir), num_generations=2,
                      per_device_train_batch_size=8, max_attempt_length=6, report_to="none", save_strategy="no",
                      base_attempt_share=0.5, lora_r=4 if lora else 0)
    problems = [Problem(str(i), q, "7") for i, q in enumerate(QUESTIONS)]
    trainer = SCoReTrainer(str(policy), cfg, ExactTask(), problems, processing_class=tok)
    if lora:
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
    trainer.generation_config.do_sample = False  # greedy, to compare with the models themselves
    inputs = [tok(q, add_special_tokens=False)["input_ids"] for q in QUESTIONS]
    kw = {"pad_id": tok.pad_token_id, "eos_ids": trainer.eos_token_ids, "generation_config": trainer.generation_config}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        want = generate_batch(base, inputs, **kw)[0]
        policy_out = generate_batch(trainer.model.eval(), inputs, **kw)[0]
    assert trainer._generate_base(inputs) == want
    assert policy_out != want
    assert trainer._generate_base([]) == []


def test_stage2_trains_with_base_first_attempts_and_selects(tiny_model_dir, tmp_path):
    """End to end with transformers generation (attempt 1 mixed, attempt 2 re-reads x + y1), and
    a real held-out evaluation at each save."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    cfg = SCoReConfig(output_dir=str(tmp_path / "o"), stage=2, ref_model=str(tiny_model_dir), num_generations=2,
                      per_device_train_batch_size=8, max_attempt_length=4, report_to="none", save_steps=1,
                      max_steps=2, logging_steps=1, base_attempt_share=0.5, learning_rate=1e-3,
                      select_checkpoint="reward", heldout_problems=2)
    problems = [Problem(str(i), f"Q{i}?", "7") for i in range(6)]
    trainer = SCoReTrainer(str(tiny_model_dir), cfg, ExactTask(), problems, processing_class=tok)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "base_attempts" in h]
    assert [h["base_attempts"] for h in logged] == [0.5, 0.5]
    heldout = [h for h in trainer.state.log_history if "heldout/reward" in h]
    assert [h["step"] for h in heldout] == [1, 2] and all(h["heldout/reward"] == 0.0 for h in heldout)
    assert trainer.state.best_global_step == 2  # a tie (nothing is right): the later


def test_heldout_evaluation_by_hand(tiny_model_dir, tmp_path, scripted):
    trainer, _ = make_trainer(tiny_model_dir, tiny_model_dir, 2, tmp_path, scripted, heldout_problems=2)
    assert len(trainer.heldout) == 2 and len(trainer.train_dataset) == 2
    gen = scripted(trainer.processing_class, QUESTIONS, INSTR)
    trainer._generate_single_turn = lambda ids, images, mm, n, **_: gen(ids)
    trainer.model.train()
    rng = torch.get_rng_state()
    values = trainer.evaluate_heldout()
    assert trainer.model.training and torch.equal(torch.get_rng_state(), rng)  # training's RNG stream untouched
    held = [p.question for p in trainer.heldout]
    assert gen.questions_seen(0) == held and gen.questions_seen(1) == held  # one sample each, two attempts
    r1 = sum(QUESTIONS[q][0] == "7" for q in held) / 2
    r2 = sum(QUESTIONS[q][1] == "7" for q in held) / 2
    assert values == pytest.approx({"reward_t1": r1, "reward_t2": r2, "delta": r2 - r1, "reward": r1 + r2})
    trainer.args.stage = 1
    assert trainer.evaluate_heldout()["reward"] == pytest.approx(r2)


# ---------------------------------------------------------------------------------------------
# Checkpoint selection on held-out problems
# ---------------------------------------------------------------------------------------------
def scripted_heldout(deltas: dict[int, float]):
    """A stand-in for `evaluate_heldout`: the delta of each step's save, from a script."""

    def evaluate(self):
        d = deltas[self.state.global_step]
        return {"reward_t1": 0.25, "reward_t2": 0.25 + d, "delta": d, "reward": 0.5 + d}

    return evaluate


def weights(path_or_model) -> dict[str, torch.Tensor]:
    if isinstance(path_or_model, str | os.PathLike):
        return load_file(os.path.join(path_or_model, "model.safetensors"))
    return {k: v.detach().clone() for k, v in path_or_model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k in b)


@pytest.mark.parametrize("select", ["delta", "last"])
def test_the_best_checkpoint_is_kept(tiny_model_dir, tmp_path, monkeypatch, select):
    monkeypatch.setattr(SCoReTrainer, "evaluate_heldout", scripted_heldout({1: 0.3, 2: 0.9, 3: 0.9, 4: 0.2, 5: 0.1}))
    policy = perturbed_copy(tiny_model_dir, tmp_path / "policy", scale=0.2)  # the KL moves it every step
    tok = AutoTokenizer.from_pretrained(policy, padding_side="left")
    out = tmp_path / "o"
    cfg = SCoReConfig(output_dir=str(out), ref_model=str(tiny_model_dir), num_generations=2,
                      per_device_train_batch_size=4, max_attempt_length=4, report_to="none", max_steps=5,
                      save_steps=1, save_total_limit=2, learning_rate=1e-2, select_checkpoint=select,
                      heldout_problems=2, seed=0)
    problems = [Problem(str(i), f"Q{i}?", "7") for i in range(8)]
    trainer = SCoReTrainer(str(policy), cfg, ExactTask(), problems, processing_class=tok)
    assert len(trainer.heldout) == 2 and len(trainer.train_dataset) == 6
    trainer.train()

    assert [h["heldout/delta"] for h in trainer.state.log_history if "heldout/delta" in h] == [0.3, 0.9, 0.9, 0.2, 0.1]
    kept = sorted(out.glob("checkpoint-*"))
    assert [json.loads((p / HELDOUT_FILE).read_text())["delta"] for p in kept] == (
        [0.9, 0.1] if select == "delta" else [0.2, 0.1]
    )
    final = weights(out / "checkpoint-5")
    if select == "delta":  # 0.9 at steps 2 and 3: the later; save_total_limit keeps it
        assert [p.name for p in kept] == ["checkpoint-3", "checkpoint-5"]
        assert trainer.state.best_global_step == 3 and trainer.state.best_model_checkpoint.endswith("checkpoint-3")
        assert same(weights(out / "checkpoint-3"), weights(trainer.model))
        assert not same(final, weights(trainer.model))
    else:
        assert [p.name for p in kept] == ["checkpoint-4", "checkpoint-5"]
        assert trainer.state.best_global_step is None
        assert same(final, weights(trainer.model))


class InterruptAt(TrainerCallback):
    """Ctrl-C (SIGINT to this process) during a given step: StopOnSignal saves and stops."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_selection_survives_resume_and_is_recorded(tiny_model_dir, tmp_path, monkeypatch, data_file):  # noqa: F811
    from score_cli.train import TrainRequest, run_stage

    monkeypatch.setattr(SCoReTrainer, "evaluate_heldout", scripted_heldout({2: 0.7, 3: 0.1, 4: 0.2, 6: 0.3}))
    out = tmp_path / "run"
    overrides = {"max_steps": 6, "save_steps": 2, "save_total_limit": 2, "select_checkpoint": "delta",
                 "heldout_problems": 4, "max_attempt_length": 6, "num_generations": 2,
                 "per_device_train_batch_size": 4, "report_to": "none", "logging_steps": 1, "learning_rate": 1e-3}
    req = TrainRequest(stage=1, model=str(tiny_model_dir), data=str(data_file), output_dir=str(out),
                       overrides=overrides)
    first = run_stage(req, callbacks=[InterruptAt(3)])
    assert first.interrupted and first.record["interrupted_at_step"] == 3
    assert first.record["heldout"]["problems"] == 4 and len(first.record["heldout"]["ids"]) == 4
    assert first.record["n_train_problems"] == 8

    req.resume = True
    result = run_stage(req)
    record = json.loads((out / "score_run.json").read_text())
    assert record["finished"] and record["resumed_from"].endswith("checkpoint-3")
    sel = record["checkpoint_selection"]
    assert [s["step"] for s in sel["saves"]] == [2, 3, 4, 6] and [s["delta"] for s in sel["saves"]] == [0.7, 0.1,
                                                                                                         0.2, 0.3]
    assert sel["select_checkpoint"] == "delta" and sel["kept_step"] == 2 and sel["kept_checkpoint"] == "checkpoint-2"
    assert sel["kept_value"] == 0.7
    assert (out / "checkpoint-2" / HELDOUT_FILE).exists()  # the best before the resume is still there
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-6"]
    assert same(weights(out / "checkpoint-2"), weights(out))
    assert result.record["heldout"]["ids"] == first.record["heldout"]["ids"]
