"""The code domain in training: the sandboxed "all tests pass" reward reaches the right attempt."""

from __future__ import annotations

import json

from transformers import AutoTokenizer
from typer.testing import CliRunner

from score_cli.cli import app
from score_cli.tasks import CODE_INSTRUCTION
from score_cli.tasks.code_task import CodeTask, mbpp_problem
from score_cli.trainers import SCoReConfig, SCoReTrainer

ROWS = [
    {"task_id": 901, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": ""},
    {"task_id": 902, "text": "Write a function to double a number.", "code": "def double(x):\n    return 2 * x",
     "test_list": ["assert double(2) == 4"], "test_setup_code": ""},
]
WRONG = "```python\ndef add(a, b):\n    return a - b\n```"
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"
CHEAT = "```python\nimport sys\ndef add(a, b):\n    sys.exit(0)\n```"


def test_code_reward_per_attempt_in_the_trainer(tmp_path, tiny_model_dir, scripted):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    problems = [mbpp_problem(ROWS[0])]
    task = CodeTask("mbpp")
    assert task.instruction == CODE_INSTRUCTION  # the task picks the paper's code instruction
    cfg = SCoReConfig(output_dir=str(tmp_path / "o"), stage=2, ref_model=str(tiny_model_dir), num_generations=4,
                      per_device_train_batch_size=4, max_attempt_length=64, report_to="none", save_strategy="no",
                      reuse_attempt_cache=False)  # attempts are scripted through _generate_single_turn
    trainer = SCoReTrainer(str(tiny_model_dir), cfg, task, problems, processing_class=tok)
    question = problems[0].question
    chains = [[WRONG, RIGHT], [RIGHT, WRONG], [RIGHT, RIGHT], [CHEAT, RIGHT]]
    gen = scripted(tok, {question: chains}, CODE_INSTRUCTION)
    trainer._generate_single_turn = lambda ids, images, mm, n, **_: gen(ids)
    trainer.model.train()
    trainer._generate_and_score_completions([{"prompt": question, "problem_id": problems[0].id} for _ in range(4)])
    assert trainer._attempt_rewards[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]  # sys.exit(0) is not a pass
    assert trainer._attempt_rewards[:, 1].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_stage1_trains_on_a_local_mbpp_file(tmp_path, tiny_model_dir, jsonl):
    stage = "stage1"
    data = jsonl(tmp_path / "mbpp.jsonl", ROWS)
    out = tmp_path / "s1"
    r = CliRunner().invoke(app, [stage, "--model", str(tiny_model_dir), "--bench", "mbpp", "--data", str(data),
                                 "--output-dir", str(out), "--max-steps", "1", "--max-attempt-length", "8",
                                 "--num-generations", "2", "--per-device-train-batch-size", "4",
                                 "--report-to", "none", "--save-strategy", "no"])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "score_run.json").read_text())
    assert record["task"] == "mbpp" and record["n_train_problems"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x"}) + "\n")
    r = CliRunner().invoke(app, [stage, "--model", str(tiny_model_dir), "--bench", "mbpp", "--data", str(bad),
                                 "--output-dir", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "task_id" in r.output
