"""The stage1/stage2 options come from SCoReConfig's fields, through a cache that spares `--help`
the import of torch/trl/transformers, and never from a cache that no longer matches them."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from score_cli import config_options
from score_cli.config_options import DERIVED_FIELDS, FieldSpec, field_specs, live_field_specs, parse_value
from score_cli.trainers import SCoReConfig


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_every_settable_field_is_described_with_its_kind():
    specs = {s.name: s for s in live_field_specs()}
    settable = {f.name for f in dataclasses.fields(SCoReConfig) if f.init and not f.name.startswith("_")}
    assert set(specs) == settable - set(DERIVED_FIELDS)
    assert (specs["alpha"].kind, specs["alpha"].default) == ("float", "10.0")
    assert (specs["max_steps"].kind, specs["num_generations"].kind) == ("int", "int")
    assert specs["bf16"].kind == "bool"
    assert specs["lora_target_modules"].is_list and specs["lora_target_modules"].kind == "str"
    assert specs["model_init_kwargs"].is_dict
    assert specs["baseline"].help.startswith("Reward baseline per prompt")


def test_the_cache_is_written_once_then_read(cache_home, monkeypatch):
    first = field_specs()
    files = list((cache_home / "score").glob("config-options-*.json"))
    assert len(files) == 1

    def no_live_read():
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(config_options, "live_field_specs", no_live_read)
    assert field_specs() == first


def test_a_corrupt_cache_is_replaced(cache_home):
    field_specs()
    (path,) = (cache_home / "score").glob("config-options-*.json")
    path.write_text('[{"name": "alpha"}]')  # a field without its kind: not a FieldSpec
    assert field_specs() == live_field_specs()
    assert [FieldSpec(**row) for row in json.loads(path.read_text())] == live_field_specs()  # rewritten


def test_another_trl_version_gets_its_own_cache(cache_home, monkeypatch):
    before = config_options._cache_path()
    real = metadata.version
    monkeypatch.setattr(config_options.metadata, "version", lambda p: "9.9.9" if p == "trl" else real(p))
    assert config_options._cache_path() != before


def test_option_text_becomes_the_fields_value():
    specs = {s.name: s for s in live_field_specs()}
    modules = specs["lora_target_modules"]
    assert parse_value(modules, "q_proj, v_proj") == ["q_proj", "v_proj"]
    assert parse_value(modules, "[q_proj, v_proj]") == ["q_proj", "v_proj"]
    assert parse_value(modules, "q_proj") == "q_proj"
    assert parse_value(specs["model_init_kwargs"], "{dtype: bfloat16}") == {"dtype": "bfloat16"}
    assert parse_value(specs["instruction"], "Check it, then fix it.") == "Check it, then fix it."
    assert parse_value(specs["alpha"], 5.0) == 5.0


def test_help_does_not_import_torch_once_cached(cache_home):
    field_specs()  # warm the cache, as the first `score` run does
    code = ("import sys, score_cli.cli; "
            "print(sorted(m for m in ('torch', 'trl', 'transformers', 'peft') if m in sys.modules))")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "score_cli", "stage1", "--help"], env=env, capture_output=True,
                            text=True)
    assert helped.returncode == 0
    assert "--alpha" in helped.stdout and "--num-generations" in helped.stdout
