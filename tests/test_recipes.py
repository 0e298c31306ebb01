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
