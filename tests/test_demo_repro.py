"""`make demo` and `make repro` orchestration: which runs are trained from what, with how many
steps, and what the results table says (training and evaluation are replaced by recorders here;
the trainers and evaluation have their own tests)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

import score_cli.demo as demo
import score_cli.repro as repro

KEYS = ("accuracy@t1", "accuracy@t2", "delta(t1,t2)", "i->c(t1,t2)", "c->i(t1,t2)", "fixed|wrong(t1,t2)",
        "broken|right(t1,t2)", "answer_changed(t1,t2)", "fixed|changed(t1,t2)")


def fake_metrics(t1: float, t2: float) -> dict:
    i2c, c2i = max(t2 - t1, 0.0), max(t1 - t2, 0.0)
    values = (t1, t2, t2 - t1, i2c, c2i, i2c / (1 - t1), c2i / t1, i2c + c2i, 1.0 if i2c else 0.0)
    return {k: {"value": v} for k, v in zip(KEYS, values, strict=True)}


@pytest.fixture
def recorder(monkeypatch):
    """Replace training and evaluation by recorders; eval accuracy depends on the model's run name and seed."""
    calls: list[dict] = []

    def ensure_stage(stage, out, *, recipe, callbacks=None, **request):
        calls.append({"stage": stage, "out": Path(out), **request})
        return Path(out)

    def ensure_eval(model, out, *, seed=0, progress=None):
        t1 = 0.4 + 0.01 * seed + (0.1 if Path(model).name == "stage2" else 0.0)
        return fake_metrics(t1, t1 + (0.05 if Path(model).name == "stage2" else -0.02))

    def ensure_sft(out, *, recipe, callbacks=None, **request):
        calls.append({"stage": "sft", "out": Path(out), **request})
        return Path(out)

    for module in (demo, repro):
        monkeypatch.setattr(module, "ensure_stage", ensure_stage)
        monkeypatch.setattr(module, "ensure_eval", ensure_eval)
    monkeypatch.setattr(repro, "ensure_sft", ensure_sft)
    monkeypatch.setattr(demo, "ensure_base", lambda root, seed, on_step, data=None: Path(root) / "base")
    return calls


def test_demo_trains_stage2_from_stage1_with_the_demo_steps(tmp_path, recorder):
    rows = demo.run_demo(str(tmp_path), steps=7)
    assert [r["stage"] for r in recorder] == [1, 2]
    s1, s2 = recorder
    assert s1["model"] == str(tmp_path / "base") and s2["from_checkpoint"] == str(tmp_path / "stage1")
    assert s1["overrides"] == {"max_steps": 7} and s2["overrides"] == {"max_steps": 7}
    assert [name for name, _ in rows] == ["base", "stage1", "stage2"]
    # steps=None keeps the recipe's number of steps
    recorder.clear()
    demo.run_demo(str(tmp_path / "r"), steps=None)
    assert all(c["overrides"] == {} for c in recorder)


def test_repro_runs_every_method_per_seed_with_equal_total_steps(tmp_path, recorder, monkeypatch):
    monkeypatch.setattr(repro, "METHOD_LEARNING_RATES", {})  # the rates have their own test
    summary = repro.run_repro(str(tmp_path), seeds=(0, 1, 2), base_dir=str(tmp_path / "base"), steps=5)
    by_run = {(c["out"].parent.name, c["out"].name): c for c in recorder}
    assert len(by_run) == 3 * 8  # per seed: single-turn, stage2-only, stage1, 2 x stage2, 3 SFT runs
    stage1_calls = [c for c in recorder if c["out"].name == "stage1"]  # asked for by both SCoRe variants
    assert all(c == by_run[(c["out"].parent.name, "stage1")] for c in stage1_calls)
    for seed in (0, 1, 2):
        single = by_run[(f"seed{seed}", "single-turn")]
        assert single["overrides"] == {"seed": seed, "single_turn": True, "max_steps": 10}
        assert single["model"] == str(tmp_path / "base")
        only2 = by_run[(f"seed{seed}", "stage2-only")]
        assert only2["stage"] == 2 and only2["model"] == str(tmp_path / "base")
        assert only2["overrides"]["max_steps"] == 10
        s1 = by_run[(f"seed{seed}", "stage1")]
        assert s1["stage"] == 1 and s1["overrides"]["max_steps"] == 5
        full, a0 = by_run[(f"seed{seed}", "stage2")], by_run[(f"seed{seed}", "stage2-alpha0")]
        assert full["from_checkpoint"] == a0["from_checkpoint"] == str(tmp_path / f"seed{seed}" / "stage1")
        assert a0["overrides"]["alpha"] == 0.0 and "alpha" not in full["overrides"]
        # the SFT baselines: as many sampled chains (16 problems x 4 per RL step) and optimizer steps
        pair, star, s1star = (by_run[(f"seed{seed}", n)] for n in ("pair-sft", "star", "stage1-star"))
        assert pair["method"] == "pair" and pair["model"] == str(tmp_path / "base")
        assert pair["overrides"] == {"seed": seed, "samples_per_problem": 4, "max_steps": 10, "problems_per_round": 160}
        assert star["method"] == "star" and star["model"] == str(tmp_path / "base")
        assert star["overrides"] == {"seed": seed, "samples_per_problem": 4, "max_steps": 5, "problems_per_round": 80,
                                     "rounds": 2}
        assert s1star["from_checkpoint"] == str(tmp_path / f"seed{seed}" / "stage1")
        assert s1star["overrides"] == {"seed": seed, "samples_per_problem": 4, "max_steps": 5, "problems_per_round": 80}
    # mean and standard deviation over seeds: full SCoRe's t1 is 0.5, 0.51, 0.52
    mean, sd = summary["SCoRe"]["t1"]
    assert mean == pytest.approx(0.51) and sd == pytest.approx(statistics.stdev([0.5, 0.51, 0.52]))
    assert summary["SCoRe"]["Δ(t1,t2)"][0] == pytest.approx(0.05)
    assert summary["base"]["Δ(t1,t2)"][0] == pytest.approx(-0.02)
    assert summary["base"]["broken|right"][0] == pytest.approx(statistics.fmean(0.02 / t for t in (0.4, 0.41, 0.42)))
    table = (tmp_path / "results.md").read_text()
    assert "| SCoRe | 51.0 ± 1.0 | 56.0 ± 1.0 | +5.0 ± 0.0 |" in table
    header, rule = table.splitlines()[:2]
    assert r"| fixed\|wrong |" in header and header.replace(r"\|", "").count("|") == rule.count("|")
    assert "5 RL steps per stage, 10 for one-stage methods" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps_per_stage"] == 5 and saved["per_seed"]["SCoRe"]["2"]["accuracy@t1"] == pytest.approx(0.52)
    assert (tmp_path / "accuracy_per_attempt.png").stat().st_size > 0
    assert (tmp_path / "training_curves.png").stat().st_size > 0


def test_repro_with_a_longer_stage_one_gives_every_method_both_stages_steps(tmp_path, recorder):
    """--stage1-steps 8 with 4 Stage II steps: SCoRe trains 8 + 4, so every other method gets 12 too."""
    repro.run_repro(str(tmp_path), seeds=(0,), base_dir=str(tmp_path / "base"), steps=4, stage1_steps=8)
    by_run = {c["out"].name: c for c in recorder}
    assert by_run["stage1"]["overrides"] == {"seed": 0, "max_steps": 8}
    assert by_run["stage2"]["overrides"] == {"seed": 0, "max_steps": 4}
    assert by_run["stage2-alpha0"]["overrides"] == {"seed": 0, "max_steps": 4, "alpha": 0.0}
    assert by_run["single-turn"]["overrides"]["max_steps"] == by_run["stage2-only"]["overrides"]["max_steps"] == 12
    assert by_run["pair-sft"]["overrides"] == {"seed": 0, "samples_per_problem": 4, "max_steps": 12,
                                                   "problems_per_round": 192}
    assert by_run["star"]["overrides"] == {"seed": 0, "samples_per_problem": 4, "max_steps": 6,
                                           "problems_per_round": 96, "rounds": 2}
    assert by_run["stage1-star"]["overrides"] == {"seed": 0, "samples_per_problem": 4, "max_steps": 4,
                                                  "problems_per_round": 64}
    assert "8 RL steps in Stage I and 4 in Stage II, 12 for one-stage methods" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["stage1_steps"] == 8
    with pytest.raises(repro.ScoreError, match="odd number"):  # STaR's two rounds could not share 7 + 4 steps
        repro.run_repro(str(tmp_path / "odd"), seeds=(0,), base_dir=str(tmp_path / "base"), steps=4, stage1_steps=7)


def test_repro_base_per_seed_starts_each_seed_from_its_own_base(tmp_path, recorder, monkeypatch):
    built: list[tuple[Path, int]] = []
    monkeypatch.setattr(repro, "ensure_base",
                        lambda root, seed, on_step, data=None: built.append((root, seed)) or root / "base")
    repro.run_repro(str(tmp_path), seeds=(3, 4), base_per_seed=True, steps=2, methods=["single-turn RL", "SCoRe"])
    assert built == [(tmp_path / "seed3", 3), (tmp_path / "seed4", 4)]
    for c in recorder:  # every run of seed s starts from seed s's base (Stage II from its Stage I)
        seed = c["out"].parent.name
        assert c.get("model", str(tmp_path / seed / "base")) == str(tmp_path / seed / "base")
    assert "each seed's methods start from a base built with that seed" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["base_per_seed"] is True
    with pytest.raises(repro.ScoreError, match="give one of them"):
        repro.run_repro(str(tmp_path), seeds=(0,), base_dir=str(tmp_path / "b"), base_per_seed=True)


def test_repro_builds_a_base_per_seed_by_default_and_one_base_when_asked(tmp_path, recorder, monkeypatch):
    built: list[tuple[Path, int]] = []
    monkeypatch.setattr(repro, "ensure_base",
                        lambda root, seed, on_step, data=None: built.append((root, seed)) or root / "base")
    repro.run_repro(str(tmp_path / "a"), seeds=(1, 2), steps=2, methods=["SCoRe"])
    assert built == [(tmp_path / "a" / "seed1", 1), (tmp_path / "a" / "seed2", 2)]
    built.clear()
    repro.run_repro(str(tmp_path / "b"), seeds=(1, 2), base_per_seed=False, steps=2, methods=["SCoRe"])
    assert built == [(tmp_path / "b", 0)]  # ROOT/base, built once with seed 0
    stage1 = [c for c in recorder if c["stage"] == 1 and tmp_path / "b" in c["out"].parents]
    assert len(stage1) == 2 and all(c["model"] == str(tmp_path / "b" / "base") for c in stage1)
    assert "every seed's methods start from the same base" in (tmp_path / "b" / "results.md").read_text()


def test_repro_methods_runs_only_those_asked_for(tmp_path, recorder):
    summary = repro.run_repro(str(tmp_path), seeds=(0,), base_dir=str(tmp_path / "base"), steps=3,
                              methods=["STaR", "base"])
    assert list(summary) == ["base", "STaR"]  # in the table's order
    assert [c["out"].name for c in recorder] == ["star"]
    with pytest.raises(repro.ScoreError, match="unknown method.*'SCORE'.*choose from base, single-turn RL"):
        repro.run_repro(str(tmp_path), seeds=(0,), base_dir=str(tmp_path / "base"), methods=["SCORE"])


def test_ensure_eval_uses_its_seed_without_changing_the_shared_decoding(tmp_path, monkeypatch):
    """Each seed's evaluation samples with that seed, and the module's default decoding stays as it
    was (an earlier version wrote the seed into it, so one call leaked into the next)."""
    seen = []

    class Result:
        metrics = {"accuracy@t1": {"value": 0.5}}

    monkeypatch.setattr(demo, "evaluate", lambda cfg, callbacks: seen.append(cfg) or Result())
    before = demo.TOY_EVAL["decoding"].seed
    demo.ensure_eval(tmp_path / "model", tmp_path / "a", seed=2)
    demo.ensure_eval(tmp_path / "model", tmp_path / "b", seed=5)
    assert [cfg.decoding.seed for cfg in seen] == [2, 5]
    assert demo.TOY_EVAL["decoding"].seed == before
    assert seen[0].decoding.temperature == demo.TOY_EVAL["decoding"].temperature == 1.0
    assert seen[0].limit == demo.TOY_EVAL["limit"] == 300  # make demo's size, unless asked for more
    demo.ensure_eval(tmp_path / "model", tmp_path / "c", limit=2000)
    assert seen[-1].limit == 2000


def test_repro_base_band_reports_the_seeds_kept_and_every_rejected_try(tmp_path, recorder, monkeypatch):
    """With a band, a seed whose base probes outside it is replaced by the next unused seed; the runs,
    the table and results.json are of the kept seeds, and the rejected try is on record."""
    from score_cli.toy_selection import BaseBand

    built: list[int] = []
    monkeypatch.setattr(repro, "ensure_base",
                        lambda root, seed, on_step, data=None: built.append(seed) or root / "base")
    inside = {"t1": 50.0, "delta": -2.0, "retry-delta": -2.5, "f": 47.0}
    probes = {0: inside, 1: inside | {"delta": 0.4}, 2: inside, 3: inside}
    monkeypatch.setattr("score_cli.toy_selection.probe_base",
                        lambda base, out, problems: probes[int(out.parent.name.removeprefix("seed"))])
    repro.run_repro(str(tmp_path), seeds=(0, 1, 2), steps=2, methods=["SCoRe"], band=BaseBand())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == [0, 3, 2] and sorted(saved["per_seed"]["SCoRe"]) == ["0", "2", "3"]
    assert [t["seed"] for t in saved["base_selection"]["tries"]] == [0, 1, 3, 2]
    assert saved["base_selection"]["tries"][1]["why"] == ["Delta +0.4 outside -5..-1"]
    assert {c["out"].parent.name for c in recorder} == {"seed0", "seed2", "seed3"}  # nothing trained on seed 1
    assert "rejected: seed 1 (Delta +0.4 outside -5..-1)" in (tmp_path / "results.md").read_text()
    with pytest.raises(repro.ScoreError, match="--base-band chooses a base per seed"):
        repro.run_repro(str(tmp_path), seeds=(0,), base_per_seed=False, band=BaseBand())


def test_repro_takes_stage_one_steps_from_the_recipe_unless_told(tmp_path, recorder, monkeypatch):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text("bench: toy\nmax_steps: 4\nstage1:\n  max_steps: 6\n")
    monkeypatch.setattr(repro, "recipe_path", lambda name: str(recipe))
    repro.run_repro(str(tmp_path / "a"), seeds=(0,), base_dir=str(tmp_path / "base"), methods=("SCoRe", "STaR"))
    by_run = {c["out"].name: c["overrides"]["max_steps"] for c in recorder}
    assert by_run == {"stage1": 6, "stage2": 4, "star": 5}  # STaR: two rounds of (6 + 4) / 2
    recorder.clear()  # --max-steps alone: that many in each stage, whatever the recipe's sections say
    repro.run_repro(str(tmp_path / "b"), seeds=(0,), base_dir=str(tmp_path / "base"), steps=3, methods=("SCoRe",))
    assert {c["out"].name: c["overrides"]["max_steps"] for c in recorder} == {"stage1": 3, "stage2": 3}


def test_repro_trains_each_rl_method_at_its_own_learning_rate_and_says_so(tmp_path, recorder, monkeypatch):
    """A rate chosen for SCoRe's Stage II must not be one its ablations never had: each RL method takes
    its own (Stage II's, or its one stage's), Stage I and the SFT methods keep the recipe's."""
    recipe = tmp_path / "toy.yaml"
    recipe.write_text("bench: toy\nlearning_rate: 1.0e-4\nstage2:\n  learning_rate: 3.0e-5\n")
    monkeypatch.setattr(repro, "recipe_path", lambda name: str(recipe))
    monkeypatch.setattr(repro, "METHOD_LEARNING_RATES", {"single-turn RL": 7e-5, "Stage II only": 6e-5})
    rates = {"SCoRe": 2.5e-5, "SCoRe (alpha=0)": 5e-5, "single-turn RL": 1e-4}  # over the defaults
    repro.run_repro(str(tmp_path), seeds=(0,), base_dir=str(tmp_path / "base"), steps=2, learning_rates=rates)
    by_run = {c["out"].name: c["overrides"] for c in recorder}
    assert by_run["stage2"]["learning_rate"] == 2.5e-5 and by_run["stage2-alpha0"]["learning_rate"] == 5e-5
    assert by_run["single-turn"]["learning_rate"] == 1e-4 and by_run["stage2-only"]["learning_rate"] == 6e-5
    assert all("learning_rate" not in by_run[n] for n in ("stage1", "pair-sft", "star", "stage1-star"))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["learning_rates"] == {"single-turn RL": 1e-4, "Stage II only": 6e-5, "SCoRe (alpha=0)": 5e-5,
                                       "SCoRe": 2.5e-5}
    assert ("Learning rates (Stage II's, or the one stage's; Stage I's is the recipe's): single-turn RL 0.0001, "
            "Stage II only 6e-05, SCoRe (alpha=0) 5e-05, SCoRe 2.5e-05.") in (tmp_path / "results.md").read_text()
    recorder.clear()  # none asked for and no default for SCoRe: no override, the recipe's Stage II rate, said so
    repro.run_repro(str(tmp_path / "plain"), seeds=(0,), base_dir=str(tmp_path / "base"), steps=2,
                    methods=("base", "SCoRe"))
    assert all("learning_rate" not in c["overrides"] for c in recorder)
    assert json.loads((tmp_path / "plain" / "results.json").read_text())["learning_rates"] == {"SCoRe": 3e-5}
    assert "Stage I's is the recipe's): SCoRe 3e-05.\n" in (tmp_path / "plain" / "results.md").read_text()
    with pytest.raises(repro.ScoreError, match="'Pair-SFT', which is not an RL method"):
        repro.run_repro(str(tmp_path / "x"), seeds=(0,), base_dir=str(tmp_path / "base"),
                        learning_rates={"Pair-SFT": 1e-4})


def test_a_run_made_with_other_settings_is_refused_not_reused(tmp_path, monkeypatch):
    """repro and demo reuse finished runs; one trained at another learning rate (or seed, alpha, ...)
    must not stand in for the run asked for, nor be resumed with new settings."""
    trained: list = []
    monkeypatch.setattr(demo, "run_stage", lambda req, callbacks=None: trained.append(req))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("bench: toy\nlearning_rate: 1.0e-4\nreport_to: none\nlogging_steps: 5\n")
    out = tmp_path / "stage2"
    out.mkdir()
    config = {"seed": 0, "max_steps": 40, "learning_rate": 1e-4, "alpha": 10.0, "report_to": []}
    record = {"stage": 2, "finished": True, "config": config}
    (out / "score_run.json").write_text(json.dumps(record))
    same = {"seed": 0, "max_steps": 40, "learning_rate": 0.0001}
    assert demo.ensure_stage(2, out, recipe=str(recipe), overrides=same) == out and not trained
    with pytest.raises(demo.ScoreError, match=r"trained with learning_rate 0.0001 \(asked for 2.5e-05\): remove it"):
        demo.ensure_stage(2, out, recipe=str(recipe), overrides={**same, "learning_rate": 2.5e-5})
    record["finished"] = False  # a started run is not resumed with another alpha either
    (out / "score_run.json").write_text(json.dumps(record))
    with pytest.raises(demo.ScoreError, match=r"alpha 10.0 \(asked for 0.0\)"):
        demo.ensure_stage(2, out, recipe=str(recipe), overrides={**same, "alpha": 0.0})
    assert not trained
    demo.ensure_stage(2, out, recipe=str(recipe), overrides=same)  # same settings: resumed
    assert len(trained) == 1 and trained[0].resume
    # the recipe counts as well as the overrides: a rate changed there is refused too (report_to is not compared)
    record["finished"] = True
    (out / "score_run.json").write_text(json.dumps(record))
    recipe.write_text("bench: toy\nlearning_rate: 2.5e-5\nreport_to: none\n")
    with pytest.raises(demo.ScoreError, match=r"learning_rate 0.0001 \(asked for 2.5e-05\)"):
        demo.ensure_stage(2, out, recipe=str(recipe), overrides={"seed": 0})
    recipe.write_text("bench: toy\nlearning_rate: 1.0e-4\nreport_to: tensorboard\n")
    assert demo.ensure_stage(2, out, recipe=str(recipe), overrides={"seed": 0}) == out and len(trained) == 1


def test_a_finished_sft_baseline_made_with_other_settings_is_refused(tmp_path, monkeypatch):
    trained: list = []
    monkeypatch.setattr("score_cli.sft.run_sft", lambda req, callbacks=None: trained.append(req))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("bench: toy\nlearning_rate: 1.0e-4\nalpha: 10.0\nstage2:\n  learning_rate: 2.5e-5\n")
    out = tmp_path / "star"
    out.mkdir()
    config = {"method": "star", "seed": 0, "max_steps": 60, "rounds": 2, "learning_rate": 1e-4}
    (out / "score_run.json").write_text(json.dumps({"stage": "sft", "finished": True, "config": config}))
    overrides = {"seed": 0, "max_steps": 60, "rounds": 2}  # alpha and the stage2 section: not SFT's, not compared
    assert repro.ensure_sft(out, recipe=str(recipe), method="star", overrides=overrides) == out and not trained
    with pytest.raises(repro.ScoreError, match=r"max_steps 60 \(asked for 40\)"):
        repro.ensure_sft(out, recipe=str(recipe), method="star", overrides={**overrides, "max_steps": 40})
    with pytest.raises(repro.ScoreError, match=r"method star \(asked for pair\)"):
        repro.ensure_sft(out, recipe=str(recipe), method="pair", overrides=overrides)


def test_settings_the_config_resolves_compare_as_resolved(tmp_path, monkeypatch):
    """A single-turn run records base_attempt_share 0 whatever the recipe's (the config drops it):
    that is the same setting, not another, so repro reuses the run."""
    monkeypatch.setattr(demo, "run_stage", lambda req, callbacks=None: pytest.fail("a finished run was retrained"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("bench: toy\nbase_attempt_share: 0.5\nlearning_rate: 1.0e-4\n")
    out = tmp_path / "single-turn"
    out.mkdir()
    config = {"single_turn": True, "base_attempt_share": 0.0, "learning_rate": 1e-4, "seed": 0}
    (out / "score_run.json").write_text(json.dumps({"stage": 2, "finished": True, "config": config}))
    assert demo.ensure_stage(2, out, recipe=str(recipe), overrides={"seed": 0, "single_turn": True}) == out
    with pytest.raises(demo.ScoreError, match=r"base_attempt_share 0.0 \(asked for 0.5\)"):  # not single-turn
        demo.ensure_stage(2, out, recipe=str(recipe), overrides={"seed": 0})
