"""Every shipped recipe holds only known keys and resolves to a valid SCoReConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from score_cli.train import DATA_KEYS, build_config, load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
GPU_ONLY = ("bf16", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_resolves(path, tmp_path):
    recipe = load_recipe(str(path))
    kwargs = {k: v for k, v in recipe.items() if k not in DATA_KEYS and k not in GPU_ONLY}
    for stage in (1, 2):
        cfg = build_config(stage, kwargs, str(tmp_path), ref_model="base")
        assert cfg.beta == max(cfg.beta1, cfg.beta2) and cfg.max_completion_length == cfg.max_attempt_length
    assert recipe.get("bench") or recipe.get("data")


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"math_qwen2.5-math-1.5b.yaml", "code_qwen2.5-coder-1.5b.yaml"} <= names


def test_a_stage_section_overrides_the_top_level_in_that_stage_only(tmp_path):
    from score_cli.errors import ScoreError
    from score_cli.repro import recipe_steps

    path = tmp_path / "r.yaml"
    path.write_text("bench: toy\nmax_steps: 40\nbeta2: 1.0\nstage1:\n  max_steps: 80\nstage2:\n  alpha: 5\n")
    one, two, sft = load_recipe(str(path), 1), load_recipe(str(path), 2), load_recipe(str(path))
    assert (one["max_steps"], two["max_steps"], sft["max_steps"]) == (80, 40, 40)
    assert "alpha" not in one and two["alpha"] == 5.0 and "alpha" not in sft
    assert not {"stage1", "stage2"} & (set(one) | set(two) | set(sft))
    assert recipe_steps(str(path)) == (80, 40)
    for bad, message in (("stage1: 80\n", "stage1 must be a mapping"),
                         ("stage2:\n  bench: toy\n", "stage2 holds bench"),
                         ("stage1:\n  max_step: 80\n", "stage1 holds max_step")):
        path.write_text("bench: toy\nmax_steps: 40\n" + bad)
        with pytest.raises(ScoreError, match=message):
            load_recipe(str(path), 1)
