"""The vLLM backend is optional: without vLLM, asking for it is one clear line."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from score_cli.cli import app


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_backend_vllm_without_vllm_says_how_to_install(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--backend", "vllm",
                                 "--output-dir", str(tmp_path / "o")])
    assert r.exit_code == 2 and "pip install 'score[vllm]'" in r.output and "Traceback" not in r.output


def test_cpu_install_never_imports_vllm():
    import sys

    import score_cli.cli  # noqa: F401
    import score_cli.evaluate  # noqa: F401
    import score_cli.trainers  # noqa: F401

    assert "vllm" not in sys.modules
