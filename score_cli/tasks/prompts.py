"""Prompt settings (`--prompt`, `--prompt-template`, `--system-prompt`, `--instruction`): the same in
`score eval` and both stages. `apply_prompt` wraps a task so that it is asked another way; its
grading stays the task's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from score_cli.errors import ScoreError
from score_cli.tasks.base import BOXED_INSTRUCTION, BOXED_REQUEST, MATH_INSTRUCTION, Grade, Problem, Task

PROMPT_PRESETS = ("paper", "raw", "boxed")


@dataclass(frozen=True)
class PromptSpec:
    """How attempt 1 is asked and the next attempt requested (`--prompt`, `--prompt-template`,
    `--system-prompt`, `--instruction`). The default is each task's own: the paper's MATH prompt and
    instruction for math, the toy and code tasks' prompts for those.

    - preset `paper`: the task's prompt; `raw`: the question alone as the user turn; `boxed`: the
      question, then "Please reason step by step, and put your final answer within \\boxed{}." (math
      only; attempt 2's default instruction asks for a boxed answer too);
    - template: the user turn, with `{question}` replaced by the question (instead of a preset);
    - system_prompt: a system turn before it (plain text before the prompt without a chat template);
    - instruction: the self-correction instruction (default: the task's, or the boxed one).
    """

    preset: str = "paper"
    template: str | None = None
    system_prompt: str | None = None
    instruction: str | None = None

    def __post_init__(self):
        for name in ("template", "system_prompt", "instruction"):  # "" means unset, as on the command line
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)

    def problem(self) -> str | None:
        """What is wrong with these settings (a one-line message naming the option), or None."""
        if self.preset not in PROMPT_PRESETS:
            return f"unknown --prompt '{self.preset}': use {', '.join(PROMPT_PRESETS)} (or --prompt-template TEXT)"
        if self.template is not None:
            if self.preset != "paper":
                return (f"--prompt {self.preset} and --prompt-template both set the prompt: pass one of them "
                        "(a template replaces the preset)")
            if "{question}" not in self.template:
                return ("--prompt-template has no {question}: write where the question goes, e.g. "
                        "'{question}\\nPut your final answer within \\boxed{}.'")
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem:
            raise ScoreError(problem)

    def record(self, task: Task | None = None) -> dict[str, Any]:
        """The settings as saved with a run; with `task`, the instruction it resolves to."""
        d = {"preset": self.preset, "template": self.template, "system_prompt": self.system_prompt,
             "instruction": self.instruction}
        if task is not None:
            d["resolved_instruction"] = task.instruction
        return d


def read_text_option(value: str | None, option: str) -> str | None:
    """A text option's value; `@FILE` stands for the contents of FILE (a trailing newline dropped)."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(os.path.expanduser(value[1:]))
    if not path.is_file():
        raise ScoreError(f"{option} {value}: file {path} does not exist: check the path after '@'")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScoreError(f"{option} {value}: {path} is not UTF-8 text: save it as UTF-8") from None
    return text[:-1] if text.endswith("\n") else text


class PromptedTask(Task):
    """A task asked with other prompt settings; grading and everything else is the task's own."""

    def __init__(self, inner: Task, spec: PromptSpec):
        self.inner, self.spec = inner, spec
        self.name = inner.name
        boxed_default = spec.preset == "boxed" and inner.instruction == MATH_INSTRUCTION
        self.instruction = spec.instruction or (BOXED_INSTRUCTION if boxed_default else inner.instruction)

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        spec = self.spec
        if spec.template is not None:
            turns = [{"role": "user", "content": spec.template.replace("{question}", problem.question)}]
        elif spec.preset == "raw":
            turns = [{"role": "user", "content": problem.question}]
        elif spec.preset == "boxed":
            turns = [{"role": "user", "content": f"{problem.question}\n{BOXED_REQUEST}"}]
        else:
            turns = self.inner.messages(problem)
        if spec.system_prompt is not None:
            turns = [{"role": "system", "content": spec.system_prompt}, *[t for t in turns if t["role"] != "system"]]
        return turns

    def grade(self, problems: Sequence[Problem], outputs: Sequence[str]) -> list[Grade]:
        return self.inner.grade(problems, outputs)

    def compared_part(self, text: str) -> str:
        return self.inner.compared_part(text)

    def __getattr__(self, name: str):  # anything else (e.g. a code task's sandbox settings) is the task's
        if name in ("inner", "spec"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def apply_prompt(task: Task, spec: PromptSpec | None) -> Task:
    """`task` asked with `spec`'s prompt settings (the task itself under the default settings)."""
    if isinstance(task, PromptedTask):
        task = task.inner
    if spec is None or spec == PromptSpec():
        return task
    spec.check()
    if spec.preset == "boxed" and task.name in ("humaneval", "mbpp"):
        raise ScoreError(f"--prompt boxed asks for a \\boxed{{}} answer, which a code task ({task.name}) does not "
                         "grade: use --prompt paper or raw, or --prompt-template")
    return PromptedTask(task, spec)
