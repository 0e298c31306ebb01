"""The `score` command line: parses options and calls library functions (thin by design)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from score_cli.errors import ScoreError

app = typer.Typer(
    name="score",
    help="SCoRe: train language models to self-correct with multi-turn RL (Kumar et al., 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def user_errors(fn):
    """Turn a ScoreError into one line on stderr and exit code 2; Ctrl-C into exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from score_cli.ui import console

        try:
            return fn(*args, **kwargs)
        except ScoreError as e:
            from rich.markup import escape

            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[bold yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


# ---------------------------------------------------------------------------------------------
# Options shared by eval and the trainers
# ---------------------------------------------------------------------------------------------
Data = Annotated[str | None, typer.Option(help="Local problems file (.jsonl or .parquet) instead of --bench.")]
QuestionField = Annotated[str, typer.Option(help="Field holding the question in --data.")]
AnswerField = Annotated[str, typer.Option(help="Field holding the gold answer in --data.")]
Limit = Annotated[int | None, typer.Option(help="Use only the first N problems.")]
Seed = Annotated[int, typer.Option(help="Random seed (sampling, data order).")]
PROMPT_PANEL = "Prompt (the same options in score stage1 and stage2)"
Prompt = Annotated[str, typer.Option(
    help=r"Attempt-1 prompt: paper (the task's own: the paper's MATH prompt for math), raw (the question alone), "
         r"boxed (the question, then 'Please reason step by step, and put your final answer within \boxed{}.').",
    rich_help_panel=PROMPT_PANEL,
)]
PromptTemplate = Annotated[str | None, typer.Option(
    help="The attempt-1 user turn, with {question} where the question goes (@FILE reads it from FILE); replaces "
         "--prompt.", rich_help_panel=PROMPT_PANEL,
)]
SystemPrompt = Annotated[str | None, typer.Option(
    help="A system turn before the prompt, e.g. your model's own (@FILE reads it from FILE).",
    rich_help_panel=PROMPT_PANEL,
)]
Instruction = Annotated[str | None, typer.Option(
    help=r"The self-correction instruction before attempt k+1 \[default: the task's (the paper's); with --prompt "
         "boxed, the paper's asking for a boxed answer] (@FILE reads it from FILE).", rich_help_panel=PROMPT_PANEL,
)]


def _version(value: bool) -> None:
    if not value:
        return
    from importlib import metadata

    from score_cli import __version__

    parts = []
    for pkg in ("trl", "transformers", "torch"):
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    typer.echo(f"score {__version__}" + (f" ({', '.join(parts)})" if parts else ""))
    raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version (and trl's, transformers', "
        "torch's) and exit.",
    )] = False,
) -> None:
    """SCoRe: train language models to self-correct with multi-turn RL (Kumar et al., 2024)."""


def check_model_early(model: str | None) -> None:
    """A model that cannot be loaded is one line before anything heavy is imported or written."""
    if model:
        from score_cli.models import check_model_source

        check_model_source(model)


def check_stage_args_early(bench: str | None, model: str | None, dry_run: bool) -> None:
    """A stage's mistyped --bench or model path is one line before torch and trl are imported."""
    if bench is not None:
        from score_cli.tasks.registry import check_bench

        check_bench(bench)
    if not dry_run:
        check_model_early(model)


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    from score_cli.ui import console

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command("eval")
@user_errors
def eval_cmd(
    model: Annotated[str, typer.Option(help="Hub id or local directory of a causal LM (e.g. a stage output).")],
    bench: Annotated[str, typer.Option(
        help="Benchmark(s): math (MATH500), gsm8k, champ, toy, humaneval, mbpp; several as a,b (each in its own "
             "output directory); with --data, the task that grades the file.")] = "math",
    data: Data = None,
    question_field: QuestionField = "problem",
    answer_field: AnswerField = "answer",
    split: Annotated[str, typer.Option(help="Split of --bench to evaluate: test or train.")] = "test",
    limit: Limit = None,
    turns: Annotated[int, typer.Option(help="Attempts per problem (attempt k+1 follows the instruction).")] = 2,
    samples: Annotated[int, typer.Option(help="Sampled chains per problem, majority-voted per attempt.")] = 1,
    batch_size: Annotated[int | None, typer.Option(
        help=r"Sequences per generate() call; each batch is saved as soon as it is graded \[default: 32; 256 with "
             "vllm].", show_default=False)] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        help=r"Maximum new tokens per attempt \[default: the task's: toy 160, humaneval/mbpp/gsm8k 512, math, "
             "champ and --data 1024], clipped so that every attempt fits in the model's context.",
        show_default=False)] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy, as in the paper.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold (with --temperature > 0).")] = 1.0,
    seed: Seed = 0,
    backend: Annotated[
        str, typer.Option(help=r"Generation engine: transformers or vllm (pip install score\[vllm]).")
    ] = "transformers",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32.")] = "auto",
    reuse_cache: Annotated[
        bool, typer.Option(help="transformers: attempt k+1 continues attempt k's KV cache instead of re-reading it.")
    ] = True,
    prompt: Prompt = "paper",
    prompt_template: PromptTemplate = None,
    system_prompt: SystemPrompt = None,
    instruction: Instruction = None,
    output_dir: Annotated[str | None, typer.Option(
        help=r"Where samples.jsonl and metrics.json go \[default: runs/eval-BENCH-MODEL; with several benchmarks, "
             "OUTPUT_DIR/BENCH each].")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted run in --output-dir; a larger --limit extends it (done rows are kept), "
             "a smaller one is refused."
    )] = False,
    ci: Annotated[bool, typer.Option("--ci", help="Show each metric's 95% confidence interval in the table.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Evaluate self-correction: Accuracy@t1, @t2, Delta(t1,t2), Delta i->c and c->i, per attempt pair."""
    # Everything checkable without a model comes first, before torch or transformers is imported.
    from score_cli.evaluate import plan_evals
    from score_cli.tasks import PromptSpec, read_text_option

    spec = PromptSpec(preset=prompt, template=read_text_option(prompt_template, "--prompt-template"),
                      system_prompt=read_text_option(system_prompt, "--system-prompt"),
                      instruction=read_text_option(instruction, "--instruction"))
    cfgs = plan_evals(
        model, bench, data=data, output_dir=output_dir, max_new_tokens=max_new_tokens, temperature=temperature,
        top_p=top_p, batch_size=batch_size, seed=seed, question_field=question_field, answer_field=answer_field,
        split=split, limit=limit, turns=turns, samples=samples, backend=backend, device=device, dtype=dtype,
        resume=resume, reuse_cache=reuse_cache, prompt=spec,
    )
    check_model_early(model)

    from score_cli.evaluate import EvalInterrupted, bench_label, evaluate_benches
    from score_cli.ui import console, eval_progress, results_table, stdout

    setup_logging(verbose)
    try:
        results = evaluate_benches(cfgs, lambda c: eval_progress(f"{bench_label(c)} x{turns} attempts"))
    except EvalInterrupted as e:
        from score_cli.environment import command_line

        console.print(f"interrupted: {e.saved} of {e.total} {e.bench} problems are saved in {e.output_dir}; "
                      f"resume with: {command_line(resume=True)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if len(results) == 1:
        title = f"{bench_label(cfgs[0])}: {results[0].record['n_problems']} problems, {turns} attempts"
        rows = [(model, results[0].metrics)]
    else:
        from score_cli.compare import short_names

        title = f"{short_names([model])[0]}: {len(results)} benchmarks, {turns} attempts"
        rows = [(f"{bench_label(c)} ({r.record['n_problems']})", r.metrics)
                for c, r in zip(cfgs, results, strict=True)]
    stdout.print(results_table(title, rows, turns, ci=ci))
    for r in results:
        stdout.print(f"wrote {r.output_dir / 'samples.jsonl'} and {r.output_dir / 'metrics.json'}", highlight=False)


# ---------------------------------------------------------------------------------------------
# Training: every SCoReConfig field is also an option (recipe < option)
# ---------------------------------------------------------------------------------------------
# The stage options by help panel, in the order `--help` shows them: SCoRe's own first, then the
# inherited TRL/transformers options a SCoRe run is usually tuned with. The other ~150 inherited
# options are hidden from `--help` (`--help-all`, or SCORE_HELP_ALL=1, lists them); all of them
# work as options and recipe keys all the same. TRL's `beta` is no option: SCoRe sets it from
# beta1 and beta2 (config_options.DERIVED_FIELDS).
STAGE_PANELS = {
    "SCoRe": ("turns", "alpha", "beta1", "beta2", "beta_hold", "gamma", "baseline", "condition_baseline",
              "base_attempt_share", "single_turn",
              "select_checkpoint", "heldout_problems", "reuse_attempt_cache"),
    PROMPT_PANEL: ("prompt", "prompt_template", "system_prompt", "instruction"),
    "Generation": ("max_attempt_length", "num_generations", "temperature", "top_p", "top_k", "min_p",
                   "repetition_penalty", "generation_batch_size", "use_vllm", "vllm_mode",
                   "vllm_gpu_memory_utilization"),
    "LoRA": ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"),
    "Training (TRL/transformers)": (
        "learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
        "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "optim",
        "loss_type", "num_iterations", "epsilon", "use_bias_correction_kl", "bf16", "gradient_checkpointing", "seed",
        "save_steps", "save_strategy", "save_total_limit", "logging_steps", "report_to", "run_name", "push_to_hub",
        "hub_model_id"),
}
MORE_PANEL = "More TRL/transformers options"
HELP_ALL_ENV = "SCORE_HELP_ALL"


@functools.cache
def _stage_options() -> dict:
    """SCoReConfig's field descriptions by name, read once for both stage commands."""
    from score_cli.config_options import field_specs

    return {s.name: s for s in field_specs()}


def _panel_of() -> dict[str, str]:
    return {name: panel for panel, names in STAGE_PANELS.items() for name in names}


def _long_tail() -> list[str]:
    """The inherited options `--help` leaves out."""
    panel = _panel_of()
    return sorted(n for n in _stage_options() if n not in panel)


def _help_all(ctx: typer.Context, value: bool) -> None:
    """`--help-all`: the help with every option, the long tail of TRL's and transformers' included."""
    if not value or ctx.resilient_parsing:
        return
    tail = set(_long_tail())
    hidden = [p for p in ctx.command.params if p.name in tail and p.hidden]
    epilog, ctx.command.epilog = ctx.command.epilog, None
    for param in hidden:
        param.hidden = False
    try:
        typer.echo(ctx.get_help())
    finally:  # the command object outlives this call (in tests, say): leave it as it was
        for param in hidden:
            param.hidden = True
        ctx.command.epilog = epilog
    raise typer.Exit()


def stage_epilog() -> str:
    if os.environ.get(HELP_ALL_ENV):
        return ""
    return (f"{len(_long_tail())} more TRL/transformers options (every GRPOConfig / TrainingArguments field) are "
            f"not shown: --help-all (or {HELP_ALL_ENV}=1) lists them.")


def with_config_options(fn):
    """Add one option per SCoReConfig field to a command, collected into `overrides`, in help panels
    (`STAGE_PANELS`); the long tail is hidden from `--help` and shown by `--help-all`."""
    import inspect

    from score_cli.config_options import SIMPLE_KINDS, parse_value

    fields = _stage_options()
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "overrides"]
    taken = {p.name for p in params}
    panel_of = _panel_of()
    order = {n: i for i, n in enumerate(panel_of)}
    show_all = bool(os.environ.get(HELP_ALL_ENV))
    for name in sorted(fields, key=lambda n: (order.get(n, len(order)), n)):
        if name in taken:
            continue
        spec = fields[name]
        option = typer.Option(
            help=spec.help.replace("[", r"\["),
            show_default=spec.default,
            rich_help_panel=panel_of.get(name, MORE_PANEL),
            hidden=name not in panel_of and not show_all,
        )
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[SIMPLE_KINDS[spec.kind] | None, option]))
    params.append(inspect.Parameter("help_all", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option("--help-all", is_eager=True, callback=_help_all,
                           help="Show every option, TRL's and transformers' long tail included, and exit.")]))

    @functools.wraps(fn)
    def wrapper(**kwargs):
        kwargs.pop("help_all", None)
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in fields and k not in taken}
        overrides = {k: parse_value(fields[k], v) for k, v in given.items() if v is not None}
        return fn(**kwargs, overrides=overrides)

    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {}
    return wrapper


def _run_training(req, dry_run: bool = False) -> None:
    from score_cli.train import plan, run_stage
    from score_cli.ui import stdout, training_progress

    if dry_run:
        import yaml

        stdout.print(yaml.safe_dump(plan(req), sort_keys=False, width=110), end="", highlight=False, markup=False)
        return

    result = run_stage(req, callbacks=[training_progress()])
    if result.interrupted:
        stdout.print(f"interrupted at step {result.record['interrupted_at_step']}; checkpoint saved in "
                     f"{result.output_dir}: continue with the same command and --resume")
        raise typer.Exit(130)
    stdout.print(f"Stage {req.stage} done ({result.record['steps']} steps): model, tokenizer and run record in "
                 f"{result.output_dir}")


Recipe = Annotated[str | None, typer.Option(help="YAML recipe of config fields (see recipes/); options override it.")]
TrainBench = Annotated[str | None, typer.Option(help="Training data: math (MATH train), gsm8k, toy, mbpp.")]
TrainQuestionField = Annotated[str | None, typer.Option(help="Field holding the question in --data.")]
TrainAnswerField = Annotated[str | None, typer.Option(help="Field holding the gold answer in --data.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")]
OutputDir = Annotated[str | None, typer.Option(help=r"Run directory \[default: runs/stageN-MODEL].")]
Resume = Annotated[bool, typer.Option(help="Continue from the last complete checkpoint in --output-dir.")]
DryRun = Annotated[
    bool, typer.Option(help="Print the resolved config, processes and batch sizes; load no model, train nothing.")
]


@app.command("stage1", epilog=stage_epilog())
@user_errors
@with_config_options
def stage1_cmd(
    model: Annotated[str | None, typer.Option(help="Base model: hub id or local directory.")] = None,
    recipe: Recipe = None,
    bench: TrainBench = None,
    data: Data = None,
    question_field: TrainQuestionField = None,
    answer_field: TrainAnswerField = None,
    limit: Limit = None,
    output_dir: OutputDir = None,
    resume: Resume = False,
    verbose: Verbose = False,
    dry_run: DryRun = False,
    overrides: dict | None = None,
) -> None:
    """Stage I: train attempt 2 for reward while a strong KL holds attempt 1 at the base model."""
    check_stage_args_early(bench, model, dry_run)
    from score_cli.train import TrainRequest

    setup_logging(verbose)
    _run_training(TrainRequest(stage=1, model=model, recipe=recipe, bench=bench, data=data,
                               question_field=question_field, answer_field=answer_field, limit=limit,
                               output_dir=output_dir, resume=resume, overrides=overrides or {}), dry_run)


@app.command("stage2", epilog=stage_epilog())
@user_errors
@with_config_options
def stage2_cmd(
    from_checkpoint: Annotated[str | None, typer.Option(help="Output directory of `score stage1`.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Ablation: run Stage II straight from this base model, without Stage I.")
    ] = None,
    recipe: Recipe = None,
    bench: Annotated[str | None, typer.Option(help=r"Training data \[default: Stage I's].")] = None,
    data: Data = None,
    question_field: TrainQuestionField = None,
    answer_field: TrainAnswerField = None,
    limit: Limit = None,
    output_dir: OutputDir = None,
    resume: Resume = False,
    verbose: Verbose = False,
    dry_run: DryRun = False,
    overrides: dict | None = None,
) -> None:
    """Stage II: multi-turn RL on both attempts with the alpha-scaled progress bonus; KL to the base."""
    check_stage_args_early(bench, model, dry_run)
    if from_checkpoint:  # a wrong directory is one line before torch and trl are imported
        from score_cli.models import stage1_output_record

        stage1_output_record(from_checkpoint)
    from score_cli.train import TrainRequest

    setup_logging(verbose)
    _run_training(TrainRequest(stage=2, from_checkpoint=from_checkpoint, model=model, recipe=recipe, bench=bench,
                               data=data, question_field=question_field, answer_field=answer_field, limit=limit,
                               output_dir=output_dir, resume=resume, overrides=overrides or {}), dry_run)


SFT_PANEL = "SFT baselines"


@app.command("sft")
@user_errors
def sft_cmd(
    method: Annotated[str | None, typer.Option(
        help=r"pair: Pair-SFT (a wrong first attempt paired with a right one); star: STaR on the model's own "
             r"two-attempt traces whose second attempt is right (D+) \[default: the recipe's, else star].")] = None,
    model: Annotated[str | None, typer.Option(help="Model to sample from and fine-tune: hub id or local directory.")]
    = None,
    from_checkpoint: Annotated[str | None, typer.Option(
        help="Start from a Stage I output instead (STaR there is the paper's 'STaR instead of REINFORCE in "
             "Stage II').")] = None,
    recipe: Recipe = None,
    bench: TrainBench = None,
    data: Data = None,
    question_field: TrainQuestionField = None,
    answer_field: TrainAnswerField = None,
    limit: Limit = None,
    output_dir: Annotated[str | None, typer.Option(help=r"Run directory \[default: runs/METHOD-MODEL].")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --output-dir where it stopped.")] = False,
    samples_per_problem: Annotated[int | None, typer.Option(
        help=r"Sampled first attempts (pair) or two-attempt traces (star) per problem \[default: 4].", min=1,
        rich_help_panel=SFT_PANEL)] = None,
    rounds: Annotated[int | None, typer.Option(
        help=r"STaR rounds: each samples from the last round's model and fine-tunes the initial one \[default: 1].",
        min=1, rich_help_panel=SFT_PANEL)] = None,
    problems_per_round: Annotated[int | None, typer.Option(
        help=r"Training problems sampled per round, a new slice each round \[default: all].", min=1,
        rich_help_panel=SFT_PANEL)] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Fine-tuning learning rate.", rich_help_panel=SFT_PANEL)]
    = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps per round.", min=1,
                                                  rich_help_panel=SFT_PANEL)] = None,
    per_device_train_batch_size: Annotated[int | None, typer.Option(
        help="Sequences per optimizer step (per device).", min=1, rich_help_panel=SFT_PANEL)] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.", rich_help_panel=SFT_PANEL)]
    = None,
    max_attempt_length: Annotated[int | None, typer.Option(help="New tokens per sampled attempt.", min=1,
                                                           rich_help_panel=SFT_PANEL)] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (sampling, data order).")] = None,
    prompt: Annotated[str | None, typer.Option(help="Attempt-1 prompt preset: paper, raw, boxed.",
                                               rich_help_panel=PROMPT_PANEL)] = None,
    prompt_template: PromptTemplate = None,
    system_prompt: SystemPrompt = None,
    instruction: Instruction = None,
    report_to: Annotated[str | None, typer.Option(help="tensorboard, wandb or none.")] = None,
    verbose: Verbose = False,
) -> None:
    """The paper's SFT baselines: Pair-SFT and STaR, fine-tuned on y2 only with TRL's SFTTrainer."""
    if method is not None and method not in ("pair", "star"):
        raise ScoreError(f"unknown --method '{method}': choose pair (Pair-SFT) or star (STaR)")
    check_stage_args_early(bench, model, False)
    if from_checkpoint:
        from score_cli.models import stage1_output_record

        stage1_output_record(from_checkpoint)
    given = {"samples_per_problem": samples_per_problem, "rounds": rounds, "problems_per_round": problems_per_round,
             "learning_rate": learning_rate, "max_steps": max_steps,
             "per_device_train_batch_size": per_device_train_batch_size, "temperature": temperature,
             "max_attempt_length": max_attempt_length, "seed": seed, "prompt": prompt,
             "prompt_template": prompt_template, "system_prompt": system_prompt, "instruction": instruction,
             "report_to": report_to}
    from score_cli.sft import SFTRequest, run_sft
    from score_cli.ui import announce, stdout, training_progress

    setup_logging(verbose)
    req = SFTRequest(method=method, model=model, from_checkpoint=from_checkpoint, recipe=recipe, bench=bench,
                     data=data, question_field=question_field, answer_field=answer_field, limit=limit,
                     output_dir=output_dir, resume=resume, overrides={k: v for k, v in given.items() if v is not None})
    try:
        out = run_sft(req, callbacks=[training_progress()], on_round=announce)
    except KeyboardInterrupt:
        from score_cli.environment import command_line

        stdout.print("interrupted: the sampled batches and the last checkpoint are saved; resume with: "
                      f"{command_line(resume=True)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    stdout.print(f"SFT done: model, tokenizer, run record and each round's data in {out}")


@app.command("report")
@user_errors
def report_cmd(
    run_dir: Annotated[str, typer.Argument(help="A stage or eval output directory.")],
    out: Annotated[str | None, typer.Option(help=r"Where the PNG files go \[default: RUN_DIR].")] = None,
) -> None:
    """Draw a run's training curves (reward, Delta, KL per attempt) and eval transitions as PNG files."""
    from score_cli.report import report
    from score_cli.ui import stdout

    for path in report(run_dir, out):
        stdout.print(f"wrote {path}")


@app.command("compare")
@user_errors
def compare_cmd(
    run_dirs: Annotated[list[str], typer.Argument(help="Output directories of score eval runs.")],
    out: Annotated[str | None, typer.Option(help="Also write the table to this markdown file.")] = None,
) -> None:
    """Eval runs side by side: model, benchmark, t1, t2, Delta(t1,t2), Delta i->c and c->i (in %), n."""
    from score_cli.compare import comparison, markdown
    from score_cli.files import atomic_write_text
    from score_cli.ui import compare_table, stdout

    rows = comparison(run_dirs)
    stdout.print(compare_table(rows))
    if out:
        atomic_write_text(out, markdown(rows))
        stdout.print(f"wrote {out}", highlight=False)


@app.command("env")
@user_errors
def env_cmd() -> None:
    """Print the environment (platform, python, torch, transformers, trl, ... versions, CUDA devices) for bug
    reports."""
    from score_cli.environment import environment_report
    from score_cli.ui import env_lines, stdout

    stdout.print(env_lines(environment_report()), markup=False, highlight=False, soft_wrap=True)


@app.command("export")
@user_errors
def export_cmd(
    run_dir: Annotated[str, typer.Argument(help="A stage output directory trained with LoRA.")],
    out: Annotated[str, typer.Option(help="Where the merged model goes.")],
    merge: Annotated[bool, typer.Option(help="Merge the LoRA adapter into the base weights.")] = True,
) -> None:
    """Export a LoRA run as a plain model (adapter merged into the base), loadable anywhere."""
    from score_cli.models import export_merged
    from score_cli.ui import stdout

    if not merge:
        raise ScoreError("only --merge export is supported: the run directory already holds the adapter")
    stdout.print(f"merged model in {export_merged(run_dir, out)}")


toy_app = typer.Typer(help="The embedded toy world: an offline base model and math task.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")


@toy_app.command("init")
@user_errors
def toy_init_cmd(
    out: Annotated[str, typer.Option(help="Where the toy base model is saved.")] = "runs/toy-base",
    seed: Seed = 0,
    max_attempts: Annotated[
        int, typer.Option(help="Longest conversation in the base's data, in attempts: > 2 for a base that "
                          "--turns N training and evaluation can use beyond attempt 2.", min=2)
    ] = 2,
) -> None:
    """Build a tokenizer and train the toy base model from scratch on CPU (saved with save_pretrained).

    With --max-attempts above 2 the base is the previous release's recipe (e18) with longer
    conversations: today's default keeps y1 as a one-line restatement, which has no third attempt.
    """
    from score_cli.toy_model import ToyData, ToyTraining, train_toy_model
    from score_cli.ui import stdout

    setup_logging(True)
    if max_attempts > 2:
        path = train_toy_model(out, seed=seed, data=ToyData(max_attempts=max_attempts), training=ToyTraining())
    else:
        path = train_toy_model(out, seed=seed)
    stdout.print(f"toy base model in {path}: use it with --model {path} (e.g. score eval --bench toy)")


@app.command("demo")
@user_errors
def demo_cmd(
    root: Annotated[str, typer.Option(help="Where the demo's runs go (reused when present).")] = "runs/demo",
    seed: Seed = 0,
    max_steps: Annotated[
        int | None, typer.Option(help=r"RL steps in each stage \[default: the toy recipe's, 80 in Stage I and 40 in "
                                      "Stage II].", min=1)
    ] = None,
    ci: Annotated[bool, typer.Option("--ci", help="Show each metric's 95% confidence interval in the table.")] = False,
) -> None:
    """The main job end to end, offline: toy base model, Stage I, Stage II, and eval of all three."""
    from score_cli.demo import run_demo
    from score_cli.ui import announce, eval_progress, results_table, stdout, training_progress

    setup_logging(False)
    rows = run_demo(root, seed=seed, steps=max_steps, on_step=announce,
                    callbacks=[training_progress()], progress=eval_progress)
    stdout.print(results_table("toy world: held-out test problems", rows, ci=ci))


@app.command("repro")
@user_errors
def repro_cmd(
    root: Annotated[str, typer.Option(help="Where the runs go (reused when present).")] = "runs/repro",
    seeds: Annotated[str, typer.Option(help="Comma-separated RL seeds.")] = "0,1,2",
    base: Annotated[
        str | None, typer.Option(help="A toy base model to reuse for every seed (implies --one-base).")
    ] = None,
    base_per_seed: Annotated[bool, typer.Option(
        "--base-per-seed/--one-base",
        help="Build a base per seed (ROOT/seedS/base, with seed S), so that the spread over seeds includes the "
             "base's, or one base (ROOT/base, seed 0) for every seed: about 5 minutes less per seed after the "
             "first.")] = True,
    max_steps: Annotated[
        int | None, typer.Option(help=r"RL steps in each stage, both stages' sum for one-stage methods \[default: the "
                                      "recipe's, 80 in Stage I and 40 in Stage II].", min=1)
    ] = None,
    stage1_steps: Annotated[
        int | None, typer.Option(help=r"Stage I's RL steps, when not --max-steps (one-stage methods get both "
                                      r"stages' sum) \[default: --max-steps].", min=1)
    ] = None,
    methods: Annotated[str | None, typer.Option(
        help=r"Comma-separated methods to run \[default: all]: base, single-turn RL, Stage II only, SCoRe (alpha=0), "
             "SCoRe, Pair-SFT, STaR, Stage I + STaR.")] = None,
    data_json: Annotated[str | None, typer.Option(
        help='Toy data of the bases, as JSON fields over the default\'s, e.g. \'{"second": {"slip": 0.15}}\' '
             "(score_cli/toy_model.py, ToyData).")] = None,
    base_band: Annotated[bool, typer.Option(
        "--base-band/--any-base",
        help="Keep a seed's base only if its probe on selection problems (never RL's or the test's) is in the band "
             "of score_cli/toy_selection.py, else build the next unused seed; or use every seed's base.")] = False,
    band_problems: Annotated[int, typer.Option(help="Selection problems in the --base-band probe (4 samples each).",
                                               min=100)] = 2000,
    recipe: Annotated[str | None, typer.Option(
        help=r"The RL and SFT settings of every method \[default: recipes/toy.yaml].")] = None,
    learning_rate: Annotated[list[str] | None, typer.Option(
        metavar="METHOD=LR",
        help="An RL method's own learning rate (Stage II's, or its one stage's), as METHOD=LR, over its default "
             "(single-turn RL and Stage II only 5e-5, the others the recipe's Stage II rate: "
             "score_cli/repro.py, METHOD_LEARNING_RATES); repeat for several, e.g. --learning-rate 'SCoRe=2.5e-5' "
             "--learning-rate 'single-turn RL=1e-4'.")] = None,
) -> None:
    """The paper's comparison in the toy world: base, the RL ablations, SCoRe, and the SFT baselines."""
    from score_cli.repro import run_repro
    from score_cli.ui import announce, eval_progress, stdout, training_progress

    setup_logging(False)
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise ScoreError(f"--seeds {seeds!r} is not a comma-separated list of integers, e.g. --seeds 0,1,2") from None
    if len(seed_list) < 1 or len(set(seed_list)) < len(seed_list):
        raise ScoreError(f"--seeds {seeds!r} needs at least one seed and no seed twice, e.g. --seeds 0,1,2")
    from score_cli.repro import METHODS

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else METHODS  # checked by run_repro
    data = None
    if data_json is not None:
        import json

        from score_cli.toy_model import toy_data

        try:
            overrides = json.loads(data_json)
        except json.JSONDecodeError as e:
            raise ScoreError(f"--data-json is not JSON ({e}): give an object, e.g. '{{\"copy\": 0.3}}'") from None
        if not isinstance(overrides, dict):
            raise ScoreError("--data-json must be a JSON object of toy data fields, e.g. '{\"copy\": 0.3}'")
        data = toy_data(overrides)
    from score_cli.toy_selection import BaseBand

    band = BaseBand(problems=band_problems) if base_band else None
    rates = {}
    for item in learning_rate or []:
        method, _, value = item.rpartition("=")  # "SCoRe (alpha=0)=5e-5": the rate is after the last =
        try:
            rates[method.strip()] = float(value)
        except ValueError:
            raise ScoreError(f"--learning-rate {item!r} is not METHOD=LR: give e.g. --learning-rate 'SCoRe=2.5e-5'"
                             ) from None
    run_repro(root, seeds=seed_list, base_dir=base, base_per_seed=base_per_seed and not base, steps=max_steps,
              stage1_steps=stage1_steps, methods=chosen, data=data, band=band, recipe=recipe,
              learning_rates=rates, on_step=announce,
              callbacks=[training_progress()], progress=eval_progress)
    stdout.print((Path(root) / "results.md").read_text(), markup=False, highlight=False)
    stdout.print(f"wrote {root}/results.md, results.json, accuracy_per_attempt.png, training_curves.png")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
