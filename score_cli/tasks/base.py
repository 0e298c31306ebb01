"""What a task is: `Problem`, `Grade`, the `Task` interface, and the paper's prompt and instructions.

The bottom of `score_cli.tasks`: it imports nothing of score, and everything that works with tasks
(the domains, the prompt settings, the rollout, the trainers) builds on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Verbatim from the paper's appendix (see SCORE_PAPER.md).
MATH_PROMPT = (
    "You are a math expert. When you respond, respond only with the Solution of the final Problem, "
    "thinking step by step. At the end of the Solution, when you give your final answer, write it in "
    'the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)
MATH_INSTRUCTION = (
    "There might be an error in the solution above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final solution! At the "
    "end of the Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)
CODE_INSTRUCTION = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct Python "
    "program!"
)
# `--prompt boxed`: the form most math-tuned models (Qwen2.5-Math-Instruct, DeepSeek-R1, ...) were
# trained with, asked after the bare question; attempt 2 is asked for the same form.
BOXED_REQUEST = "Please reason step by step, and put your final answer within \\boxed{}."
BOXED_INSTRUCTION = (
    "There might be an error in the solution above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. " + BOXED_REQUEST
)

@dataclass
class Problem:
    """One problem: `answer` is the gold final answer (math) or the test program (code)."""

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Grade:
    """What answer checking made of one attempt: the extracted final answer and whether it is right."""

    answer: str | None
    correct: bool


class Task:
    """A domain: how to prompt attempt 1, which instruction asks for attempt 2, how to grade."""

    name: str = "task"
    instruction: str = MATH_INSTRUCTION

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        """The attempt-1 conversation (rendered with the tokenizer's chat template where it has one)."""
        return [{"role": "user", "content": problem.question}]

    def plain_prompt(self, problem: Problem) -> str:
        """The attempt-1 prompt as plain text, for tokenizers without a chat template."""
        return "\n\n".join(m["content"] for m in self.messages(problem)) + "\n\n"

    def grade(self, problems: Sequence[Problem], outputs: Sequence[str]) -> list[Grade]:
        raise NotImplementedError

    def compared_part(self, text: str) -> str:
        """The part of an attempt compared with the attempt before it (edit ratio, zero edit: did it
        copy?): the whole attempt, unless the task's attempts open with something else (a check)."""
        return text
