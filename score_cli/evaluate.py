"""`score eval`: attempt 1, the self-correction instruction, attempt 2 (... attempt N), graded per
problem and summarised with the paper's metrics.

Results are written as they come: `samples.jsonl` is rewritten atomically after every chunk of
problems, so an interrupted evaluation resumes (`resume=True`) where it stopped. A resumed run
may select more problems (a larger `limit`: the rows done are kept and the rest evaluated) but not
fewer: a `limit` that leaves out rows already done is refused, so nothing evaluated is dropped.
`metrics.json` describes exactly the rows of `samples.jsonl`: it is removed while rows are being
added and written, with the rows in problem order, when the run ends.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from score_cli import __version__
from score_cli.errors import ScoreError
from score_cli.files import atomic_write_json, atomic_write_jsonl, check_output_is_dir, read_jsonl
from score_cli.metrics import compute_metrics, summary_row
from score_cli.rollout import Decoding, HFGenerator, first_attempt_ids, instruction_ids, prompt_text, run_attempts
from score_cli.tasks import Problem, PromptSpec, Task, apply_prompt, load_task

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.json"
SETTINGS_FILE = "eval_settings.json"


@dataclass
class EvalConfig:
    """Everything that defines an evaluation run (saved, and compared on --resume)."""

    model: str
    bench: str | None = "math"
    data: str | None = None
    question_field: str = "problem"
    answer_field: str = "answer"
    split: str = "test"
    limit: int | None = None
    turns: int = 2
    samples: int = 1
    decoding: Decoding = field(default_factory=Decoding)
    backend: str = "transformers"
    device: str = "auto"
    dtype: str = "auto"
    output_dir: str = "runs/eval"
    resume: bool = False
    chunk_size: int = 0  # problems per write; 0 = 8 batches' worth
    reuse_cache: bool = True  # transformers: attempt k+1 continues attempt k's KV cache (same results)
    prompt: PromptSpec = field(default_factory=PromptSpec)  # attempt-1 prompt and instruction (part of identity)

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        d = asdict(self)
        for k in ("resume", "output_dir", "limit", "chunk_size", "device", "reuse_cache"):
            d.pop(k)
        d["decoding"].pop("batch_size")
        return d


@dataclass
class Progress:
    """Callbacks the CLI turns into a progress bar; the library never prints."""

    start: Callable[[int], None] = lambda total: None
    tokens: Callable[[int], None] = lambda n: None
    problems: Callable[[int], None] = lambda n: None


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]
    summary: dict[str, float]
    output_dir: Path
    rows: list[dict]
    record: dict[str, Any]


def check_output_dir(cfg: EvalConfig) -> list[dict]:
    """Refuse to overwrite another run's results; on resume, return the rows already done."""
    out = Path(cfg.output_dir)
    check_output_is_dir(out)
    settings_path, samples_path = out / SETTINGS_FILE, out / SAMPLES_FILE
    has_results = samples_path.exists() or (out / METRICS_FILE).exists()
    if not has_results:
        return []
    if not cfg.resume:
        raise ScoreError(
            f"output directory {out} already holds evaluation results: pass --resume to continue that run, "
            "or choose another --output-dir"
        )
    if settings_path.exists():
        import json

        try:
            previous = json.loads(settings_path.read_text(encoding="utf-8"))
        except ValueError:
            raise ScoreError(f"{settings_path} is corrupt: choose another --output-dir (or delete the file to "
                             "resume regardless of the settings)") from None
        if not isinstance(previous, dict):
            raise ScoreError(f"{settings_path} is corrupt: choose another --output-dir")
        mine = _jsonable(cfg.identity())
        defaults = _jsonable(EvalConfig(model=cfg.model).identity())  # keys a run of an older score lacks
        diff = sorted(k for k in set(previous) | set(mine) if previous.get(k, defaults.get(k)) != mine.get(k))
        if diff:
            raise ScoreError(
                f"output directory {out} holds a run with other settings ({', '.join(diff)}): "
                "resume with the same settings, or choose another --output-dir"
            )
    return read_jsonl(samples_path, what="samples file") if samples_path.exists() else []


def check_resumed_rows(cfg: EvalConfig, done_rows: list[dict], everything: list[Problem],
                       selected: list[Problem]) -> None:
    """A resumed run may select more problems than the run it continues, not fewer: refuse a
    `limit` (or data) that leaves out rows already done, saying which `--limit` keeps them."""
    chosen = {p.id for p in selected}
    left_out = [r.get("id") for r in done_rows if r.get("id") not in chosen]
    if not left_out:
        return
    out, position = cfg.output_dir, {p.id: i for i, p in enumerate(everything)}
    if all(i in position for i in left_out):
        need = max(position[i] for i in left_out) + 1
        raise ScoreError(
            f"output directory {out} holds {len(done_rows)} evaluated problems, {len(left_out)} of them beyond "
            f"--limit {cfg.limit}: resume with --limit {need} or more (or without --limit) to keep them, "
            "or choose another --output-dir"
        )
    raise ScoreError(
        f"output directory {out} holds results for problems this data does not have (e.g. id {left_out[0]!r}): "
        "resume with the data it evaluated, or choose another --output-dir"
    )


def _jsonable(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d, default=str))


def validate(cfg: EvalConfig) -> None:
    if cfg.turns < 1:
        raise ScoreError(f"--turns must be at least 1, got {cfg.turns}")
    if cfg.samples < 1:
        raise ScoreError(f"--samples must be at least 1, got {cfg.samples}")
    if cfg.samples > 1 and cfg.decoding.greedy:
        raise ScoreError("--samples > 1 with greedy decoding gives identical chains: pass --temperature 1.0")
    if cfg.limit is not None and cfg.limit < 1:
        raise ScoreError(f"--limit must be at least 1, got {cfg.limit}")
    if cfg.decoding.temperature < 0:
        raise ScoreError(f"--temperature must be >= 0, got {cfg.decoding.temperature}: pass 0 for greedy decoding "
                         "(as in the paper) or e.g. 1.0 to sample")
    if cfg.decoding.batch_size < 1 or cfg.decoding.max_new_tokens < 1:
        raise ScoreError("--batch-size and --max-new-tokens must be at least 1")
    if not 0 < cfg.decoding.top_p <= 1:
        raise ScoreError(f"--top-p must be in (0, 1], got {cfg.decoding.top_p}")
    if cfg.backend not in ("transformers", "vllm"):
        raise ScoreError(f"unknown --backend '{cfg.backend}': use transformers or vllm")
    cfg.prompt.check()


def evaluate(
    cfg: EvalConfig, progress: Progress | None = None, *, model=None, tokenizer=None, generator=None
) -> EvalResult:
    """Run (or resume) an evaluation and write samples.jsonl and metrics.json to cfg.output_dir.

    `model`/`tokenizer` skip loading `cfg.model`; `generator` replaces generation (tests script it).
    """
    dist = Distributed()
    progress = progress if progress is not None and dist.is_main else Progress()
    validate(cfg)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if model is None and tokenizer is None:
        from score_cli.models import check_model_source

        check_model_source(cfg.model)  # one line, before anything is loaded or written
    task, everything = load_task(
        cfg.bench, data=cfg.data, question_field=cfg.question_field, answer_field=cfg.answer_field,
        split=cfg.split, seed=cfg.decoding.seed,
    )
    task = apply_prompt(task, cfg.prompt)
    problems = everything[: cfg.limit] if cfg.limit is not None else everything
    done_rows = check_output_dir(cfg)
    check_resumed_rows(cfg, done_rows, everything, problems)
    done_ids = {r["id"] for r in done_rows}
    todo = [p for p in problems if p.id not in done_ids]
    out = Path(cfg.output_dir)

    # Load before writing anything: a model that fails to load leaves no output directory behind.
    if tokenizer is None:
        from score_cli.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    example = prompt_text(tokenizer, task, problems[0])  # a template that cannot render it: one line, now
    warn_if_trained_with_other_prompt(cfg)
    if generator is None:
        if model is None and cfg.backend == "transformers":
            from score_cli.models import load_causal_lm

            model = load_causal_lm(cfg.model, device=dist.device(cfg.device), dtype=cfg.dtype)
        generator = make_generator(cfg, model, tokenizer, progress)

    dist.wait()  # every process has read the output directory before the first one writes to it
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / SETTINGS_FILE, cfg.identity())
        if todo:  # rows are about to be added: no metrics.json until they all are
            (out / METRICS_FILE).unlink(missing_ok=True)

    progress.start(len(problems))
    progress.problems(len(problems) - len(todo))
    rows = list(done_rows)
    chunk = cfg.chunk_size or cfg.decoding.batch_size * 8
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        mine = part[dist.rank :: dist.world]  # with several processes, each takes every world-th problem
        torch.manual_seed(cfg.decoding.seed * 1_000_003 + len(rows) * dist.world + dist.rank)
        rows += dist.gather(rollout_rows(task, mine, tokenizer, generator, turns=cfg.turns, samples=cfg.samples))
        if dist.is_main:
            atomic_write_jsonl(out / SAMPLES_FILE, rows)
        progress.problems(len(part))
    elapsed = time.perf_counter() - t0

    order = {p.id: i for i, p in enumerate(problems)}
    rows = sorted((r for r in rows if r["id"] in order), key=lambda r: order[r["id"]])
    metrics = metrics_from_rows(rows, seed=cfg.decoding.seed)
    if dist.is_main:
        atomic_write_jsonl(out / SAMPLES_FILE, rows)  # in problem order: what metrics.json describes
    record = {
        "summary": summary_row(metrics, cfg.turns),
        "metrics": metrics,
        "model": cfg.model,
        "benchmark": cfg.bench if cfg.data is None else f"data:{cfg.data}",
        "task": task.name,
        "prompt": {**cfg.prompt.record(), "example": example},
        "instruction": task.instruction,
        "n_problems": len(rows),
        "limit": cfg.limit,
        "turns": cfg.turns,
        "samples": cfg.samples,
        "decoding": asdict(cfg.decoding),
        "backend": cfg.backend,
        "seed": cfg.decoding.seed,
        "throughput": {
            "seconds": elapsed,
            "generated_tokens": getattr(generator, "generated_tokens", None),
            "tokens_per_second": (getattr(generator, "generated_tokens", 0) or 0) / elapsed if elapsed else None,
        },
        "versions": versions(),
        "model_revision": _model_revision(cfg.model),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(sys.argv),
        "cwd": os.getcwd(),
    }
    if dist.is_main:
        atomic_write_json(out / METRICS_FILE, record)
    dist.wait()
    return EvalResult(metrics, record["summary"], out, rows, record)


def _model_revision(name: str) -> dict[str, Any]:
    from score_cli.models import model_revision

    try:
        return model_revision(name)
    except OSError as e:  # an unreadable weight file must not cost the results
        return {"error": f"{type(e).__name__}: {e}"[:200]}


def warn_if_trained_with_other_prompt(cfg: EvalConfig) -> None:
    """A score run trained with other prompt settings than this evaluation uses: say so, once."""
    from score_cli.models import read_run_record

    try:
        record = read_run_record(cfg.model)
    except ScoreError:
        return
    conf = (record or {}).get("config") or {}
    if not conf:
        return
    trained = PromptSpec(preset=conf.get("prompt") or "paper", template=conf.get("prompt_template"),
                         system_prompt=conf.get("system_prompt"), instruction=conf.get("instruction"))
    if trained != cfg.prompt:
        flags = {"--prompt": trained.preset if trained.preset != "paper" else None,
                 "--prompt-template": trained.template, "--system-prompt": trained.system_prompt,
                 "--instruction": trained.instruction}
        shown = " ".join(f"{k} {shlex.quote(v)}" for k, v in flags.items() if v is not None) or "the defaults"
        log.warning("%s was trained with other prompt settings than this evaluation's: to evaluate it as it was "
                    "trained, pass %s", cfg.model, shown)


class Distributed:
    """Several evaluation processes (`accelerate launch`): shard problems, gather rows on all."""

    def __init__(self):
        import os

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.state = None
        if self.world > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.world = self.state.num_processes
        self.rank = self.state.process_index if self.state else 0
        self.is_main = self.rank == 0

    def device(self, requested: str) -> str:
        return str(self.state.device) if self.state is not None and requested == "auto" else requested

    def gather(self, rows: list[dict]) -> list[dict]:
        if self.state is None:
            return rows
        from accelerate.utils import gather_object

        return gather_object(rows)

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def make_generator(cfg: EvalConfig, model, tokenizer, progress: Progress):
    if cfg.backend == "vllm":
        from score_cli.vllm_backend import VLLMGenerator

        return VLLMGenerator(cfg.model, tokenizer, cfg.decoding, on_batch=lambda n, k: progress.tokens(k))
    return HFGenerator(model, tokenizer, cfg.decoding, on_batch=lambda n, k: progress.tokens(k),
                       reuse_cache=cfg.reuse_cache)


def rollout_rows(
    task: Task, problems: list[Problem], tokenizer, generator, *, turns: int, samples: int
) -> list[dict]:
    """Roll out `samples` chains of `turns` attempts per problem, grade them, one row per problem."""
    firsts = [first_attempt_ids(tokenizer, task, p) for p in problems for _ in range(samples)]
    rollouts = run_attempts(
        generator, firsts, turns=turns, instruction=instruction_ids(tokenizer, task.instruction),
        eos_id=tokenizer.eos_token_id, group_size=samples,
    )
    texts = [[tokenizer.decode(o, skip_special_tokens=True) for o in r.outputs] for r in rollouts]
    flat_problems = [p for p in problems for _ in range(samples) for _ in range(turns)]
    grades = task.grade(flat_problems, [t for chain in texts for t in chain])
    rows = []
    for i, p in enumerate(problems):
        chains = []
        for k in range(samples):
            j = i * samples + k
            chains.append([
                {"text": texts[j][t], "answer": grades[j * turns + t].answer, "correct": grades[j * turns + t].correct,
                 "tokens": len(rollouts[j].outputs[t])}
                for t in range(turns)
            ])
        rows.append({"id": p.id, "question": p.question, "gold": p.answer, "chains": chains})
    return rows


def metrics_from_rows(rows: list[dict], *, seed: int = 0) -> dict[str, dict[str, float]]:
    """Metrics of samples.jsonl rows (so a finished or resumed file can be re-scored)."""
    if not rows:
        raise ScoreError("no evaluated problems to score: the dataset or --limit selected none")
    pick = lambda key: [[[a[key] for a in chain] for chain in r["chains"]] for r in rows]  # noqa: E731
    return compute_metrics(pick("correct"), pick("answer"), pick("text"), seed=seed)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"score": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "accelerate", "math-verify", "vllm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
