"""Tasks: the problems, the attempt-1 prompt, the self-correction instruction and answer checking.

A `Task` knows everything domain-specific (math, code, the toy world); the rollout, trainers and
metrics only see token ids, texts and `Grade`s. The package, from the bottom up:

- `base`: `Problem`, `Grade`, the `Task` interface and the paper's prompt and instructions;
- `prompts`: the prompt settings (`PromptSpec`, `apply_prompt`, `read_text_option`);
- `data`: benchmark rows into `Problem`s (hub datasets, local .jsonl/.parquet files);
- the domains, one module each: `math_task` (`MathTask`; MATH, GSM8K, CHAMP), `code_task`
  (`CodeTask`; HumanEval, MBPP, graded in the sandbox) and `toy_task` (the toy world's problems and
  noisy solver; its base model is built by `score_cli.toy_model`);
- `registry`: `load_task`, which resolves `--bench` / `--data` into a task and its problems.

The domains import `base` (through this package) and the registry imports the domains, so this
package itself offers only `base` and `prompts`: importing it never imports a domain, and a domain
importing it never comes back round to itself. For `load_task`, import `score_cli.tasks.registry`.
"""

from __future__ import annotations

from score_cli.tasks.base import (
    BOXED_INSTRUCTION,
    BOXED_REQUEST,
    CODE_INSTRUCTION,
    MATH_INSTRUCTION,
    MATH_PROMPT,
    Grade,
    Problem,
    Task,
)
from score_cli.tasks.prompts import PROMPT_PRESETS, PromptedTask, PromptSpec, apply_prompt, read_text_option

__all__ = [
    "BOXED_INSTRUCTION",
    "BOXED_REQUEST",
    "CODE_INSTRUCTION",
    "MATH_INSTRUCTION",
    "MATH_PROMPT",
    "PROMPT_PRESETS",
    "Grade",
    "Problem",
    "PromptSpec",
    "PromptedTask",
    "Task",
    "apply_prompt",
    "read_text_option",
]
