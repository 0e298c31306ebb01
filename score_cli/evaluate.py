"""`score eval`: attempt 1, the self-correction instruction, attempt 2 (... attempt N), graded per
problem and summarised with the paper's metrics.

Results are written as they come: the problems of every generated batch are appended to
`samples.jsonl` (and synced) as soon as they are graded, so Ctrl-C loses at most one batch and an
interrupted evaluation resumes (`resume=True`) where it stopped. A resumed run
may select more problems (a larger `limit`: the rows done are kept and the rest evaluated) but not
fewer: a `limit` that leaves out rows already done is refused, so nothing evaluated is dropped.
`metrics.json` describes exactly the rows of `samples.jsonl`: it is removed while rows are being
added and written, with the rows in problem order, when the run ends.

Several benchmarks in one call (`evaluate_benches`) share one loaded model; each has its own
output directory. Nothing here imports torch until a model is loaded, so `score eval` checks its
arguments in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shlex
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from score_cli.environment import command_line
from score_cli.errors import ScoreError
from score_cli.files import append_jsonl, atomic_write_json, atomic_write_jsonl, check_output_is_dir, read_jsonl
from score_cli.metrics import compute_metrics, pass_at_k_metrics, summary_row
from score_cli.rollout import Decoding, HFGenerator, first_attempt_ids, instruction_ids, prompt_text, run_attempts
from score_cli.tasks import Problem, PromptSpec, Task, apply_prompt
from score_cli.tasks.registry import check_bench, load_task

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.json"
SETTINGS_FILE = "eval_settings.json"
CODE_BENCHES = ("humaneval", "mbpp")

# Tokens per attempt when --max-new-tokens is not given: what a full answer of the task needs. A
# toy solution is ~60-80 characters (the demo evaluates with 160); a HumanEval/MBPP function rarely
# needs 512; a GSM8K solution is a short paragraph; MATH (and CHAMP, and --data) solutions can be
# long. Each is clipped to the model's context (see `fit_to_context`).
DEFAULT_MAX_NEW_TOKENS = {"toy": 160, "humaneval": 512, "mbpp": 512, "gsm8k": 512, "math": 1024, "champ": 1024}


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
    chunk_size: int = 0  # problems per write; 0 = one generated batch's worth
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
    """Callbacks the CLI turns into a progress bar with an ETA; the library never prints.

    `start(total)` once; `problems(n)` first with the problems resumed from disk, then after every
    generated batch with the problems it finished (and saved); `tokens(n)` after every `generate` call.
    """

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


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during generation, with what is saved: `saved` of `total` problems in `output_dir`
    (a KeyboardInterrupt still, so whatever catches those catches it)."""

    def __init__(self, saved: int, total: int, output_dir: Path, bench: str):
        super().__init__(f"{saved} of {total} problems saved in {output_dir}")
        self.saved, self.total, self.output_dir, self.bench = saved, total, output_dir, bench


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
    # A run killed while appending leaves a last line cut short: that problem is simply redone.
    return read_jsonl(samples_path, what="samples file", torn_tail_ok=True) if samples_path.exists() else []


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
    """Every setting that can be checked without a model or data: one line, before anything heavy."""
    if cfg.data is None:
        check_bench(cfg.bench or "math")
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


def parse_benches(benches: str, data: str | None) -> list[str]:
    """`--bench a,b` as a list of checked names (one, for --data: its task)."""
    names = [b.strip() for b in (benches or "math").split(",") if b.strip()] or ["math"]
    if data is not None and len(names) > 1:
        raise ScoreError(f"--data evaluates one file, but --bench names {len(names)} benchmarks: pass one --bench "
                         "(its task grades the file) or drop --data")
    if len(set(names)) < len(names):
        raise ScoreError(f"--bench names a benchmark twice ({benches}): name each once")
    if data is None:
        for name in names:
            check_bench(name)
    return names


def bench_label(cfg: EvalConfig) -> str:
    """What an evaluation is called in messages and tables: its benchmark, or "data" for --data."""
    return "data" if cfg.data else cfg.bench or "math"


def default_max_new_tokens(bench: str | None, data: str | None = None) -> int:
    """Tokens per attempt a full answer of the task needs (`DEFAULT_MAX_NEW_TOKENS`); math for --data."""
    return DEFAULT_MAX_NEW_TOKENS.get(bench or "math", DEFAULT_MAX_NEW_TOKENS["math"])


def plan_evals(
    model: str, bench: str = "math", *, data: str | None = None, output_dir: str | None = None,
    max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0, batch_size: int | None = None,
    seed: int = 0, **settings: Any,
) -> list[EvalConfig]:
    """The evaluations `score eval` runs, one per benchmark of `bench` ("a,b"), checked without a model.

    Each benchmark gets its own output directory: `output_dir` for one benchmark (default
    runs/eval-BENCH-MODEL), `output_dir`/BENCH for several. `max_new_tokens` None is the task's own;
    `batch_size` None is 32, or 256 with vLLM, which schedules what it gets itself (and a batch is
    also what is saved at once, so a small one would hold it back).
    """
    if batch_size is None:
        batch_size = 256 if settings.get("backend") == "vllm" else 32
    names = parse_benches(bench, data)
    model_name = Path(model.rstrip("/")).name
    cfgs = []
    for name in names:
        if output_dir is None:
            out = os.path.join("runs", f"eval-{'data' if data else name}-{model_name}")
        else:
            out = output_dir if len(names) == 1 else os.path.join(output_dir, name)
        decoding = Decoding(max_new_tokens=max_new_tokens or default_max_new_tokens(name, data),
                            temperature=temperature, top_p=top_p, batch_size=batch_size, seed=seed)
        cfg = EvalConfig(model=model, bench=name, data=data, decoding=decoding, output_dir=out, **settings)
        validate(cfg)
        cfgs.append(cfg)
    return cfgs


def context_length(model) -> int | None:
    """The longest sequence the model was trained for (max_position_embeddings), if its config says."""
    config = getattr(model, "config", model)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_to_context(max_new_tokens: int, *, context: int, longest_prompt: int, turns: int,
                   instruction_tokens: int) -> int:
    """The largest budget per attempt, at most `max_new_tokens`, with which every attempt of the longest
    prompt fits in the model's context: prompt + turns x budget + (turns - 1) x (EOS + instruction)
    <= context (attempt k+1 reads attempts 1..k). Past its context a model's positions are untrained."""
    room = context - longest_prompt - (turns - 1) * (instruction_tokens + 1)
    budget = room // turns
    if budget < 1:
        raise ScoreError(
            f"the longest prompt ({longest_prompt} tokens) and {turns} attempts leave no room for an answer in the "
            f"model's context ({context} tokens): use fewer --turns, --limit the problems, or a shorter prompt")
    return min(max_new_tokens, budget)


def evaluate(
    cfg: EvalConfig, progress: Progress | None = None, *, model=None, tokenizer=None, generator=None
) -> EvalResult:
    """Run (or resume) an evaluation and write samples.jsonl and metrics.json to cfg.output_dir.

    `model`/`tokenizer` skip loading `cfg.model`; `generator` replaces generation (tests script it).
    """
    (result,) = evaluate_benches([cfg], lambda _: nullcontext(progress or Progress()), model=model,
                                 tokenizer=tokenizer, generator=generator)
    return result


@dataclass
class _Planned:
    """One evaluation after everything but the model was checked: its task, problems and resumed rows."""

    cfg: EvalConfig
    task: Task
    problems: list[Problem]
    done_rows: list[dict]
    todo: list[Problem]


def _plan(cfg: EvalConfig) -> _Planned:
    task, everything = load_task(
        cfg.bench, data=cfg.data, question_field=cfg.question_field, answer_field=cfg.answer_field,
        split=cfg.split, seed=cfg.decoding.seed,
    )
    task = apply_prompt(task, cfg.prompt)
    problems = everything[: cfg.limit] if cfg.limit is not None else everything
    done_rows = check_output_dir(cfg)
    check_resumed_rows(cfg, done_rows, everything, problems)
    done_ids = {r["id"] for r in done_rows}
    return _Planned(cfg, task, problems, done_rows, [p for p in problems if p.id not in done_ids])


def evaluate_benches(
    cfgs: list[EvalConfig],
    progress: Callable[[EvalConfig], AbstractContextManager[Progress]] | None = None,
    *, model=None, tokenizer=None, generator=None,
) -> list[EvalResult]:
    """Evaluate one model on several benchmarks (`plan_evals`), loading it once.

    Every benchmark's data and output directory is checked before the model is loaded, and the
    model is loaded before anything is written. `progress(cfg)` gives each one's callbacks.
    """
    if not cfgs:
        return []
    if len({c.model for c in cfgs}) > 1 or len({c.backend for c in cfgs}) > 1:
        raise ValueError("evaluate_benches takes one model and backend")
    dist = Distributed()
    for cfg in cfgs:
        validate(cfg)
    first = cfgs[0]
    if model is None and tokenizer is None:
        from score_cli.models import check_model_source

        check_model_source(first.model)  # one line, before anything is loaded or written
    planned = [_plan(cfg) for cfg in cfgs]

    # Load before writing anything: a model that fails to load leaves no output directory behind.
    if tokenizer is None:
        from score_cli.models import load_tokenizer

        tokenizer = load_tokenizer(first.model)
    examples = [prompt_text(tokenizer, p.task, p.problems[0]) for p in planned]  # a template that fails: now
    warn_if_trained_with_other_prompt(first)
    context = None
    if generator is None:
        if model is None and first.backend == "transformers":
            from score_cli.models import load_causal_lm

            model = load_causal_lm(first.model, device=dist.device(first.device), dtype=first.dtype)
        context = context_length(model) if model is not None else _config_context(first.model)
    elif model is not None:
        context = context_length(model)

    decodings = [_fitted_decoding(p, tokenizer, context) for p in planned]  # all fit, before any is run

    results = []
    shared, own = generator, generator is None
    for plan, example, decoding in zip(planned, examples, decodings, strict=True):
        cfg = plan.cfg
        with progress(cfg) if progress is not None else nullcontext(Progress()) as callbacks:
            callbacks = callbacks if dist.is_main else Progress()
            if shared is None or own and cfg.backend == "transformers":  # cheap: one per benchmark
                gen = make_generator(cfg, model, tokenizer, callbacks, decoding)
                shared = gen if cfg.backend == "vllm" else None  # a vLLM engine is started once
            else:
                gen = shared
                if hasattr(gen, "decoding"):
                    gen.decoding = decoding
                if hasattr(gen, "on_batch"):
                    gen.on_batch = lambda n, k, cb=callbacks: cb.tokens(k)
            results.append(_run(plan, callbacks, tokenizer, gen, dist, example, decoding, model))
    return results


def _config_context(name: str) -> int | None:
    """The context length in a model's config.json (a vLLM run loads no transformers model)."""
    try:
        from transformers import AutoConfig

        return context_length(AutoConfig.from_pretrained(os.path.expanduser(name)))
    except Exception:  # noqa: BLE001 - unknown here means: leave --max-new-tokens as it is
        return None


def _fitted_decoding(plan: _Planned, tokenizer, context: int | None) -> Decoding:
    """cfg.decoding with max_new_tokens clipped to what fits in the model's context (a warning says so)."""
    cfg = plan.cfg
    if context is None:
        return cfg.decoding
    longest = max(len(first_attempt_ids(tokenizer, plan.task, p)) for p in plan.problems)
    instruction = len(instruction_ids(tokenizer, plan.task.instruction))
    try:
        fitted = fit_to_context(cfg.decoding.max_new_tokens, context=context, longest_prompt=longest,
                                turns=cfg.turns, instruction_tokens=instruction)
    except ScoreError as e:
        raise ScoreError(f"{bench_label(cfg)}: {e}") from None
    if fitted == cfg.decoding.max_new_tokens:
        return cfg.decoding
    log.warning("%s: --max-new-tokens %d does not fit the model's context (%d tokens) after the longest prompt "
                "(%d tokens) with %d attempts: generating at most %d tokens per attempt", bench_label(cfg),
                cfg.decoding.max_new_tokens, context, longest, cfg.turns, fitted)
    return dataclasses.replace(cfg.decoding, max_new_tokens=fitted)


def _run(plan: _Planned, progress: Progress, tokenizer, generator, dist: Distributed, example: str,
         decoding: Decoding, model) -> EvalResult:
    """Generate, grade and save the problems left to do, batch by batch; then score and record."""
    cfg, task, problems, out = plan.cfg, plan.task, plan.problems, Path(plan.cfg.output_dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    dist.wait()  # every process has read the output directory before the first one writes to it
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / SETTINGS_FILE, cfg.identity())
        if plan.todo:  # rows are about to be added: no metrics.json until they all are
            (out / METRICS_FILE).unlink(missing_ok=True)
            if (out / SAMPLES_FILE).exists():
                atomic_write_jsonl(out / SAMPLES_FILE, plan.done_rows)  # drops a line cut short, if any

    progress.start(len(problems))
    progress.problems(len(problems) - len(plan.todo))
    rows = list(plan.done_rows)
    # One generated batch per step (per process): what Ctrl-C can lose, and how often the bar moves.
    chunk = cfg.chunk_size or max(1, decoding.batch_size // cfg.samples) * dist.world
    tokens_before = getattr(generator, "generated_tokens", 0) or 0
    t0 = time.perf_counter()
    try:
        for start in range(0, len(plan.todo), chunk):
            part = plan.todo[start : start + chunk]
            mine = part[dist.rank :: dist.world]  # with several processes, each takes every world-th problem
            _seed(cfg.decoding.seed * 1_000_003 + len(rows) * dist.world + dist.rank)
            new = dist.gather(rollout_rows(task, mine, tokenizer, generator, turns=cfg.turns, samples=cfg.samples))
            if dist.is_main:
                append_jsonl(out / SAMPLES_FILE, new)
            rows += new
            progress.problems(len(part))
    except KeyboardInterrupt:
        raise EvalInterrupted(len(rows), len(problems), out, bench_label(cfg)) from None
    elapsed = time.perf_counter() - t0
    generated = (getattr(generator, "generated_tokens", 0) or 0) - tokens_before

    order = {p.id: i for i, p in enumerate(problems)}
    rows = sorted((r for r in rows if r["id"] in order), key=lambda r: order[r["id"]])
    metrics = metrics_from_rows(rows, seed=cfg.decoding.seed, compared=task.compared_part)
    if task.name in CODE_BENCHES:
        metrics.update(pass_at_k_metrics(_pick(rows, "correct"), seed=cfg.decoding.seed))
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
        "decoding": asdict(decoding),
        "max_new_tokens_asked": cfg.decoding.max_new_tokens,
        "backend": cfg.backend,
        "seed": cfg.decoding.seed,
        "throughput": {
            "seconds": elapsed,
            "generated_tokens": generated if hasattr(generator, "generated_tokens") else None,
            "tokens_per_second": generated / elapsed if elapsed else None,
        },
        "versions": versions(),
        "model_revision": _model_revision(cfg.model),
        "data_sha256": _file_sha256(cfg.data) if cfg.data else None,
        "device": str(getattr(model, "device", "")) or None,
        "dtype": str(getattr(model, "dtype", "")).removeprefix("torch.") or None,
        "platform": platform.platform(),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command_line(),
        "cwd": os.getcwd(),
    }
    if dist.is_main:
        atomic_write_json(out / METRICS_FILE, record)
    dist.wait()
    return EvalResult(metrics, record["summary"], out, rows, record)


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _file_sha256(path: str) -> str:
    """What identifies the problems of a --data file (its content, not its name)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
            import torch
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


def make_generator(cfg: EvalConfig, model, tokenizer, progress: Progress, decoding: Decoding | None = None):
    decoding = decoding or cfg.decoding
    if cfg.backend == "vllm":
        from score_cli.vllm_backend import VLLMGenerator

        return VLLMGenerator(cfg.model, tokenizer, decoding, on_batch=lambda n, k: progress.tokens(k))
    return HFGenerator(model, tokenizer, decoding, on_batch=lambda n, k: progress.tokens(k),
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
            chains.append([_attempt(texts[j][t], grades[j * turns + t], len(rollouts[j].outputs[t]))
                           for t in range(turns)])
        rows.append({"id": p.id, "question": p.question, "gold": p.answer, "chains": chains})
    return rows


def _attempt(text: str, grade, tokens: int) -> dict[str, Any]:
    """One attempt as saved; a code task's grade also says why a program failed (`reason`)."""
    row = {"text": text, "answer": grade.answer, "correct": grade.correct, "tokens": tokens}
    if hasattr(grade, "reason"):
        row["reason"] = grade.reason
    return row


def _pick(rows: list[dict], key: str) -> list[list[list[Any]]]:
    return [[[a[key] for a in chain] for chain in r["chains"]] for r in rows]


def metrics_from_rows(rows: list[dict], *, seed: int = 0,
                      compared: Callable[[str], str] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of samples.jsonl rows (so a finished or resumed file can be re-scored); `compared` is
    the task's `compared_part`, the part of each attempt the edit metrics compare."""
    if not rows:
        raise ScoreError("no evaluated problems to score: the dataset or --limit selected none")
    texts = _pick(rows, "text")
    if compared is not None:
        texts = [[[compared(t) for t in chain] for chain in row] for row in texts]
    return compute_metrics(_pick(rows, "correct"), _pick(rows, "answer"), texts, seed=seed)


def versions() -> dict[str, str]:
    """score's and the main packages' versions (recorded with every evaluation)."""
    from score_cli.environment import package_versions

    return package_versions()
