"""Shared fixtures: a character tokenizer, a tiny random causal LM on disk, and a scripted policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny models: one thread is as fast, and immune to CPU contention


def write_jsonl(path: Path, rows) -> Path:
    """Write `rows` as JSON Lines, the format of every --data file; returns `path`."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def jsonl():
    """`jsonl(path, rows)`: write a JSON Lines file (see `write_jsonl`)."""
    return write_jsonl


@pytest.fixture
def doubling_data(tmp_path):
    """`doubling_data(n)`: a --data file of n problems "What is i+i?" (answer 2i), a task a tiny model trains on."""
    def make(n: int, name: str = "train.jsonl") -> Path:
        return write_jsonl(tmp_path / name, [{"problem": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(n)])
    return make


@pytest.fixture(scope="session")
def char_tokenizer():
    from score_cli.toy_model import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer):
    """A randomly initialised 2-layer Llama with the character tokenizer, saved like a hub model."""
    from score_cli.toy_model import tiny_causal_lm

    path = tmp_path_factory.mktemp("tiny-model")
    model = tiny_causal_lm(char_tokenizer, hidden=32, layers=2, heads=2, seed=0)
    model.save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


class ScriptedGenerator:
    """A policy with fixed attempt texts: `script[question] = [attempt-1 text, attempt-2 text, ...]`,
    or a list of such chains, one per sample (`--samples K`).

    It reads the question and the attempt number (count of instructions) from the input tokens,
    as a real model would see them, so it also checks that attempt k+1's input carries the history.
    """

    def __init__(self, tokenizer, script: dict, instruction: str, fail_after: int | None = None):
        self.tokenizer = tokenizer
        self.script = script
        self.instruction = instruction
        self.fail_after = fail_after  # raise KeyboardInterrupt on this call (to test resuming)
        self.calls: list[list[list[int]]] = []
        self.generated_tokens = 0

    def questions_seen(self, attempt: int = 0) -> list[str]:
        return [self._question(self.tokenizer.decode(ids)) for call in self.calls for ids in call
                if self.tokenizer.decode(ids).count(self.instruction) == attempt]

    def _question(self, text: str) -> str:
        return max((q for q in self.script if q in text), key=len)

    def __call__(self, inputs, *, group_size=1):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append([list(x) for x in inputs])
        outs, seen = [], {}
        for ids in inputs:
            text = self.tokenizer.decode(ids)
            question = self._question(text)
            attempt = text.count(self.instruction)
            chains = self.script[question]
            chain = seen.get(question, 0)
            seen[question] = chain + 1
            reply = chains[chain][attempt] if isinstance(chains[0], list) else chains[attempt]
            out = self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            outs.append(out)
            self.generated_tokens += len(out)
        return outs, None


@pytest.fixture
def scripted():
    return ScriptedGenerator
