"""`--help` reads well: the stage commands show SCoRe's options first, in panels, and hide TRL's and
transformers' long tail behind --help-all; no help text loses words to rich markup."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from score_cli.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def help_text(*args: str, env: dict | None = None) -> str:
    r = runner.invoke(app, list(args), env={"COLUMNS": "100", **(env or {})})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_stage_help_shows_score_options_first_and_hides_the_long_tail(stage):
    short, full = help_text(stage, "--help"), help_text(stage, "--help-all")
    for text in (short, full):
        assert "--beta1" in text and "--beta2" in text and "--alpha" in text
        assert not re.search(r"--beta(?![\w-])", text)  # TRL's beta is SCoRe's beta1/beta2, not an option
    panels = [short.index(p) for p in ("SCoRe", "Prompt", "Generation", "LoRA", "Training (TRL/transformers)")]
    assert panels == sorted(panels)  # SCoRe's own first, then generation, then the inherited training options
    assert "--learning-rate" in short and "--num-generations" in short and "--help-all" in short
    assert "--adam-beta1" not in short and "--adam-beta1" in full  # the long tail
    assert "More TRL/transformers options" in full and "--help-all" in short.split("SCoRe")[0]
    assert len(short.splitlines()) * 3 < len(full.splitlines()), (len(short.splitlines()), len(full.splitlines()))
    assert "more TRL/transformers options" in short and "more TRL/transformers options" not in full
    assert help_text(stage, "--help") == short  # --help-all changed nothing for the next --help


def test_score_help_all_shows_everything(tmp_path):
    """SCORE_HELP_ALL=1 (read when `score` starts) makes --help list every option."""
    env = {**os.environ, "SCORE_HELP_ALL": "1", "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "score_cli", "stage1", "--help"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "--adam-beta1" in p.stdout and "More TRL/transformers options" in p.stdout


def test_hidden_options_still_work(tiny_model_dir):
    r = runner.invoke(app, ["stage1", "--model", str(tiny_model_dir), "--bench", "toy", "--adam-beta1", "0.8",
                            "--dry-run"])
    assert r.exit_code == 0 and "adam_beta1: 0.8" in r.output, r.output


@pytest.mark.parametrize("command", ["eval", "report", "compare", "export", "demo", "repro", "env", "stage1",
                                     "stage2"])
def test_no_help_text_loses_words_to_markup(command):
    text = help_text(command, "--help")
    assert not re.search(r"[\w)\]] [.,;:](\s|$)", text), text  # e.g. "go [default: X]." shown as "go ."
    if command == "report":
        assert "[default: RUN_DIR]" in text
