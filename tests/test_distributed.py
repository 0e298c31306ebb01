"""Several processes (accelerate, 2 CPU processes) compute what one process computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "ACCELERATE_USE_CPU": "1",
       "MASTER_PORT": "29533"}


def launch(*args, processes: int = 2, timeout: int = 300):
    # CPU processes: accelerate's multi-process launcher, with the CPU forced by ACCELERATE_USE_CPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29533", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def single(*args, timeout: int = 300):
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=ENV,
                       timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.parametrize(("stage", "turns"), [(1, 2), (2, 2), (2, 3)])
def test_advantages_gathered_across_processes(tmp_path, tiny_model_dir, stage, turns):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    single(ROOT / "tests" / "dist_check.py", tiny_model_dir, one, stage, turns)
    launch(ROOT / "tests" / "dist_check.py", tiny_model_dir, two, stage, turns)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["world"] == 2 and a["world"] == 1
    flat = lambda adv: [x for pair in adv for x in pair]  # noqa: E731
    assert flat(b["advantages"]) == pytest.approx(flat(a["advantages"]), abs=1e-6)
    assert b["metrics"] == pytest.approx(a["metrics"])
    assert f"reward/t{turns}" in b["metrics"] and ("delta/t2t3" in b["metrics"]) == (turns == 3)
    # RLOO over the 4 rollouts of the group, whose halves live on different processes
    r = [[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0]][:turns]  # r[k][rollout]
    last = r[-1] if stage == 1 else [y + 10 * (y - x) for x, y in zip(r[-2], r[-1], strict=True)]
    want = [last[i] - (sum(last) - last[i]) / 3 for i in range(4)]
    assert [x[-1] for x in b["advantages"]] == pytest.approx(want)


def test_stage1_and_eval_on_two_processes(tmp_path, tiny_model_dir, doubling_data):
    data = doubling_data(10)
    out = tmp_path / "s1"
    launch("-m", "score_cli", "stage1", "--model", tiny_model_dir, "--data", data, "--output-dir", out,
           "--max-steps", 2, "--max-attempt-length", 4, "--num-generations", 4, "--per-device-train-batch-size", 2,
           "--report-to", "none", "--save-strategy", "no")
    record = json.loads((out / "score_run.json").read_text())
    assert record["finished"] and record["steps"] == 2

    ev1, ev2 = tmp_path / "e1", tmp_path / "e2"
    common = ["eval", "--model", out, "--data", data, "--max-new-tokens", 6, "--batch-size", 3]
    single("-m", "score_cli", *common, "--output-dir", ev1)
    launch("-m", "score_cli", *common, "--output-dir", ev2)
    rows1 = (ev1 / "samples.jsonl").read_text().splitlines()
    rows2 = [json.loads(x) for x in (ev2 / "samples.jsonl").read_text().splitlines()]
    assert sorted(rows2, key=lambda r: r["id"]) == sorted(map(json.loads, rows1), key=lambda r: r["id"])
    m1, m2 = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (ev1, ev2))
    assert m1 == m2 and json.loads((ev2 / "metrics.json").read_text())["n_problems"] == 10
