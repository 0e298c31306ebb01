"""`score stage1` / `score stage2` through the CLI: recipes, overrides, outputs, faults, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from score_cli.cli import app

runner = CliRunner()
FAST = ["--max-attempt-length", "6", "--num-generations", "2", "--per-device-train-batch-size", "4",
        "--report-to", "none", "--logging-steps", "1", "--save-strategy", "no"]


@pytest.fixture
def data_file(doubling_data):
    return doubling_data(12)


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_stage1_then_stage2_then_eval(tmp_path, tiny_model_dir, data_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"learning_rate": 0.001, "max_steps": 2, "alpha": 5.0, "seed": 3}))
    s1 = tmp_path / "s1"
    r = invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--recipe", recipe, "--max-steps", 3,
               "--output-dir", s1, *FAST)
    assert r.exit_code == 0, r.output
    record = json.loads((s1 / "score_run.json").read_text())
    assert record["stage"] == 1 and record["finished"] and record["steps"] == 3  # option beats recipe
    assert record["base_model"] == str(tiny_model_dir)
    assert record["config"]["learning_rate"] == 0.001 and record["config"]["alpha"] == 5.0  # from the recipe
    resolved = yaml.safe_load((s1 / "score_config.yaml").read_text())
    assert resolved["max_steps"] == 3 and resolved["learning_rate"] == 0.001 and resolved["data"] == str(data_file)
    assert any("reward/t1" in h and "kl/t1" in h for h in record["log_history"])
    # the saved model reloads like any model (a random model earns no reward, so it barely moves:
    # tests/test_toy_training.py checks that rewards move on a model that can answer)
    trained = AutoModelForCausalLM.from_pretrained(s1)
    assert trained.config.vocab_size == AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.vocab_size

    s2 = tmp_path / "s2"
    r = invoke("stage2", "--from-checkpoint", s1, "--output-dir", s2, "--max-steps", 2, "--learning-rate", 0.001,
               *FAST)
    assert r.exit_code == 0, r.output
    rec2 = json.loads((s2 / "score_run.json").read_text())
    assert rec2["stage"] == 2 and rec2["base_model"] == str(tiny_model_dir)  # reference = base, not Stage I
    assert rec2["config"]["ref_model"] == str(tiny_model_dir) and rec2["policy_init"] == str(s1)
    assert rec2["data"]["data"] == str(data_file)  # Stage I's data by default
    # each output has SCoRe's model card, and Stage II's config names Stage I (reruns with --recipe alone)
    for run, stage in ((s1, "Stage I:"), (s2, "Stage II:")):
        card = (run / "README.md").read_text()
        assert "SCoRe" in card and "2409.12917" in card and stage in card and "DeepSeekMath" not in card
        assert f"`{tiny_model_dir}` (a local directory)" in card and "[None]" not in card
    s2_config = yaml.safe_load((s2 / "score_config.yaml").read_text())
    assert s2_config["from_checkpoint"] == str(s1) and s2_config["max_steps"] == 2 and "alpha" in s2_config
    umask = os.umask(0)
    os.umask(umask)
    assert (s2 / "score_run.json").stat().st_mode & 0o777 == 0o666 & ~umask

    r = invoke("eval", "--model", s2, "--data", data_file, "--limit", 4, "--max-new-tokens", 6,
               "--output-dir", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_problems"] == 4

    r = invoke("report", s1)
    assert r.exit_code == 0 and (s1 / "training_curves.png").stat().st_size > 1000


def test_stage2_trains_as_many_attempts_as_stage1(tmp_path, tiny_model_dir, data_file):
    s1 = tmp_path / "s1"
    r = invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--max-steps", 1, "--turns", 3,
               "--output-dir", s1, *FAST)
    assert r.exit_code == 0, r.output
    record = json.loads((s1 / "score_run.json").read_text())
    assert record["config"]["turns"] == 3 and any("reward/t3" in h for h in record["log_history"])
    card = (s1 / "README.md").read_text()
    assert "**Attempts per rollout**: 3" in card and "--turns 3" in card
    for extra, turns in (([], 3), (["--turns", 2], 2)):  # Stage I's unless told
        out = tmp_path / f"s2-{turns}"
        r = invoke("stage2", "--from-checkpoint", s1, "--output-dir", out, "--max-steps", 1, *extra, *FAST)
        assert r.exit_code == 0, r.output
        assert json.loads((out / "score_run.json").read_text())["config"]["turns"] == turns
    # score report draws every attempt's curves
    from score_cli.report import CURVES, _curve_keys

    keys = _curve_keys(record["log_history"], CURVES[0][1] + CURVES[1][1])
    assert keys == ["reward/t1", "reward/t2", "reward/t3", "delta", "i2c", "c2i", "delta/t2t3"]


def one_line_error(result, match):
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], result.output
    assert "Traceback" not in result.output


def test_training_bad_input(tmp_path, tiny_model_dir, data_file):
    out = ["--output-dir", tmp_path / "o"]
    one_line_error(invoke("stage1", "--data", data_file, *out), "--model")
    one_line_error(invoke("stage1", "--model", tmp_path / "nope", "--data", data_file, *out), "does not exist")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", tmp_path / "x.jsonl", *out), "does not exist")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--alpha", -1, *out),
                   "alpha must be >= 0")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--beta2", -0.5, *out),
                   "beta2 must be >= 0")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--baseline", "avg", *out),
                   "baseline must be one of")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--recipe", tmp_path / "r.yaml",
                          *out), "recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--recipe", bad, *out),
                   "unknown keys learning_rat")
    # Stage II from a directory that is not a Stage I output
    one_line_error(invoke("stage2", "--from-checkpoint", tiny_model_dir, *out), "is not a Stage I output")
    one_line_error(invoke("stage2", "--from-checkpoint", tmp_path / "missing", *out), "does not exist")
    one_line_error(invoke("stage2", *out), "--from-checkpoint")


def test_output_dir_holding_a_run_is_not_clobbered(tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "o"
    out.mkdir()
    (out / "score_run.json").write_text(json.dumps({"stage": 1, "finished": True}))
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--output-dir", out, *FAST),
                   "already holds a training run")
    one_line_error(invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--output-dir", out, "--resume",
                          *FAST), "already finished")


def stage1_process(tiny_model_dir, data_file, out, *extra):
    cmd = [sys.executable, "-m", "score_cli", "stage1", "--model", str(tiny_model_dir), "--data", str(data_file),
           "--output-dir", str(out), "--max-attempt-length", "6", "--num-generations", "2",
           "--per-device-train-batch-size", "4", "--report-to", "none", "--save-steps", "1",
           "--logging-steps", "1", "--learning-rate", "0.001", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_for(path_glob: Path, pattern: str, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(p.joinpath("trainer_state.json").exists() for p in path_glob.glob(pattern)):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {pattern} in {path_glob} after {timeout}s")


def test_kill_9_then_resume_continues_from_the_last_checkpoint(tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "run"
    proc = stage1_process(tiny_model_dir, data_file, out, "--max-steps", "12")
    wait_for(out, "checkpoint-2")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    record = json.loads((out / "score_run.json").read_text())
    assert not record["finished"]
    steps_done = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")
                     if (p / "trainer_state.json").exists())
    assert steps_done < 12
    r = invoke("stage1", "--model", tiny_model_dir, "--data", data_file, "--output-dir", out, "--resume",
               "--max-attempt-length", 6, "--num-generations", 2, "--per-device-train-batch-size", 4,
               "--report-to", "none", "--save-steps", 1, "--logging-steps", 1, "--learning-rate", 0.001,
               "--max-steps", 12)
    assert r.exit_code == 0, r.output
    record = json.loads((out / "score_run.json").read_text())
    assert record["finished"] and record["steps"] == 12
    resumed = int(Path(record["resumed_from"]).name.split("-")[1])
    assert resumed >= 2  # it continued from a checkpoint instead of starting over
    steps = [h["step"] for h in record["log_history"] if "loss" in h]
    assert steps == list(range(1, 13))  # each step once: none redone, none lost


def test_ctrl_c_saves_a_checkpoint_then_exits(tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "run"
    proc = stage1_process(tiny_model_dir, data_file, out, "--max-steps", "500", "--save-steps", "1000")
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "score_run.json").exists():
        time.sleep(0.2)
    time.sleep(3)  # let a few steps run
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "--resume" in output
    record = json.loads((out / "score_run.json").read_text())
    step = record["interrupted_at_step"]
    assert 0 < step < 500 and (out / f"checkpoint-{step}" / "trainer_state.json").exists()


def test_dry_run_loads_nothing(tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "math_qwen2.5-math-1.5b.yaml"
    r = invoke("stage1", "--model", "Qwen/Qwen2.5-Math-1.5B-Instruct", "--recipe", recipe, "--dry-run",
               "--no-bf16", "--per-device-train-batch-size", 8, "--gradient-accumulation-steps", 2)
    assert r.exit_code == 0, r.output
    plan = yaml.safe_load(r.output)
    assert plan["processes"] == 1 and plan["sequences per optimizer step (effective batch)"] == 16
    assert plan["prompts per optimizer step"] == 2 and plan["config"]["max_steps"] == 300
    assert plan["reference (base)"] == "Qwen/Qwen2.5-Math-1.5B-Instruct"
