"""Running a SCoRe stage: resolve the config (defaults < recipe < options), load data and models,
train with checkpoints, resume after a crash, stop cleanly on Ctrl-C, and save a run record.

The output directory of a stage holds the final model and tokenizer (`save_pretrained`), the
resolved config (`score_config.yaml`), the run record (`score_run.json`: stage, base model,
config) and the checkpoints (`checkpoint-N/`). With `select_checkpoint` delta|reward the model
is the best checkpoint's by that held-out criterion (each checkpoint's evaluation is in its
`heldout.json`); the run record names it (`checkpoint_selection`) and the held-out problems (`heldout`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from score_cli import __version__
from score_cli.config_options import DERIVED_FIELDS, config_fields
from score_cli.errors import ScoreError
from score_cli.files import atomic_write_json, atomic_write_text, check_output_is_dir
from score_cli.models import check_model_source, read_run_record, stage1_output_record

log = logging.getLogger(__name__)

RUN_RECORD = "score_run.json"
CONFIG_FILE = "score_config.yaml"
# Keys a recipe may hold besides SCoReConfig fields: what to train on, and from what.
DATA_KEYS = ("model", "bench", "data", "question_field", "answer_field", "limit")
# Stage II: the Stage I output it starts from (an option, or a key of the recipe a Stage II run saves).
FROM_CHECKPOINT = "from_checkpoint"
# Prompt settings (SCoReConfig fields): Stage II takes Stage I's unless told; @FILE reads a file.
PROMPT_FIELDS = ("prompt", "prompt_template", "system_prompt", "instruction")
# SCoReConfig fields whose default depends on the machine (on with CUDA): saved only when set otherwise.
MACHINE_FIELDS = ("bf16", "activation_checkpointing", "gradient_checkpointing")
# Inherited (GRPOConfig / TrainingArguments) fields a SCoRe run hinges on: saved also at their defaults.
RECORDED_FIELDS = ("temperature", "top_p", "num_generations", "learning_rate", "max_steps", "num_train_epochs",
                   "per_device_train_batch_size", "gradient_accumulation_steps", "loss_type", "seed", "save_steps",
                   "logging_steps")


@dataclass
class TrainRequest:
    """One `score stage1|stage2` invocation, before the recipe is merged in."""

    stage: int
    model: str | None = None  # stage 1: the base model
    from_checkpoint: str | None = None  # stage 2: a Stage I output directory
    recipe: str | None = None
    bench: str | None = None
    data: str | None = None
    question_field: str | None = None
    answer_field: str | None = None
    limit: int | None = None
    output_dir: str | None = None
    resume: bool = False
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # config fields given as options


@dataclass
class TrainResult:
    output_dir: Path
    record: dict[str, Any]
    interrupted: bool = False


STAGE_SECTIONS = {1: "stage1", 2: "stage2"}


def load_recipe(path: str | None, stage: int | None = None) -> dict[str, Any]:
    """A YAML recipe: SCoReConfig fields plus the data keys; unknown keys are refused by name.

    One recipe serves both stages; a `stage1:` or `stage2:` mapping of config fields overrides the
    top level in that stage only (e.g. a Stage I longer than Stage II: `stage1: {max_steps: 80}`).
    `stage` None (SFT) reads the top level alone."""
    return stage_recipe(*read_recipe(path), stage)


def stage_recipe(top: dict[str, Any], sections: dict[int, dict[str, Any]], stage: int | None) -> dict[str, Any]:
    """What `stage` reads of a recipe read by `read_recipe`: its section over the top level (None: the top level)."""
    return {**top, **sections.get(stage, {})} if stage else top


def read_recipe(path: str | None) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """(top level, {stage: its section}) of a YAML recipe, checked and coerced; see `load_recipe`."""
    if path is None:
        return {}, {}
    import yaml

    p = Path(path)
    if not p.exists():
        raise ScoreError(f"recipe {p} does not exist: check the --recipe path (recipes live in recipes/)")
    if p.is_dir():
        raise ScoreError(f"recipe {p} is a directory: pass a YAML file with --recipe (recipes live in recipes/)")
    try:
        recipe = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ScoreError(f"recipe {p} is not UTF-8 text: save it as UTF-8 YAML") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ScoreError(f"recipe {p} is not valid YAML{line}: fix the syntax") from None
    if not isinstance(recipe, dict):
        raise ScoreError(f"recipe {p} must be a mapping of config fields to values")
    types = ({f.name: tp for f, tp in config_fields()} | {k: str | None for k in (*DATA_KEYS, FROM_CHECKPOINT)}
             | {"limit": int | None})
    sections = {n: recipe.pop(name) for n, name in STAGE_SECTIONS.items() if name in recipe}
    unknown = sorted(set(recipe) - set(types))
    if unknown:
        raise ScoreError(
            f"recipe {p} has unknown keys {', '.join(unknown)}: use SCoReConfig field names (score stage1 --help)"
        )
    for n, section in sections.items():
        name = STAGE_SECTIONS[n]
        if not isinstance(section, dict):
            raise ScoreError(f"recipe {p}: {name} must be a mapping of config fields, e.g. {name}: {{max_steps: 80}}")
        wrong = sorted(k for k in section if k not in types or k in (*DATA_KEYS, FROM_CHECKPOINT))
        if wrong:
            raise ScoreError(f"recipe {p}: {name} holds {', '.join(wrong)}, which are not per-stage config fields: "
                             "move data keys to the top level and use SCoReConfig field names")
    def coerce(fields: dict[str, Any]) -> dict[str, Any]:
        return {k: coerce_recipe_value(p, k, v, types[k]) for k, v in fields.items()}
    return coerce(recipe), {n: coerce(section) for n, section in sections.items()}


_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def coerce_recipe_value(recipe: Path, key: str, value: Any, tp: Any) -> Any:
    """A recipe value as its field's simple type (bool, int, float, str): YAML reads `5e-6` as a
    string and `3.0` as a float, so numbers in clean text are converted; anything else is refused by
    key and expected type. Fields of other types (lists, dicts, unions such as SchedulerType | str)
    pass unchanged."""
    import types as pytypes
    import typing

    union = typing.get_origin(tp) in (typing.Union, pytypes.UnionType)
    args = typing.get_args(tp) if union else (tp,)
    inner = [a for a in args if a is not type(None)]
    if len(inner) != 1 or inner[0] not in _KIND_WORDS:
        return value
    kind = inner[0]
    if value is None and type(None) in args:
        return None
    converted = _convert(value, kind)
    if converted is None:
        shown = "null" if value is None else repr(value)
        raise ScoreError(f"recipe {recipe}: {key} must be {_KIND_WORDS[kind]}, got {shown}: fix it in the recipe")
    return converted


def _convert(value: Any, kind: type) -> Any:
    """`value` as `kind` if it is one cleanly (no bools as numbers, no fractions as integers), else None."""
    import math

    if kind is bool:
        words = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
        if isinstance(value, bool):
            return value
        return words.get(value.strip().lower()) if isinstance(value, str) else None
    if kind is str:
        return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        try:
            value = float(value) if kind is float or not value.strip().lstrip("+-").isdigit() else int(value)
        except ValueError:
            return None
    if kind is float:
        return float(value)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def check_values(kwargs: dict[str, Any]) -> None:
    """Ranges of the options whose bad values would only fail deep inside generation."""
    temperature = kwargs.get("temperature")
    if temperature is not None and not temperature > 0:
        raise ScoreError(f"temperature must be > 0 (training samples its rollouts), got {temperature}: set e.g. "
                         "--temperature 1.0")
    length = kwargs.get("max_attempt_length")
    if length is not None and length < 1:
        raise ScoreError(f"max_attempt_length must be at least 1 (new tokens per attempt), got {length}: set e.g. "
                         "--max-attempt-length 512")
    top_p = kwargs.get("top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise ScoreError(f"top_p must be in (0, 1], got {top_p}: set e.g. --top-p 1.0")


def data_settings(recipe: dict[str, Any], req: Any) -> dict[str, Any]:
    """The data keys (DATA_KEYS): the recipe's, each overridden by the request's option when given."""
    data = {k: recipe.get(k) for k in DATA_KEYS}
    for k in DATA_KEYS:
        v = getattr(req, k, None)
        if v is not None:
            data[k] = v
    return data


def fill_data_defaults(data: dict[str, Any]) -> None:
    """The benchmark (toy for a toy model, else math) and --data's field names, where not given."""
    data["bench"] = data["bench"] or ("toy" if data["data"] is None and _is_toy(data.get("model")) else "math")
    data["question_field"] = data["question_field"] or "problem"
    data["answer_field"] = data["answer_field"] or "answer"


def read_prompt_files(kwargs: dict[str, Any]) -> None:
    """Prompt settings given as @FILE hold the file's text."""
    from score_cli.tasks import read_text_option

    for k in PROMPT_FIELDS[1:]:
        if isinstance(kwargs.get(k), str):
            kwargs[k] = read_text_option(kwargs[k], k)


def follow_stage1(record: dict[str, Any], data: dict[str, Any], kwargs: dict[str, Any], unset: set[str],
                  fields: tuple[str, ...] = PROMPT_FIELDS) -> None:
    """A run that starts from a Stage I output trains on its data and asks its prompt unless told:
    each data key in `unset` and each of `fields` not in `kwargs` takes the Stage I run's value."""
    for k in ("bench", "data", "question_field", "answer_field"):
        if k in unset and (record.get("data") or {}).get(k) is not None:
            data[k] = record["data"][k]
    for k in fields:
        if k not in kwargs and (record.get("config") or {}).get(k) is not None:
            kwargs[k] = record["config"][k]


def resolve(req: TrainRequest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(data settings, config kwargs, stage-2 lineage): defaults < recipe < command-line options."""
    recipe = load_recipe(req.recipe, req.stage)
    data = data_settings(recipe, req)
    fill_data_defaults(data)
    kwargs = {k: v for k, v in recipe.items() if k not in (*DATA_KEYS, FROM_CHECKPOINT)}
    kwargs.update(req.overrides)
    for k in DERIVED_FIELDS:
        if k in kwargs:
            raise ScoreError(f"'{k}' is set by score itself: remove it from the recipe or options")
    check_values(kwargs)
    read_prompt_files(kwargs)
    # Stage II: --from-checkpoint, else --model (the ablation), else the recipe's from_checkpoint.
    from_checkpoint = req.from_checkpoint or (None if req.model else recipe.get(FROM_CHECKPOINT))

    lineage: dict[str, Any] = {}
    if req.stage == 1:
        if recipe.get(FROM_CHECKPOINT):
            raise ScoreError(f"recipe {req.recipe} names a Stage I output (from_checkpoint), which only Stage II "
                             "starts from: run score stage2 with it, or remove the key")
        if not data["model"]:
            raise ScoreError("no model given: pass --model HUB_ID_OR_DIR (or set 'model' in the recipe)")
        check_model_source(data["model"], hub=False)
        lineage = {"base_model": data["model"], "policy_init": data["model"]}
    elif not from_checkpoint and req.model:  # the paper's ablation: Stage II without Stage I
        check_model_source(data["model"], hub=False)
        lineage = {"base_model": data["model"], "policy_init": data["model"]}
    else:
        if not from_checkpoint:
            raise ScoreError(
                "Stage II starts from a Stage I output: pass --from-checkpoint DIR (or --model BASE for the "
                "ablation without Stage I)"
            )
        if req.model:
            raise ScoreError("pass either --from-checkpoint (a Stage I output) or --model (a base model), not both")
        src = from_checkpoint
        record = stage1_output_record(src)
        lineage = {"base_model": record["base_model"], "policy_init": src, "stage1_record": record}
        data["model"] = src
        follow_stage1(record, data, kwargs, unset={k for k in DATA_KEYS if getattr(req, k) is None and k not in recipe},
                      fields=(*PROMPT_FIELDS, "turns"))  # Stage II trains as many attempts as Stage I did
    return data, kwargs, lineage


def _is_toy(model: str | None) -> bool:
    """A model built by `score toy init` trains on the toy task unless told otherwise."""
    return bool(model) and (Path(model) / "toy_model.json").exists()


def build_config(stage: int, kwargs: dict[str, Any], output_dir: str, ref_model: str):
    from score_cli.trainers import SCoReConfig

    try:
        return SCoReConfig(output_dir=output_dir, stage=stage, ref_model=ref_model, **kwargs)
    except (ValueError, TypeError) as e:
        raise ScoreError(f"invalid training config: {str(e).splitlines()[0]}") from None


def default_output_dir(stage: int, model: str) -> str:
    return os.path.join("runs", f"stage{stage}-{Path(model.rstrip('/')).name}")


def check_output_dir(out: Path, resume: bool) -> str | None:
    """Refuse to clobber a run; on --resume return the last complete checkpoint (or None)."""
    check_output_is_dir(out)
    record = read_run_record(out) if out.exists() else None
    if resume:
        if record and record.get("finished"):
            raise ScoreError(f"the run in {out} already finished: nothing to resume; choose another --output-dir")
        return last_complete_checkpoint(out)
    checkpoint = last_complete_checkpoint(out, verify=False)
    if record is not None or checkpoint is not None:
        raise ScoreError(
            f"output directory {out} already holds a training run: pass --resume to continue it, "
            "or choose another --output-dir"
        )
    return None


def last_complete_checkpoint(out: Path, *, verify: bool = True) -> str | None:
    """The newest checkpoint whose files all load (a kill -9, a crash or a full disk can cut one short).

    Newer incomplete checkpoints are skipped with a one-line warning. `verify=False` checks only
    the trainer state (written last), which is enough to tell that a run is there.
    """
    out = Path(out)
    if not out.is_dir():
        return None
    found = []
    for d in out.glob("checkpoint-*"):
        try:
            found.append((int(d.name.split("-")[-1]), d))
        except ValueError:
            continue
    skipped = []
    for _, d in sorted(found, reverse=True):
        problem = checkpoint_problem(d, verify=verify)
        if problem is None:
            if skipped:
                log.warning("skipping incomplete %s: resuming from %s", "; ".join(skipped), d.name)
            return str(d)
        if verify:
            skipped.append(f"{d.name} ({problem})")
    if skipped:
        log.warning("skipping incomplete %s: no complete checkpoint left, training starts from step 0",
                    "; ".join(skipped))
    return None


def checkpoint_problem(d: Path, *, verify: bool = True) -> str | None:
    """Why checkpoint directory `d` cannot be resumed from ('FILE: reason'), or None if it can.

    Cheap checks of every file: JSON parses; a safetensors header covers its whole file (so every
    tensor is there); torch files (optimizer, scheduler, RNG state, arguments) open with torch.load,
    weights_only and memory-mapped; an index's shards exist.
    """
    if not d.is_dir():
        return "not a directory"
    try:
        json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"trainer_state.json: {_reason(e)}"
    if not verify:
        return None
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        try:
            _check_checkpoint_file(f)
        except Exception as e:  # noqa: BLE001 - whatever fails to load makes the checkpoint unusable
            return f"{f.relative_to(d)}: {_reason(e)}"
    return None


def _check_checkpoint_file(f: Path) -> None:
    if f.name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as st:  # refuses a header that does not cover the file
            for key in st.keys():
                st.get_slice(key)
    elif f.suffix in (".pt", ".pth", ".bin"):
        _check_torch_file(f)
    elif f.suffix == ".json":
        data = json.loads(f.read_text(encoding="utf-8"))
        if f.name.endswith(".index.json") and isinstance(data, dict):
            missing = sorted({s for s in data.get("weight_map", {}).values() if not (f.parent / s).is_file()})
            if missing:
                raise FileNotFoundError(f"shard {missing[0]} is missing")


def _check_torch_file(f: Path) -> None:
    """torch.load with weights_only (numpy RNG state allowed, as transformers loads it); a file that
    pickles other objects (training_args.bin) passes once its archive has opened."""
    import contextlib
    import pickle
    import zipfile

    import torch

    try:
        from transformers.trainer_pt_utils import safe_globals
    except ImportError:  # pragma: no cover - older transformers
        safe_globals = contextlib.nullcontext
    zipped = zipfile.is_zipfile(f)  # False for a truncated archive: its directory is at the end
    try:
        with safe_globals():
            torch.load(f, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as e:
        if not (zipped and "Weights only load failed" in str(e)):
            raise


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


class StopOnSignal(TrainerCallback):
    """First Ctrl-C: save a checkpoint at the end of the current step, then stop. Second: abort."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: saving a checkpoint after this step, then stopping (Ctrl-C again to abort)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


def plan(req: TrainRequest) -> dict[str, Any]:
    """What a stage would run, without loading a model or data: the resolved config and batch sizes."""
    data, kwargs, lineage = resolve(req)
    out = req.output_dir or default_output_dir(req.stage, lineage["policy_init"])
    config = build_config(req.stage, kwargs, str(out), ref_model=lineage["base_model"])
    processes = config.world_size
    sequences = config.per_device_train_batch_size * config.gradient_accumulation_steps * processes
    return {
        "stage": req.stage,
        "policy": lineage["policy_init"],
        "reference (base)": lineage["base_model"],
        "data": {k: v for k, v in data.items() if v is not None and k != "model"},
        "output_dir": str(out),
        "processes": processes,
        "sequences per optimizer step (effective batch)": sequences,
        "prompts per optimizer step": sequences // config.num_generations,
        "rollouts per prompt (num_generations)": config.num_generations,
        "sequences per generation round (generation_batch_size)": config.generation_batch_size,
        "tokens per sequence (at most)": f"prompt + 2 x {config.max_attempt_length} + instruction",
        "config": json.loads(config.to_json_string()),
    }


def run_stage(req: TrainRequest, *, callbacks: list | None = None) -> TrainResult:
    """Train one SCoRe stage as requested; returns where the model went and the run record."""
    from score_cli.models import load_tokenizer
    from score_cli.rollout import prompt_text
    from score_cli.tasks import apply_prompt
    from score_cli.tasks.registry import load_task
    from score_cli.trainers import SCoReTrainer, heldout_split

    data, kwargs, lineage = resolve(req)
    for name in dict.fromkeys((data["model"], lineage["base_model"])):  # hub ids: cached or reachable, at once
        check_model_source(name)
    out = Path(req.output_dir or default_output_dir(req.stage, lineage["policy_init"]))
    checkpoint = check_output_dir(out, req.resume)
    task, problems = load_task(
        data["bench"], data=data["data"], question_field=data["question_field"],
        answer_field=data["answer_field"], split="train", limit=data["limit"], seed=kwargs.get("seed", 42),
    )
    config = build_config(req.stage, kwargs, str(out), ref_model=lineage["base_model"])
    try:
        train_problems, heldout = heldout_split(problems, config.heldout_problems, config.seed)
    except ValueError as e:
        raise ScoreError(str(e)) from None
    tokenizer = load_tokenizer(data["model"])
    prompted = apply_prompt(task, config.prompt_spec())  # what the trainer asks, as score eval does
    example = prompt_text(tokenizer, prompted, problems[0])
    record = {
        "score_version": __version__,
        "stage": req.stage,
        "base_model": lineage["base_model"],
        "policy_init": lineage["policy_init"],
        "data": {k: data[k] for k in ("bench", "data", "question_field", "answer_field", "limit")},
        "task": task.name,
        "prompt": {**config.prompt_spec().record(prompted), "example": example},
        "n_train_problems": len(train_problems),
        "config": json.loads(config.to_json_string()),
        "finished": False,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "resumed_from": checkpoint,
        "command": shlex.join(sys.argv),
        "cwd": os.getcwd(),
    }
    if heldout:
        record["heldout"] = {
            "problems": len(heldout),
            "rule": f"not trained on: the {len(heldout)} problems with the smallest sha256('{config.seed}:<id>')",
            "ids": [p.id for p in heldout],
        }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RUN_RECORD, record)
    atomic_write_text(out / CONFIG_FILE, config_yaml(config, data, from_checkpoint=_from_checkpoint(req, lineage)))

    stopper = StopOnSignal()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        trainer = SCoReTrainer(
            data["model"], config, task, problems, processing_class=tokenizer,
            callbacks=[stopper, *(callbacks or [])],
        )
        if callbacks:  # the caller draws progress itself: drop transformers' tqdm bar and log printer
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(PrinterCallback)
        stopper.install()
        try:
            trainer.train(resume_from_checkpoint=checkpoint)
        finally:
            stopper.uninstall()
    if stopper.requested:
        record["interrupted_at_step"] = trainer.state.global_step
        atomic_write_json(out / RUN_RECORD, record)
        return TrainResult(out, record, interrupted=True)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    trainer.create_model_card(model_name=out.name)  # also when no checkpoint was saved (which writes it too)
    record.update(finished=True, steps=trainer.state.global_step, ended=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  log_history=trainer.state.log_history)
    if heldout:
        record["checkpoint_selection"] = checkpoint_selection(trainer)
    atomic_write_json(out / RUN_RECORD, record)
    return TrainResult(out, record)


def checkpoint_selection(trainer) -> dict[str, Any]:
    """Which checkpoint's model the output directory holds, and the held-out values of every save."""
    state, select = trainer.state, trainer.args.select_checkpoint
    saves = [{"step": h["step"], **{k.split("/", 1)[1]: v for k, v in h.items() if k.startswith("heldout/")}}
             for h in state.log_history if "heldout/delta" in h]
    best = state.best_global_step if select != "last" else None
    kept = best or state.global_step
    return {
        "select_checkpoint": select,
        "kept_step": kept,
        "kept_checkpoint": f"checkpoint-{kept}" if any(s["step"] == kept for s in saves) else None,
        "kept_value": next((s[select] for s in saves if s["step"] == kept), None) if best else None,
        "saves": saves,
    }


def _from_checkpoint(req: TrainRequest, lineage: dict[str, Any]) -> str | None:
    """The Stage I output a Stage II run started from (None for Stage I and the ablation)."""
    return lineage["policy_init"] if req.stage == 2 and "stage1_record" in lineage else None


def config_yaml(config, data: dict[str, Any], *, from_checkpoint: str | None = None) -> str:
    """The resolved config as a recipe that reruns the stage on its own (`--recipe` alone): the data
    keys, every field SCoRe defines (those whose default follows the machine, bf16 and activation
    checkpointing, only when set otherwise), the inherited fields a run hinges on (RECORDED_FIELDS:
    temperature, learning rate, batch, ...) and every other inherited TRL / transformers field not at
    its default. Stage II's names the Stage I output it started from (`from_checkpoint`)."""
    import yaml

    from score_cli.trainers import SCoReConfig

    own = [k for k in vars(SCoReConfig).get("__annotations__", {}) if k not in DERIVED_FIELDS]
    resolved = json.loads(config.to_json_string())
    base = json.loads(SCoReConfig(output_dir="x").to_json_string())
    hidden = lambda v: isinstance(v, str) and v.startswith("<") and v.endswith(">")  # noqa: E731 - to_dict's <HUB_TOKEN>
    fields = {k: resolved[k] for k in own if k in resolved and not (k in MACHINE_FIELDS and resolved[k] == base.get(k))}
    fields.update({k: resolved[k] for k in RECORDED_FIELDS if k in resolved})
    inherited = {k: v for k, v in resolved.items()
                 if k not in fields and k not in DERIVED_FIELDS and base.get(k) != v and not hidden(v)}
    head = {k: v for k, v in data.items() if v is not None}
    stage = getattr(config, "stage", 1)
    how = f"score stage{stage} --recipe THIS_FILE --output-dir NEW_DIR"
    if from_checkpoint:
        head = {FROM_CHECKPOINT: from_checkpoint, **{k: v for k, v in head.items() if k != "model"}}
    elif stage == 2:  # the ablation: Stage II straight from a base model, which a recipe cannot say alone
        how = f"score stage2 --recipe THIS_FILE --model {shlex.quote(str(data.get('model')))} --output-dir NEW_DIR"
    text = yaml.safe_dump({**head, **fields, **inherited}, sort_keys=False, allow_unicode=True, width=110)
    return (f"# Stage {'I' * stage} config resolved by score {__version__}: every SCoRe setting, the main training "
            f"ones, and every other one not at its default.\n# Rerun: {how}\n{text}")
