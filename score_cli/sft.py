"""The paper's supervised self-correction baselines, on TRL's `SFTTrainer`: Pair-SFT and STaR.

SCoRe's argument rests on why these fail (SFT on correction traces either learns from first attempts
unlike the model's own, or learns to leave a first attempt as it is); `score sft` lets a user rerun
that comparison on their own model, with the prompts, instruction and attempt construction of
everything else (`score_cli.rollout`):

- **Pair-SFT** (`--method pair`): sample first attempts from the model at the training problems
  (`samples_per_problem` each), pair every wrong one with a right one at the same problem (the right
  ones taken in turn; offline there are no human corrections, so the right answers are the model's
  own samples), and fine-tune on [x, y1, instruction, y2] with the loss on y2 only. One round.
- **STaR** (`--method star`, the paper's D+ variant): sample two-attempt traces and fine-tune on
  every trace whose second attempt is right (wrong->right corrections and right->right keeps),
  with the loss on y2 only. With `rounds` > 1 the next round samples from the model the previous one
  trained, and, as in STaR, fine-tunes the *initial* model again on the new traces.
- Started from a Stage I output (`--from-checkpoint`), STaR is the paper's ablation "STaR instead of
  REINFORCE in Stage II".

Round k's files are in OUTPUT/round-k: `samples.jsonl` (every sampled attempt, token ids, texts and
grades, appended as each batch is graded, so an interrupted round resumes), `sft_data.jsonl` (the
training sequences and their loss masks, written before training) and the trainer's checkpoints;
the round's model is saved there when its training ends. The last round's model is the output
directory's own, with a run record (`score_run.json`, stage "sft") naming the base model, so it
loads in `score eval` and `score stage2 --from-checkpoint` like a stage output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from score_cli import __version__
from score_cli.errors import ScoreError
from score_cli.files import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl
from score_cli.rollout import next_attempt_input
from score_cli.tasks import Problem, PromptSpec
from score_cli.train import TrainRequest

log = logging.getLogger(__name__)

METHODS = ("pair", "star")
STAGE = "sft"  # the run record's "stage"
SAMPLES_FILE = "samples.jsonl"
DATA_FILE = "sft_data.jsonl"
ROUND_DONE = "round.json"  # written last in a round's directory: its model is complete


@dataclass
class SCoReSFTConfig(SFTConfig):
    """TRL's SFTConfig plus how the self-correction data is sampled. The loss is on the second
    attempt only (`completion_only_loss`), the sequences are built by score, never truncated."""

    method: str = field(default="star", metadata={"help": "pair (Pair-SFT) or star (STaR, D+ traces)."})
    samples_per_problem: int = field(default=4, metadata={"help": "Sampled attempts (pair) or traces (star) per "
                                                                     "problem."})
    rounds: int = field(default=1, metadata={"help": "STaR rounds (each samples from the last round's model)."})
    problems_per_round: int | None = field(default=None, metadata={
        "help": "Training problems sampled per round (a new slice each round); default: all."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    max_attempt_length: int = field(default=512, metadata={"help": "New tokens per attempt."})
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences per generation batch."})
    prompt: str = field(default="paper", metadata={"help": "Attempt-1 prompt preset (as score eval's --prompt)."})
    prompt_template: str | None = None
    system_prompt: str | None = None
    instruction: str | None = None

    def __post_init__(self):
        import torch

        self.completion_only_loss = True
        self.max_length = None  # the sequences are the rollout's, whole
        cuda = torch.cuda.is_available()
        if self.bf16 is None:  # as SCoReConfig: on with a CUDA GPU that has it, off on CPU
            self.bf16 = cuda and torch.cuda.is_bf16_supported() and not self.fp16
        if not cuda:
            self.use_cpu = True
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.samples_per_problem < 1 or self.rounds < 1:
            raise ValueError("samples_per_problem and rounds must be at least 1")
        if self.method == "pair" and self.rounds != 1:
            raise ValueError("Pair-SFT has one round (its pairs come from the initial model): drop --rounds")
        if self.method == "pair" and self.samples_per_problem < 2:
            raise ValueError("Pair-SFT pairs a wrong and a right sample of one problem: set samples_per_problem >= 2")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (the attempts are sampled), got {self.temperature}")

    def prompt_spec(self) -> PromptSpec:
        return PromptSpec(preset=self.prompt, template=self.prompt_template, system_prompt=self.system_prompt,
                          instruction=self.instruction)


# ---------------------------------------------------------------------------------------------
# The training data: which attempts are paired or kept, and the sequences the loss sees
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One sampled attempt: its tokens (as generated, EOS included when the model stopped), text and grade."""

    ids: tuple[int, ...]
    text: str
    correct: bool


def pair_examples(first_attempts: dict[str, Sequence[Attempt]]) -> list[tuple[str, Attempt, Attempt]]:
    """Pair-SFT's (problem id, y1, y2): every wrong first attempt, paired with a right attempt at the
    same problem, the right ones taken in turn (so each is used about equally). Problems with no
    right sample, or no wrong one, give no pair."""
    pairs = []
    for pid, attempts in first_attempts.items():
        right = [a for a in attempts if a.correct]
        wrong = [a for a in attempts if not a.correct]
        if right:
            pairs += [(pid, y1, right[i % len(right)]) for i, y1 in enumerate(wrong)]
    return pairs


def star_examples(traces: dict[str, Sequence[tuple[Attempt, Attempt]]]) -> list[tuple[str, Attempt, Attempt]]:
    """STaR's D+ (problem id, y1, y2): every two-attempt trace whose second attempt is right."""
    return [(pid, y1, y2) for pid, chains in traces.items() for y1, y2 in chains if y2.correct]


def sft_sequence(x1: Sequence[int], y1: Sequence[int], y2: Sequence[int], *, eos_id: int,
                 instruction: Sequence[int]) -> dict[str, list[int]]:
    """x1 + y1 (+EOS) + instruction + y2 + EOS, built as the rollout builds attempt 2's input, with
    the loss on y2 and its EOS only (`completion_mask`, as TRL's SFTTrainer takes it)."""
    prefix = next_attempt_input(x1, y1, eos_id=eos_id, instruction=instruction)
    target = list(y2) if y2 and y2[-1] == eos_id else [*y2, eos_id]
    return {"input_ids": [*prefix, *target], "completion_mask": [0] * len(prefix) + [1] * len(target)}


def build_examples(method: str, rows: list[dict], *, firsts: dict[str, list[int]], eos_id: int,
                   instruction: Sequence[int]) -> tuple[list[dict], dict[str, Any]]:
    """The SFT sequences of one round's sampled rows (see `sample_round`), and counts that say where
    they came from. A round that yields none is a one-line error saying why and what to change."""
    if method == "pair":
        attempts = {r["id"]: [_attempt(c[0]) for c in r["chains"]] for r in rows}
        chosen = pair_examples(attempts)
        flat = [a for v in attempts.values() for a in v]
        stats = {"first_attempts": len(flat), "wrong": sum(not a.correct for a in flat),
                 "problems_with_both": sum(1 for v in attempts.values()
                                           if any(a.correct for a in v) and not all(a.correct for a in v))}
        if not chosen:
            why = ("every first attempt was right: nothing to correct" if stats["wrong"] == 0 else
                   "no problem with a wrong first attempt has a right one to pair it with")
            raise ScoreError(f"Pair-SFT found no pairs in {len(flat)} sampled first attempts ({why}): use harder "
                             "problems, more --samples-per-problem, or another --temperature")
    else:
        traces = {r["id"]: [(_attempt(c[0]), _attempt(c[1])) for c in r["chains"]] for r in rows}
        chosen = star_examples(traces)
        flat = [t for v in traces.values() for t in v]
        stats = {"traces": len(flat), "wrong_to_right": sum(not a.correct and b.correct for a, b in flat),
                 "right_to_right": sum(a.correct and b.correct for a, b in flat)}
        if not chosen:
            raise ScoreError(f"STaR kept no traces: none of {len(flat)} sampled second attempts is right; use "
                             "easier problems, more --samples-per-problem, or a stronger model")
    stats["examples"] = len(chosen)
    examples = [{"id": pid, **sft_sequence(firsts[pid], y1.ids, y2.ids, eos_id=eos_id, instruction=instruction),
                 "y1": y1.text, "y2": y2.text, "y1_correct": y1.correct}
                for pid, y1, y2 in chosen]
    return examples, stats


def _attempt(saved: dict) -> Attempt:
    return Attempt(ids=tuple(saved["ids"]), text=saved["text"], correct=bool(saved["correct"]))


# ---------------------------------------------------------------------------------------------
# Sampling (the shared rollout), with per-batch saving
# ---------------------------------------------------------------------------------------------


def round_problems(problems: Sequence[Problem], per_round: int | None, round_index: int, seed: int) -> list[Problem]:
    """Round k's problems: a seeded shuffle of the training problems cut into slices of `per_round`
    (wrapping around), so successive rounds see new problems, as RL steps do."""
    if per_round is None or per_round >= len(problems):
        return list(problems)
    order = list(problems)
    random.Random(f"sft/{seed}").shuffle(order)
    start = (round_index * per_round) % len(order)
    return (order + order)[start : start + per_round]


def hf_generator(model_name: str, tokenizer, config: SCoReSFTConfig):
    """The sampler of a round: transformers' generate on the model, as `score eval` samples."""
    from score_cli.models import load_causal_lm
    from score_cli.rollout import Decoding, HFGenerator

    decoding = Decoding(max_new_tokens=config.max_attempt_length, temperature=config.temperature,
                        top_p=config.top_p, batch_size=config.generation_batch_size)
    return HFGenerator(load_causal_lm(model_name), tokenizer, decoding)


def sample_round(generator, tokenizer, task, problems: list[Problem], config: SCoReSFTConfig, path: Path,
                 *, on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """Sample `samples_per_problem` chains of one (pair) or two (star) attempts per problem with the
    rollout evaluation uses, grade them, and append each batch's rows to `path` as it is graded:
    rows already there are kept (an interrupted round resumes). Returns the rows in problem order."""
    import torch

    from score_cli.rollout import first_attempt_ids, instruction_ids, run_attempts

    turns = 1 if config.method == "pair" else 2
    n = config.samples_per_problem
    done = {r["id"]: r for r in read_jsonl(path, what="samples file", torn_tail_ok=True)} if path.exists() else {}
    todo = [p for p in problems if p.id not in done]
    if done and todo:
        log.info("%s: %d problems sampled, %d to go", path, len(done), len(todo))
    instruction = instruction_ids(tokenizer, task.instruction)
    per_batch = max(1, config.generation_batch_size // n)
    for start in range(0, len(todo), per_batch):
        batch = todo[start : start + per_batch]
        torch.manual_seed(_batch_seed(config.seed, path.parent.name, batch[0].id))
        firsts = [first_attempt_ids(tokenizer, task, p) for p in batch for _ in range(n)]
        rollouts = run_attempts(generator, firsts, turns=turns, instruction=instruction,
                                eos_id=tokenizer.eos_token_id, group_size=n)
        texts = [[tokenizer.decode(o, skip_special_tokens=True) for o in r.outputs] for r in rollouts]
        grades = task.grade([p for p in batch for _ in range(n) for _ in range(turns)],
                            [t for chain in texts for t in chain])
        rows = []
        for i, p in enumerate(batch):
            chains = [[{"ids": rollouts[j].outputs[t], "text": texts[j][t], "correct": grades[j * turns + t].correct}
                       for t in range(turns)] for j in range(i * n, (i + 1) * n)]
            rows.append({"id": p.id, "question": p.question, "gold": p.answer, "chains": chains})
        append_jsonl(path, rows)
        done.update({r["id"]: r for r in rows})
        if on_batch is not None:
            on_batch(len(done), len(problems))
    return [done[p.id] for p in problems]


def _batch_seed(*parts: object) -> int:
    """A seed for one generation batch that is the same in every process and on resume."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "big")


# ---------------------------------------------------------------------------------------------
# A run: rounds of sample -> select -> fine-tune
# ---------------------------------------------------------------------------------------------


@dataclass
class SFTRequest(TrainRequest):
    """One `score sft` invocation, before the recipe is merged in: a stage's request (`model`, or
    `from_checkpoint` a Stage I output; data; output) plus the method."""

    stage: int | str = STAGE
    method: str | None = None


def sft_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(SCoReSFTConfig) if f.init}


def resolve(req: SFTRequest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]:
    """(data settings, config kwargs, lineage, recipe keys left unused): defaults < recipe < options.

    One recipe serves the stages and SFT: keys only RL uses (alpha, beta1, num_generations, ...) are
    left unused (and listed in the run record), as are the `stage1:` / `stage2:` sections, which SFT
    does not read."""
    from score_cli import train

    recipe, sections = train.read_recipe(req.recipe)
    data = train.data_settings(recipe, req)
    recipe = {k: v for k, v in recipe.items() if k not in (*train.DATA_KEYS, train.FROM_CHECKPOINT)}
    ours = sft_fields() - {"output_dir"}
    unused = sorted([k for k in recipe if k not in ours] + [train.STAGE_SECTIONS[n] for n in sections])
    kwargs = {k: v for k, v in recipe.items() if k in ours}
    kwargs.update(req.overrides)
    if req.method is not None:
        kwargs["method"] = req.method
    train.read_prompt_files(kwargs)
    if req.from_checkpoint and req.model:
        raise ScoreError("pass either --model or --from-checkpoint (a Stage I output), not both")
    if req.from_checkpoint:
        from score_cli.models import stage1_output_record

        record = stage1_output_record(req.from_checkpoint)
        lineage = {"base_model": record["base_model"], "policy_init": req.from_checkpoint}
        data["model"] = req.from_checkpoint
        train.follow_stage1(record, data, kwargs, unset={k for k, v in data.items() if v is None})
    else:
        if not data.get("model"):
            raise ScoreError("no model given: pass --model HUB_ID_OR_DIR (or --from-checkpoint a Stage I output)")
        from score_cli.models import check_model_source

        check_model_source(data["model"], hub=False)
        lineage = {"base_model": data["model"], "policy_init": data["model"]}
    train.fill_data_defaults(data)
    return data, kwargs, lineage, unused


def build_config(kwargs: dict[str, Any], output_dir: str) -> SCoReSFTConfig:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated.*")
            return SCoReSFTConfig(output_dir=output_dir, **kwargs)
    except (ValueError, TypeError) as e:
        raise ScoreError(f"invalid SFT config: {str(e).splitlines()[0]}") from None


def run_sft(req: SFTRequest, *, callbacks: list | None = None, on_round: Callable[[str], None] = lambda s: None,
            make_generator: Callable[..., Any] = hf_generator) -> Path:
    """Run Pair-SFT or STaR as requested (resuming what is there with `resume`); returns the output
    directory. `make_generator(model_name, tokenizer, config)` builds each round's sampler."""
    from score_cli import train
    from score_cli.models import load_tokenizer, read_run_record
    from score_cli.rollout import first_attempt_ids, instruction_ids, prompt_text
    from score_cli.tasks import apply_prompt
    from score_cli.tasks.registry import load_task

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ScoreError("score sft samples its data in one process: run it without accelerate launch (with "
                         "several GPUs visible, its fine-tuning still uses them all)")
    data, kwargs, lineage, unused = resolve(req)
    method = kwargs.get("method", SCoReSFTConfig.method)
    out = Path(req.output_dir or os.path.join("runs", f"{method}-{Path(str(lineage['policy_init']).rstrip('/')).name}"))
    previous = read_run_record(out) if out.exists() else None
    if previous is not None and not req.resume:
        raise ScoreError(f"output directory {out} already holds a run: pass --resume to continue it, or choose "
                         "another --output-dir")
    if previous is not None and previous.get("finished"):
        raise ScoreError(f"the run in {out} already finished: nothing to resume; choose another --output-dir")
    config = build_config(kwargs, str(out))
    task, problems = load_task(data["bench"], data=data["data"], question_field=data["question_field"],
                               answer_field=data["answer_field"], split="train", limit=data["limit"],
                               seed=config.seed)
    tokenizer = load_tokenizer(data["model"])
    prompted = apply_prompt(task, config.prompt_spec())
    record = {
        "score_version": __version__, "stage": STAGE, "method": config.method,
        "base_model": lineage["base_model"], "policy_init": lineage["policy_init"],
        "data": {k: data[k] for k in ("bench", "data", "question_field", "answer_field", "limit")},
        "task": task.name, "prompt": {**config.prompt_spec().record(prompted),
                                      "example": prompt_text(tokenizer, prompted, problems[0])},
        "config": json.loads(config.to_json_string()), "unused_recipe_keys": unused, "rounds": [],
        "finished": False, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": shlex.join(sys.argv), "cwd": os.getcwd(),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / train.RUN_RECORD, record)
    if unused:
        log.info("recipe keys SFT does not use: %s", ", ".join(unused))

    instruction = instruction_ids(tokenizer, prompted.instruction)
    sampler = data["model"]
    for k in range(config.rounds):
        d = out / f"round-{k + 1}"
        d.mkdir(exist_ok=True)
        if (d / ROUND_DONE).exists():
            on_round(f"round {k + 1}: reusing {d}")
            record["rounds"].append(json.loads((d / ROUND_DONE).read_text()))
            sampler = str(d)
            continue
        batch = round_problems(problems, config.problems_per_round, k, config.seed)
        if not (d / DATA_FILE).exists():
            on_round(f"round {k + 1}: sampling {config.samples_per_problem} x {len(batch)} problems from {sampler}")
            rows = sample_round(make_generator(sampler, tokenizer, config), tokenizer, prompted, batch, config,
                                d / SAMPLES_FILE)
            firsts = {p.id: first_attempt_ids(tokenizer, prompted, p) for p in batch}
            examples, stats = build_examples(config.method, rows, firsts=firsts, eos_id=tokenizer.eos_token_id,
                                             instruction=instruction)
            atomic_write_json(d / "data_stats.json", stats)
            atomic_write_jsonl(d / DATA_FILE, examples)  # last: its presence marks the round's data complete
        examples = read_jsonl(d / DATA_FILE, what="SFT data file")
        stats = json.loads((d / "data_stats.json").read_text())
        on_round(f"round {k + 1}: fine-tuning {lineage['policy_init']} on {len(examples)} sequences")
        _fine_tune(lineage["policy_init"], examples, build_config(kwargs, str(d)), tokenizer, callbacks)
        done = {"round": k + 1, "problems": len(batch), "sampled_from": sampler, **stats,
                "steps": config.max_steps}
        atomic_write_json(d / ROUND_DONE, done)
        record["rounds"].append(done)
        atomic_write_json(out / train.RUN_RECORD, record)
        sampler = str(d)
    _copy_model(Path(sampler), out, tokenizer)
    record.update(finished=True, ended=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(out / train.RUN_RECORD, record)
    return out


def _fine_tune(init: str, examples: list[dict], args: SCoReSFTConfig, tokenizer, callbacks: list | None) -> None:
    """TRL's SFTTrainer on the prebuilt sequences (loss on y2 only), resuming the round's last
    checkpoint; the model is saved in the round's directory (`args.output_dir`)."""
    import warnings

    from datasets import Dataset
    from trl import SFTTrainer

    from score_cli.train import last_complete_checkpoint

    d = Path(args.output_dir)
    dataset = Dataset.from_list([{"input_ids": e["input_ids"], "completion_mask": e["completion_mask"]}
                                 for e in examples])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        trainer = SFTTrainer(model=init, args=args, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=callbacks)
        if callbacks:
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(PrinterCallback)
        trainer.train(resume_from_checkpoint=last_complete_checkpoint(d))
    trainer.save_model(str(d))
    tokenizer.save_pretrained(str(d))


def _copy_model(src: Path, out: Path, tokenizer) -> None:
    """The last round's model as the output directory's own (weights, config, tokenizer)."""
    from score_cli.models import load_causal_lm

    load_causal_lm(str(src), device="cpu", dtype="auto").save_pretrained(out)
    tokenizer.save_pretrained(out)
