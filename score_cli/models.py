"""Loading policies and tokenizers from a hub id or a local directory, with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from score_cli.errors import ScoreError


def looks_like_path(name: str) -> bool:
    """A hub id is 'owner/name' or 'name'; anything else (./x, /x, ~/x, a/b/c) is meant as a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_model_source(name: str) -> None:
    """Fail early, in one line, on a local path that does not hold a saved model."""
    path = Path(os.path.expanduser(name))
    if path.exists():
        if not path.is_dir():
            raise ScoreError(f"model path {name} is a file: pass the directory written by save_pretrained")
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ScoreError(
                f"model directory {name} has no config.json: pass a directory written by save_pretrained "
                "(a score run's output directory, or a downloaded hub snapshot)"
            )
        return
    if looks_like_path(name):
        raise ScoreError(f"model path {name} does not exist: check the path, or pass a hub id like Qwen/Qwen2.5-1.5B")


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise ScoreError(f"unknown dtype '{dtype}': use auto, bf16, fp16 or fp32")
    return table[dtype]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ScoreError(f"--device {device} asked for, but torch sees no CUDA device: use --device cpu")
    return device


def load_tokenizer(name: str):
    """The tokenizer, left-padded for batched generation, with a pad token."""
    from transformers import AutoTokenizer

    check_model_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except OSError as e:
        raise ScoreError(f"could not load a tokenizer for {name} ({_first_line(e)}): check the id or path") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name: str, *, device: str = "auto", dtype: str = "auto"):
    """A causal LM in eval mode; a model of another kind is refused with the fix."""
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model_source(name)
    device = resolve_device(device)
    src = os.path.expanduser(name)
    try:
        config = AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ScoreError(f"could not load model {name} ({_first_line(e)}): check the hub id or local path") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=resolve_dtype(dtype, device))
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise ScoreError(
                f"{name} is not a causal language model (its config is {type(config).__name__}): "
                "pass a decoder-only model such as Qwen2.5 or Llama"
            ) from None
        raise ScoreError(f"could not load model {name} ({_first_line(e)})") from None
    except OSError as e:
        raise ScoreError(f"could not load model weights for {name} ({_first_line(e)}): check the path") from None
    return model.to(device).eval()


def read_run_record(path: str | os.PathLike) -> dict | None:
    """The `score_run.json` a score training run leaves in its output directory, if any."""
    f = Path(os.path.expanduser(path)) / "score_run.json"
    if not f.exists():
        return None
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
    except ValueError:  # bad JSON (e.g. truncated) or not UTF-8
        raise ScoreError(f"{f} is corrupt: re-run the stage that wrote it") from None
    if not isinstance(record, dict):
        raise ScoreError(f"{f} is corrupt (not a JSON object): re-run the stage that wrote it")
    return record


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def export_merged(src: str, out: str) -> Path:
    """Write a LoRA run's adapter merged into its base as a plain model (plus the tokenizer)."""
    from peft import AutoPeftModelForCausalLM

    source = Path(os.path.expanduser(src))
    if not (source / "adapter_config.json").exists():
        raise ScoreError(f"{src} holds no LoRA adapter (adapter_config.json): only LoRA runs need --merge")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise ScoreError(f"{target} is not empty: choose a new --out directory")
    model = AutoPeftModelForCausalLM.from_pretrained(str(source)).merge_and_unload()
    model.save_pretrained(target)
    load_tokenizer(str(source)).save_pretrained(target)
    record = read_run_record(source)
    if record is not None:
        record = {**record, "merged_from": str(source)}
        (target / "score_run.json").write_text(json.dumps(record, indent=2, default=str))
    return target
