"""The experiment script's own measures (scripts/toy_lab.py), checked on hand-made chains."""

import importlib.util
import json
from pathlib import Path

import pytest

from score_cli.tasks.toy_task import GOLD

SPEC = importlib.util.spec_from_file_location("toy_lab", Path(__file__).parents[1] / "scripts" / "toy_lab.py")
toy_lab = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(toy_lab)


def attempt(text: str, gold: str) -> dict:
    answer = text.splitlines()[-1].split("$")[1]
    return {"text": text, "answer": answer, "correct": answer == gold}


def test_anatomy_places_each_changed_second_attempt_by_where_it_leaves_a_wrong_first_one(tmp_path):
    right = GOLD.solve(482, "+", 397)  # 2+7=9 9 / 8+9=17 79 / 4+3+1=8 879
    wrong_at_2 = "2+7=9 9\n8+9=16 69\n4+3+1=8 869\nThe final answer is $869$."
    early = "2+7=8 8\n8+9=17 78\n4+3+1=8 878\nThe final answer is $878$."  # breaks line 1
    at_wrong = "2+7=9 9\n8+9=18 89\n4+3+1=8 889\nThe final answer is $889$."  # redoes line 2, wrong again
    late = "2+7=9 9\n8+9=16 69\n4+3+1=9 969\nThe final answer is $969$."  # keeps line 2's mistake
    chains = [(wrong_at_2, right), (wrong_at_2, early), (wrong_at_2, at_wrong), (wrong_at_2, late),
              (wrong_at_2, wrong_at_2), (right, early)]  # an unchanged one, and a right first attempt: not counted
    row = {"question": "482+397=?", "chains": [[attempt(a, "879"), attempt(b, "879")] for a, b in chains]}
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(row) + "\n")
    shares = toy_lab.anatomy(samples)
    assert shares == pytest.approx({"early/R": 0, "early/W": 0.2, "at/R": 0.2, "at/W": 0.2, "late/R": 0,
                                    "late/W": 0.2})


def test_modes_sorts_second_attempts_into_keeps_copies_redos_and_rewrites(tmp_path):
    right = GOLD.solve(482, "+", 397)
    wrong = "2+7=9 9\n8+9=16 69\n4+3+1=8 869\nThe final answer is $869$."
    keep_wrong = "The final answer is $869$."
    redo = "Redo:\n" + right
    chains = [(right, right), (right, "The final answer is $879$."), (right, wrong),  # y1 right: copy, keep, new
              (wrong, keep_wrong), (wrong, keep_wrong), (wrong, redo), (wrong, right)]  # y1 wrong: keep x2, redo, new
    row = {"question": "482+397=?", "chains": [[attempt(a, "879"), attempt(b, "879")] for a, b in chains]}
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(row) + "\n")
    shares = toy_lab.modes(samples)
    third = pytest.approx(1 / 3)
    assert shares == {"R/copy": (third, 1.0), "R/keep": (third, 1.0), "R/new": (third, 0.0),
                      "W/keep": (0.5, 0.0), "W/new": (0.25, 1.0), "W/redo": (0.25, 1.0)}


def test_imitator_scores_the_data_a_base_imitates():
    always_copy = toy_lab.imitator({"copy": 1.0}, n=400)
    assert always_copy["t1"] == always_copy["t2"] and always_copy["chg|R"] == always_copy["chg|W"] == 0
    assert 0.4 < always_copy["t1"] < 0.8  # the first solver slips
    perfect_retry = toy_lab.imitator({"copy": 0.0, "keep_prefix": False, "second": {}}, n=400)
    assert perfect_retry["t2"] == 1.0 and perfect_retry["f"] == 1.0
    assert perfect_retry["chg|R"] == 0 and perfect_retry["chg|W"] == 1.0
    half = toy_lab.imitator({"keep_prefix": False, "short_copy": True}, n=2000)
    assert 0.3 < half["chg|W"] < 0.6 and half["delta"] < 0.02  # half keeps; the second solver slips more


def test_extend_trains_on_and_saves_a_loadable_model_at_each_snapshot(tmp_path, tiny_model_dir):
    import shutil

    from safetensors.torch import load_file

    from score_cli.toy_model import RECORD_FILE

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / RECORD_FILE).write_text(json.dumps({"seed": 0}))
    out = tmp_path / "extended"
    toy_lab.extend(str(base), str(out), steps=3, lr=1e-3, data={"short_copy": True}, snapshots=(2,), batch_size=2)
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["seed"] == 0 and record["extended"]["steps"] == 3
    assert json.loads((out / "step-2" / RECORD_FILE).read_text())["extended"]["steps"] == 2
    weights = {name: load_file(path / "model.safetensors") for name, path in
               (("base", base), ("2", out / "step-2"), ("3", out))}
    key = next(k for k in weights["base"] if "q_proj" in k)
    assert not torch_equal(weights["base"][key], weights["2"][key])
    assert not torch_equal(weights["2"][key], weights["3"][key])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_build_saves_snapshots_along_the_way_and_the_last_one_is_the_model(tmp_path):
    from safetensors.torch import load_file

    from score_cli.toy_model import RECORD_FILE

    small = {"hidden": 32, "layers": 2, "heads": 2, "steps": 4, "batch_size": 2, "clean_steps": 2, "warmup": 1}
    toy_lab.build(str(tmp_path / "b"), 0, {}, small, snapshots=(2, 4))
    assert json.loads((tmp_path / "b" / "step-2" / RECORD_FILE).read_text())["snapshot_step"] == 2
    final, last, early = (load_file(tmp_path / "b" / d / "model.safetensors") for d in (".", "step-4", "step-2"))
    key = next(k for k in final if "q_proj" in k)
    assert torch_equal(final[key], last[key]) and not torch_equal(final[key], early[key])


def test_validation_problems_are_those_the_rl_run_with_that_seed_holds_out():
    """`probe --validation N --rl-seed S` must judge a base on what `rl --validation N --seed S` holds out
    of training: the same problems the training command loads, split by the trainer's own rule."""
    from score_cli.tasks.registry import load_task
    from score_cli.trainers import heldout_split

    for seed in (0, 3):
        _, problems = load_task("toy", split="train", seed=seed)  # what `score stage1 --bench toy` trains on
        held = {p.id for p in heldout_split(problems, 50, seed)[1]}
        assert {p.id for p in toy_lab.validation_problems(50, seed)} == held
    assert {p.id for p in toy_lab.validation_problems(50, 0)} != {p.id for p in toy_lab.validation_problems(50, 3)}


def test_baseline_snr_finds_the_discriminating_gradient_only_where_y1_carries_a_signal():
    # b = 0: the redo rate ignores the signal, so "redo when y1 looks wrong" has a zero-mean
    # gradient when the signal says nothing (d = 0) and a clearly positive one when it separates.
    blind = toy_lab.baseline_snr(0.75, 0.85, 0.08, a=1.0, b=0.0, d=0.0, steps=400)
    seeing = toy_lab.baseline_snr(0.75, 0.85, 0.08, a=1.0, b=0.0, d=3.0, steps=400)
    assert set(blind) == {"rloo", "cond", "pair", "tree"}
    assert all(abs(snr_b) < 0.15 for _, snr_b in blind.values())
    assert all(snr_b > 1.0 for _, snr_b in seeing.values())
    assert max(seeing, key=lambda mode: seeing[mode][1]) == "rloo"  # section 37's finding
    # "Redo more" points the way a redo beats a keep: up for a good redo, down for a weak one
    # against a faithful keep.
    assert all(snr_a > 0.5 for snr_a, _ in seeing.values())
    weak_redo = toy_lab.baseline_snr(0.75, 0.3, 0.0, a=0.0, b=0.0, d=0.0, steps=400)
    assert all(snr_a < -1.0 for snr_a, _ in weak_redo.values())


def test_decisions_splits_checked_second_attempts_by_y1_verdict_and_keep(tmp_path, capsys):
    from score_cli.tasks.toy_task import nines

    right = GOLD.solve(482, "+", 397)
    wrong = "2+7=9 9\n8+9=16 69\n4+3+1=8 869\nThe final answer is $869$."
    keep_right, keep_wrong = "The final answer is $879$.", "The final answer is $869$."
    ok, no = nines(right, 482, "+", 397), nines(wrong, 482, "+", 397)
    assert ok.splitlines()[-2].endswith("ok") and no.splitlines()[-2].endswith("no")
    chains = [(right, f"{ok}\n{keep_right}"), (right, f"{ok}\n{keep_right}"), (right, f"{no}\n{wrong}"),
              (wrong, f"{no}\n{right}"), (wrong, f"{ok}\n{keep_wrong}")]
    row = {"question": "482+397=?", "chains": [[attempt(a, "879"), attempt(b, "879")] for a, b in chains]}
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(row) + "\n")
    toy_lab.decisions([str(samples)])
    table = capsys.readouterr().out.splitlines()[2:]
    assert table == ["right | no | redo | 1 | 0.0", "right | ok | keep | 2 | 100.0",
                     "wrong | no | redo | 1 | 100.0", "wrong | ok | keep | 1 | 0.0"]


def test_recorded_review_kind_reads_a_stage_outputs_base_through_its_run_record(tmp_path):
    """A probe of a trained model reads its second attempts by the check its base was built with."""
    base, stage, plain = tmp_path / "base", tmp_path / "stage2", tmp_path / "other"
    for d in (base, stage, plain):
        d.mkdir()
    (base / "toy_model.json").write_text(json.dumps({"seed": 0, "data": {"review_kind": "nines"}}))
    (stage / "score_run.json").write_text(json.dumps({"stage": 2, "base_model": "base", "cwd": str(tmp_path)}))
    assert toy_lab.recorded_review_kind(base) == "nines"
    assert toy_lab.recorded_review_kind(stage) == "nines"
    assert toy_lab.recorded_review_kind(plain) == "lines"  # no record at all: the default check
    (base / "toy_model.json").write_text(json.dumps({"seed": 0, "data": {}}))
    assert toy_lab.recorded_review_kind(stage) == "lines"
