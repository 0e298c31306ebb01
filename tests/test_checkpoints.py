"""`--resume` picks the newest checkpoint whose every file loads: a truncated model, optimizer,
scheduler, RNG state, arguments or trainer state in the newest one falls back to the one before,
with a one-line warning."""

from __future__ import annotations

import argparse
import json
import logging
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from score_cli.cli import app
from score_cli.train import last_complete_checkpoint

FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin",
         "trainer_state.json", "config.json")


def write_checkpoint(d, step: int) -> None:
    """A checkpoint laid out as transformers' Trainer writes one (small tensors, same kinds of files)."""
    d.mkdir(parents=True)
    save_file({"w": torch.randn(64, 64), "b": torch.zeros(64)}, d / "model.safetensors")
    torch.save({"state": {0: {"step": torch.tensor(step), "exp_avg": torch.randn(64, 64)}},
                "param_groups": [{"lr": 1e-3, "params": [0]}]}, d / "optimizer.pt")
    torch.save({"base_lrs": [1e-3], "last_epoch": step, "_step_count": step + 1}, d / "scheduler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()},
               d / "rng_state.pth")
    torch.save(argparse.Namespace(learning_rate=1e-3), d / "training_args.bin")  # a pickled object, not weights
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": [{"step": step}]}))


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def run_dir(tmp_path):
    for step in (2, 4):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    return tmp_path


def test_intact_newest_checkpoint_is_chosen_without_warning(run_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="score_cli.train"):
        assert last_complete_checkpoint(run_dir) == str(run_dir / "checkpoint-4")
    assert not caplog.records


@pytest.mark.parametrize("name", FILES)
def test_truncated_file_in_newest_checkpoint_falls_back(run_dir, caplog, name):
    truncate(run_dir / "checkpoint-4" / name)
    with caplog.at_level(logging.WARNING, logger="score_cli.train"):
        assert last_complete_checkpoint(run_dir) == str(run_dir / "checkpoint-2")
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in warning and "checkpoint-4" in warning and name in warning
    assert warning.endswith("resuming from checkpoint-2")
    # without verification (is there a run at all?) only the trainer state counts
    expected = "checkpoint-2" if name == "trainer_state.json" else "checkpoint-4"
    assert last_complete_checkpoint(run_dir, verify=False) == str(run_dir / expected)


def test_missing_shard_and_no_complete_checkpoint(run_dir, caplog):
    index = {"metadata": {}, "weight_map": {"w": "model-00001-of-00002.safetensors"}}
    (run_dir / "checkpoint-4" / "model.safetensors.index.json").write_text(json.dumps(index))
    truncate(run_dir / "checkpoint-2" / "optimizer.pt")
    with caplog.at_level(logging.WARNING, logger="score_cli.train"):
        assert last_complete_checkpoint(run_dir) is None
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "model-00001-of-00002.safetensors is missing" in warning and "optimizer.pt" in warning
    assert "starts from step 0" in warning


def test_resume_after_a_truncated_model_file_uses_the_previous_checkpoint(tmp_path, tiny_model_dir, caplog,
                                                                          doubling_data):
    """Real checkpoints written by training pass the checks; cutting the newest one's weights short
    makes --resume continue from the one before."""
    data = doubling_data(8)
    out = tmp_path / "run"
    args = ["stage1", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(out),
            "--max-attempt-length", "4", "--num-generations", "2", "--per-device-train-batch-size", "4",
            "--report-to", "none", "--logging-steps", "1", "--save-steps", "1", "--learning-rate", "0.001"]
    r = CliRunner().invoke(app, [*args, "--max-steps", "2"])
    assert r.exit_code == 0, r.output
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")  # every real file loads
    record = json.loads((out / "score_run.json").read_text())
    (out / "score_run.json").write_text(json.dumps({**record, "finished": False}))  # as if killed after step 2
    truncate(out / "checkpoint-2" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="score_cli.train"):
        r = CliRunner().invoke(app, [*args, "--max-steps", "3", "--resume"])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "score_run.json").read_text())
    assert record["finished"] and record["steps"] == 3 and record["resumed_from"] == str(out / "checkpoint-1")
    assert any("model.safetensors" in m and "resuming from checkpoint-1" in m for m in caplog.messages)
