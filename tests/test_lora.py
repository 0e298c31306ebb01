"""LoRA: the reference is the base with the adapter disabled in both stages; Stage II re-trains
Stage I's adapter; `score export --merge` writes a plain model."""

from __future__ import annotations

import json

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from score_cli.cli import app
from score_cli.tasks import Problem
from score_cli.trainers import SCoReConfig, SCoReTrainer
from tests.test_trainer_objective import INSTR, QUESTIONS, ExactTask, manual_logps

runner = CliRunner()
FAST = ["--max-attempt-length", "6", "--num-generations", "2", "--per-device-train-batch-size", "4",
        "--report-to", "none", "--save-strategy", "no", "--max-steps", "2", "--lora-r", "4"]


def test_lora_stage1_stage2_export(tmp_path, tiny_model_dir, jsonl):
    data = jsonl(tmp_path / "d.jsonl", [{"problem": f"{i}+1?", "answer": str(i + 1)} for i in range(8)])
    s1, s2, merged = tmp_path / "s1", tmp_path / "s2", tmp_path / "merged"
    r = runner.invoke(app, ["stage1", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(s1),
                            *FAST])
    assert r.exit_code == 0, r.output
    assert (s1 / "adapter_config.json").exists() and not (s1 / "model.safetensors").exists()
    r = runner.invoke(app, ["stage2", "--from-checkpoint", str(s1), "--output-dir", str(s2), *FAST])
    assert r.exit_code == 0, r.output
    assert json.loads((s2 / "score_run.json").read_text())["base_model"] == str(tiny_model_dir)
    r = runner.invoke(app, ["export", str(s2), "--out", str(merged)])
    assert r.exit_code == 0, r.output
    model = AutoModelForCausalLM.from_pretrained(merged)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(s2))
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, peft(ids).logits, atol=1e-5)
    r = runner.invoke(app, ["export", str(tiny_model_dir), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no LoRA adapter" in r.output


def test_stage2_lora_reference_is_base_not_stage1_adapter(tmp_path, tiny_model_dir, scripted):
    # a Stage I adapter with non-zero weights, so Stage I differs from the base
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    s1 = tmp_path / "s1"
    peft.save_pretrained(s1)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    tok.save_pretrained(s1)

    cfg = SCoReConfig(output_dir=str(tmp_path / "o"), stage=2, ref_model=str(tiny_model_dir), num_generations=2,
                      per_device_train_batch_size=8, max_attempt_length=4, report_to="none", save_strategy="no",
                      reuse_attempt_cache=False)  # attempts are scripted through _generate_single_turn
    problems = [Problem(str(i), q, "7") for i, q in enumerate(QUESTIONS)]
    trainer = SCoReTrainer(str(s1), cfg, ExactTask(), problems, processing_class=tok)
    gen = scripted(tok, QUESTIONS, INSTR)
    trainer._generate_single_turn = lambda ids, images, mm, n, **_: gen(ids)
    assert "ref" not in trainer.model.peft_config  # TRL's copy of the Stage I adapter is gone
    assert any(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)

    rows = [{"prompt": q, "problem_id": str(i)} for i, q in enumerate(QUESTIONS) for _ in range(2)]
    batch = trainer._generate_and_score_completions(rows)
    args = (batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])
    mask = (batch["completion_mask"] * batch["tool_mask"]).bool()
    fresh_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ref = manual_logps(fresh_base, *args)
    policy = manual_logps(trainer.model.eval(), *args)
    assert torch.allclose(batch["ref_per_token_logps"][mask], ref[mask], atol=1e-5)
    assert not torch.allclose(policy[mask], ref[mask], atol=1e-3)
