"""`make demo`: the whole pipeline in the embedded toy world, offline, on a CPU.

Builds the toy base model once (then reuses it), trains Stage I and Stage II from it with
`recipes/toy.yaml`, evaluates the base and both stages on the toy test split, and returns one
side-by-side table. Every step is skipped when its output already exists, so an interrupted demo
picks up where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from score_cli.errors import ScoreError
from score_cli.evaluate import METRICS_FILE, EvalConfig, evaluate
from score_cli.models import read_run_record
from score_cli.rollout import Decoding
from score_cli.train import TrainRequest, build_config, last_complete_checkpoint, load_recipe, run_stage

if TYPE_CHECKING:
    from score_cli.toy_model import ToyData

log = logging.getLogger(__name__)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# Recipe fields that do not change what a run trains, so a finished run is reused whatever they say.
NOT_COMPARED = ("report_to", "logging_steps")
# How the toy world is evaluated: sampled like the paper's training (the toy models are tiny, so
# greedy decoding hides most of their errors); several samples per problem shrink the intervals.
TOY_EVAL = {"limit": 300, "samples": 4, "decoding": Decoding(max_new_tokens=160, temperature=1.0, batch_size=64)}


def recipe_path(name: str) -> str:
    path = RECIPES / name
    if not path.exists():
        raise ScoreError(f"recipe {path} is missing: run the demo from a clone of the score repository")
    return str(path)


def ensure_base(root: Path, seed: int = 0, on_step: Callable[[str], None] = lambda s: None,
                data: ToyData | None = None) -> Path:
    """ROOT/base: the toy base model built with `seed` from `data` (`DEFAULT_DATA` unless given),
    reused when present; one built from another seed or data is an error, not silently reused."""
    import json
    from dataclasses import asdict

    from score_cli.toy_model import DEFAULT_DATA, RECORD_FILE, ToyData, train_toy_model

    base, wanted = root / "base", asdict(data or DEFAULT_DATA)
    if (base / RECORD_FILE).exists():
        record = json.loads((base / RECORD_FILE).read_text())
        # A field added after the base was built is missing from its record; its class default is
        # what the code then did (every new field's default keeps the old data), so it counts as that.
        recorded = {**asdict(ToyData()), **record["data"]} if "data" in record else {}
        differs = sorted(k for k in wanted if recorded.get(k) != wanted[k])
        other_seed = record.get("seed") != seed
        if other_seed or differs:
            what = f"seed {record.get('seed')}" if other_seed else f"other data ({', '.join(differs)})"
            raise ScoreError(f"{base} holds a toy base built with {what}, not the one asked for: remove it or "
                             "use another --root")
        on_step(f"toy base model: reusing {base}")
        return base
    on_step(f"toy base model (seed {seed}): training from scratch (a few minutes on a CPU)")
    return Path(train_toy_model(base, seed=seed, data=data))


def ensure_stage(stage: int, out: Path, *, recipe: str, callbacks=None, **request) -> Path:
    """The stage run in `out`: reused when finished, resumed when started, trained otherwise. A run
    there made with other settings than the recipe's and `request`'s overrides (another learning
    rate, seed, alpha, ...) is an error, not silently reused or resumed with new ones."""
    record = read_run_record(out) if out.exists() else None
    if record:
        asked = {**load_recipe(recipe, stage), **(request.get("overrides") or {})}
        check_same_settings(out, record, as_configured(stage, asked, out))
    if record and record.get("finished"):
        return out
    resume = last_complete_checkpoint(out) is not None or record is not None
    run_stage(TrainRequest(stage=stage, recipe=recipe, output_dir=str(out), resume=resume, **request),
              callbacks=callbacks)
    return out


def as_configured(stage: int, asked: dict, out: Path) -> dict:
    """The config fields among `asked` as the stage's config resolves them (a single-turn run, for
    one, takes no base-model first attempts whatever the recipe says), so that they compare with a
    run record's; other keys (data, `NOT_COMPARED`) are left out."""
    import json

    from score_cli.config_options import config_fields

    names = {f.name for f, _ in config_fields()} - set(NOT_COMPARED)
    fields = {k: v for k, v in asked.items() if k in names}
    quiet = logging.getLogger("score_cli.trainers")  # its notes on resolved fields come again when the run trains
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        resolved = json.loads(build_config(stage, fields, str(out), ref_model=None).to_json_string())
    finally:
        quiet.setLevel(level)
    return {k: resolved.get(k, v) for k, v in fields.items()}


def check_same_settings(out: Path, record: dict, asked: dict) -> None:
    """Refuse to reuse the run in `out` if its recorded config differs from the settings `asked`
    (config fields; data keys, fields the config does not record and `NOT_COMPARED` are not compared)."""
    import math

    config = record.get("config") or {}
    differs = [(k, config[k], v) for k, v in asked.items()
               if k in config and k not in NOT_COMPARED and v is not None and config[k] != v
               and not (isinstance(v, float) and isinstance(config[k], float) and math.isclose(config[k], v))]
    if differs:
        what = ", ".join(f"{k} {old} (asked for {new})" for k, old, new in differs)
        raise ScoreError(f"{out} holds a run trained with {what}: remove it or use another --root")


def ensure_eval(model: Path, out: Path, *, seed: int = 0, progress=None, turns: int = 2,
                data: str | None = None, limit: int = TOY_EVAL["limit"]) -> dict:
    """Evaluate `model` on the toy test split (or on `data`, a JSONL of toy problems with question
    and answer fields) with `turns` attempts, on the first `limit` problems; `progress(name)` is a
    context giving progress callbacks."""
    import json
    from contextlib import nullcontext

    from score_cli.evaluate import Progress

    if (out / METRICS_FILE).exists():
        return json.loads((out / METRICS_FILE).read_text())["metrics"]
    cfg = EvalConfig(model=str(model), bench="toy", output_dir=str(out), resume=(out / "samples.jsonl").exists(),
                     limit=limit, samples=TOY_EVAL["samples"],
                     decoding=replace(TOY_EVAL["decoding"], seed=seed), turns=turns,
                     **({"data": data, "question_field": "question", "answer_field": "answer"} if data else {}))
    with progress(out.name) if progress else nullcontext(Progress()) as callbacks:
        return evaluate(cfg, callbacks).metrics


def run_demo(root: str = "runs/demo", *, seed: int = 0, steps: int | None = None,
             on_step: Callable[[str], None] = lambda s: None, callbacks=None,
             progress=None) -> list[tuple[str, dict]]:
    """Base -> Stage I -> Stage II in the toy world; returns [(model name, eval metrics)].

    `steps` RL steps per stage (None: recipes/toy.yaml's, as in `make repro`'s table: 80 in Stage I and
    40 in Stage II; the whole demo, base model included, takes 10 to 20 minutes on a 2-core CPU, README)."""
    root_dir = Path(root)
    recipe = recipe_path("toy.yaml")
    base = ensure_base(root_dir, seed, on_step)
    on_step("Stage I")
    overrides = {"max_steps": steps} if steps else {}
    s1 = ensure_stage(1, root_dir / "stage1", recipe=recipe, model=str(base), callbacks=callbacks,
                      overrides=overrides)
    on_step("Stage II")
    s2 = ensure_stage(2, root_dir / "stage2", recipe=recipe, from_checkpoint=str(s1), callbacks=callbacks,
                      overrides=overrides)
    rows = []
    for name, model in (("base", base), ("stage1", s1), ("stage2", s2)):
        on_step(f"evaluating {name}")
        rows.append((name, ensure_eval(model, root_dir / f"eval-{name}", seed=seed, progress=progress)))
    return rows
