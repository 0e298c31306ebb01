"""`make repro`: the paper's comparison (SCORE_PAPER.md, ablations) in the toy world, over seeds.

Methods, all from the same toy base model and with the same number of RL steps in total:

- base: no training;
- single-turn RL: attempt 1 only, rewarded (the paper's "w/o multi-turn training");
- Stage II only: Stage II straight from the base (the paper's "w/o Stage I");
- SCoRe, alpha = 0: Stage I, then Stage II without the progress bonus ("w/o reward shaping");
- SCoRe: Stage I, then Stage II with alpha = 10;
- Pair-SFT, STaR: the paper's supervised baselines (`score sft`), from the base;
- Stage I + STaR: STaR in place of Stage II's REINFORCE (the paper's Table 4 ablation).

Budgets: S1 RL steps in Stage I and S in Stage II (S1 = S unless `stage1_steps` is given), T = S1 + S
for a one-stage method, each step on 16 problems x 4 rollouts (64 sampled chains, 64 sequences
trained). The SFT methods get the same: Pair-SFT samples 4 first attempts at T x 16 problems and
takes T steps of 64 sequences; STaR two rounds of 4 traces at T/2 x 16 problems and T/2 steps each
(each round fine-tunes the base again, as STaR does); Stage I + STaR one round of S after Stage I's
S1 steps. So every method samples as many chains (Pair-SFT's have one attempt) and takes as many
optimizer steps of the same size.

Every method is evaluated on held-out toy test problems; the table gives the mean and standard
deviation over seeds. Every run directory is reused when present, so an interrupted repro resumes.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from score_cli.demo import check_same_settings, ensure_base, ensure_eval, ensure_stage, recipe_path
from score_cli.errors import ScoreError
from score_cli.files import atomic_write_json, atomic_write_text
from score_cli.models import read_run_record
from score_cli.toy_selection import BaseBand, choose_bases

if TYPE_CHECKING:
    from score_cli.toy_model import ToyData

log = logging.getLogger(__name__)

METHODS = ("base", "single-turn RL", "Stage II only", "SCoRe (alpha=0)", "SCoRe", "Pair-SFT", "STaR",
           "Stage I + STaR")
RL_METHODS = ("single-turn RL", "Stage II only", "SCoRe (alpha=0)", "SCoRe")
# Each RL method's own learning rate where it is not the recipe's Stage II rate (for a one-stage method
# its only stage's, for a two-stage one its Stage II's; Stage I is shared and keeps the recipe's),
# so that a rate chosen for SCoRe is not a rate its ablations never had: each one-stage method's was
# chosen on held-out training problems among 1e-4, 5e-5 and 2.5e-5 (docs/experiments.md, section 39);
# SCoRe and SCoRe (alpha=0) take the recipe's Stage II rate (2.5e-5 in recipes/toy.yaml, section 38).
METHOD_LEARNING_RATES: dict[str, float] = {"single-turn RL": 5e-5, "Stage II only": 5e-5}
PROBLEMS_PER_STEP = 16  # recipes/toy.yaml: 64 sequences per step, 4 rollouts per problem
# The paper's columns, then the conditional rates that say *how* attempt 2 changes: an independent
# retry fixes about as many wrong answers as it breaks right ones, a copy neither, a self-corrector
# fixes more than it breaks.
COLUMNS = (("t1", "accuracy@t1"), ("t2", "accuracy@t2"), ("Δ(t1,t2)", "delta(t1,t2)"),
           ("Δ i→c", "i->c(t1,t2)"), ("Δ c→i", "c->i(t1,t2)"), ("fixed|wrong", "fixed|wrong(t1,t2)"),
           ("broken|right", "broken|right(t1,t2)"), ("answer changed", "answer_changed(t1,t2)"),
           ("fixed|changed", "fixed|changed(t1,t2)"))


def recipe_steps(recipe: str) -> tuple[int, int]:
    """(Stage I's, Stage II's) RL steps in `recipe` (its `stage1:` / `stage2:` sections over its top level)."""
    from score_cli.train import read_recipe, stage_recipe

    parsed = read_recipe(recipe)
    return int(stage_recipe(*parsed, 1)["max_steps"]), int(stage_recipe(*parsed, 2)["max_steps"])


def run_method(method: str, base: Path, root: Path, seed: int, recipe: str, steps: int, callbacks=None,
               stage1_steps: int | None = None, learning_rate: float | None = None) -> Path:
    """Train one method for one seed (reusing finished runs); returns the model to evaluate. `steps`:
    Stage II's RL steps, and Stage I's unless `stage1_steps` is given; `learning_rate`: an RL
    method's Stage II (or only stage's) rate over the recipe's."""
    if method == "base":
        return base
    d = root / f"seed{seed}"
    common = {"recipe": recipe, "callbacks": callbacks}
    s1 = stage1_steps or steps
    total = s1 + steps  # as many steps as the two SCoRe stages together
    lr = {"learning_rate": learning_rate} if learning_rate is not None else {}
    one_stage = {"seed": seed, "max_steps": total, **lr}
    if method == "single-turn RL":
        return ensure_stage(2, d / "single-turn", model=str(base), overrides={**one_stage, "single_turn": True},
                            **common)
    if method == "Stage II only":
        return ensure_stage(2, d / "stage2-only", model=str(base), overrides=one_stage, **common)
    def sft(n: int) -> dict:  # n optimizer steps of 64 sequences, on traces of n x 16 problems
        return {"seed": seed, "samples_per_problem": 4, "max_steps": n, "problems_per_round": n * PROBLEMS_PER_STEP}
    if method == "Pair-SFT":
        return ensure_sft(d / "pair-sft", method="pair", model=str(base), overrides=sft(total), **common)
    if method == "STaR":
        return ensure_sft(d / "star", method="star", model=str(base), overrides={**sft(total // 2), "rounds": 2},
                          **common)
    stage1 = ensure_stage(1, d / "stage1", model=str(base), overrides={"seed": seed, "max_steps": s1}, **common)
    if method == "Stage I + STaR":
        return ensure_sft(d / "stage1-star", method="star", from_checkpoint=str(stage1), overrides=sft(steps),
                          **common)
    alpha = 0.0 if method == "SCoRe (alpha=0)" else None
    name = "stage2-alpha0" if alpha == 0.0 else "stage2"
    extra = {"alpha": alpha} if alpha is not None else {}
    return ensure_stage(2, d / name, from_checkpoint=str(stage1),
                        overrides={"seed": seed, "max_steps": steps, **extra, **lr}, **common)


def ensure_sft(out: Path, *, recipe: str, callbacks=None, **request) -> Path:
    """A `score sft` run in `out`, reused when finished and resumed when started; one made with other
    settings (the recipe's top level, the method, the overrides) is an error, as in `ensure_stage`."""
    from score_cli.sft import SFTRequest, run_sft
    from score_cli.train import load_recipe

    record = read_run_record(out) if out.exists() else None
    if record:
        asked = {**load_recipe(recipe), **(request.get("overrides") or {}), "method": request.get("method")}
        check_same_settings(out, record, asked)
    if record and record.get("finished"):
        return out
    run_sft(SFTRequest(recipe=recipe, output_dir=str(out), resume=record is not None, **request), callbacks=callbacks)
    return out


def method_learning_rates(asked: dict[str, float] | None = None) -> dict[str, float]:
    """The RL methods' own learning rates over the recipe's: `asked` over `METHOD_LEARNING_RATES`.
    A method that is not an RL method, or a rate that is not positive, is a one-line error."""
    wrong = [m for m in asked or {} if m not in RL_METHODS]
    if wrong:
        raise ScoreError(f"--learning-rate names {', '.join(map(repr, wrong))}, which is not an RL method: give "
                         f"one of {', '.join(RL_METHODS)}, e.g. --learning-rate 'SCoRe=2.5e-5'")
    bad = [f"{m}={v}" for m, v in (asked or {}).items() if not v > 0]
    if bad:
        raise ScoreError(f"--learning-rate {', '.join(bad)}: a learning rate must be a positive number")
    return {**METHOD_LEARNING_RATES, **(asked or {})}


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The methods asked for, in METHODS' order; an unknown one is a one-line error naming them all."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ScoreError(f"unknown method(s) {', '.join(map(repr, unknown)) or '(none given)'}: choose from "
                         f"{', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in methods)


def run_repro(root: str = "runs/repro", *, seeds: tuple[int, ...] = (0, 1, 2), base_dir: str | None = None,
              base_per_seed: bool | None = None, steps: int | None = None, stage1_steps: int | None = None,
              methods: Sequence[str] = METHODS,
              data: ToyData | None = None, band: BaseBand | None = None, recipe: str | None = None,
              learning_rates: dict[str, float] | None = None,
              on_step: Callable[[str], None] = lambda s: None, callbacks=None, progress=None) -> dict[str, Any]:
    """Train and evaluate each method for every seed; write results.md, results.json and plots.

    `base_per_seed` (the default unless `base_dir` is given): seed s's methods all start from a base
    built with seed s (ROOT/seedS/base), so that the spread over seeds includes the base's (as large
    as the effect in the toy world: docs/experiments.md, sections 14-17); False: every seed starts
    from `base_dir`, or from ROOT/base (seed 0) built once. `data`: the bases' toy data (default
    `DEFAULT_DATA`). `band`: keep a seed's base only if its probe on selection problems lands in the
    band, else build the next unused seed (`toy_selection.choose_bases`); the seeds kept are the ones
    reported, and every try is in results.json. `recipe`: the RL and SFT settings (default
    `recipes/toy.yaml`); `learning_rates`: RL methods' own Stage II rates over it (`method_learning_rates`)."""
    methods = check_methods(methods)
    rates = method_learning_rates(learning_rates)
    if base_dir and base_per_seed:
        raise ScoreError("--base reuses one base model for every seed and --base-per-seed builds one per seed: "
                         "give one of them")
    base_per_seed = not base_dir if base_per_seed is None else base_per_seed
    if band and not base_per_seed:
        raise ScoreError("--base-band chooses a base per seed: drop --base / --one-base, or drop --base-band")
    if data and base_dir:
        raise ScoreError("--data-json builds new bases and --base reuses one: give one of them")
    out = Path(root)
    recipe = recipe or recipe_path("toy.yaml")
    from score_cli.train import load_recipe

    recipe_rate = load_recipe(recipe, 2).get("learning_rate")
    used_rates = {m: rates.get(m, recipe_rate) for m in methods if m in RL_METHODS}
    if steps is None:  # the recipe's, Stage I's included unless given
        stage1, steps = recipe_steps(recipe)
        stage1_steps = stage1_steps or stage1
    stage1_steps = None if stage1_steps == steps else stage1_steps
    if (stage1_steps or steps) % 2 != steps % 2:
        raise ScoreError(f"Stage I's {stage1_steps} steps and Stage II's {steps} add up to an odd number, which STaR's "
                         "two rounds cannot split: make both even or both odd")
    started = time.perf_counter()

    def build(path: Path, seed: int) -> Path:
        return ensure_base(path.parent, seed, on_step, data)

    chosen: dict[int, Path] = {}
    selection = None
    if band:
        chosen, selection = choose_bases(out, seeds, band, build, on_step)
        seeds = tuple(chosen)
    shared = None if base_per_seed else Path(base_dir) if base_dir else ensure_base(out, 0, on_step, data)
    results: dict[str, dict[int, dict]] = {m: {} for m in methods}
    for seed in seeds:
        base = shared or chosen.get(seed) or build(out / f"seed{seed}" / "base", seed)
        for method in methods:
            on_step(f"seed {seed}: {method}")
            model = run_method(method, base, out, seed, recipe, steps, callbacks, stage1_steps, rates.get(method))
            tag = method.replace(" ", "-").replace("(", "").replace(")", "").replace("=", "")
            results[method][seed] = ensure_eval(model, out / f"seed{seed}" / f"eval-{tag}", seed=seed,
                                                progress=progress)
    summary = summarise(results)
    atomic_write_json(out / "results.json", {"seeds": list(seeds), "steps_per_stage": steps,
                                             **({"stage1_steps": stage1_steps} if stage1_steps else {}),
                                             "summary": summary, "recipe": recipe,
                                             "learning_rates": used_rates,
                                             "base_per_seed": base_per_seed,
                                             **({"data": asdict(data)} if data else {}),
                                             **({"base_selection": selection} if selection else {}),
                                             # reused runs cost nothing here: a resumed repro reports its own share
                                             "seconds_this_invocation": round(time.perf_counter() - started),
                                             "per_seed": {m: {str(s): _values(v) for s, v in r.items()}
                                                          for m, r in results.items()}})
    atomic_write_text(out / "results.md", markdown_table(summary, seeds, steps, base_per_seed, selection, stage1_steps,
                                                         used_rates))
    plot_accuracy(summary, out / "accuracy_per_attempt.png")
    plot_training(out, seeds, out / "training_curves.png", methods)
    return summary


def _values(metrics: dict) -> dict[str, float]:
    return {key: metrics[key]["value"] for _, key in COLUMNS}


def summarise(results: dict[str, dict[int, dict]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation over seeds of each column, per method."""
    summary = {}
    for method, per_seed in results.items():
        row = {}
        for col, key in COLUMNS:
            vals = [m[key]["value"] for m in per_seed.values()]
            row[col] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        summary[method] = row
    return summary


def markdown_table(summary: dict, seeds, steps: int, base_per_seed: bool = True,
                   selection: dict | None = None, stage1_steps: int | None = None,
                   rates: dict[str, float | None] | None = None) -> str:
    names = (c.replace("|", "\\|") for c, _ in COLUMNS)  # a bare | would split the markdown column
    head = "| method | " + " | ".join(names) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    rows = "".join(
        f"| {m} | " + " | ".join(f"{100 * mu:+.1f} ± {100 * sd:.1f}" if c.startswith("Δ(") else
                                 f"{100 * mu:.1f} ± {100 * sd:.1f}" for c, (mu, sd) in row.items()) + " |\n"
        for m, row in summary.items()
    )
    budget = (f"{steps} RL steps per stage, {2 * steps} for one-stage methods" if not stage1_steps else
              f"{stage1_steps} RL steps in Stage I and {steps} in Stage II, {stage1_steps + steps} for one-stage "
              "methods")
    note = (f"\nToy test problems, sampled at temperature 1; mean ± standard deviation over seeds "
            f"{', '.join(map(str, seeds))} (in %); {budget}; "
            "the SFT methods sample as many chains and take as many optimizer steps; "
            + ("each seed's methods start from a base built with that seed.\n" if base_per_seed else
               "every seed's methods start from the same base (seed 0).\n"))
    if selection:
        rejected = [t for t in selection["tries"] if not t["kept"]]
        note += (f"Bases kept only when their probe on {selection['band']['problems']} selection problems was in the "
                 "band (score_cli/toy_selection.py); "
                 + ("rejected: " + "; ".join(f"seed {t['seed']} ({', '.join(t['why'])})" for t in rejected) + ".\n"
                    if rejected else "none rejected.\n"))
    if rates:  # every RL method's, since they need not share the recipe's
        note += ("Learning rates (Stage II's, or the one stage's; Stage I's is the recipe's): "
                 + ", ".join(f"{m} {v:g}" if v else f"{m} the config's default" for m, v in rates.items()) + ".\n")
    return head + rows + note


def plot_accuracy(summary: dict, path: Path) -> Path:
    from score_cli.report import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(8.0, 1.15 * len(summary)), 3.6))
    width = 0.38
    for i, (col, colour) in enumerate((("t1", "#9ecae1"), ("t2", "#3182bd"))):
        xs = [j + (i - 0.5) * width for j in range(len(summary))]
        mus = [100 * row[col][0] for row in summary.values()]
        sds = [100 * row[col][1] for row in summary.values()]
        ax.bar(xs, mus, width, yerr=sds, color=colour, label=f"accuracy@{col}", capsize=3)
    labels = [m.replace(" (", "\n(").replace(" + ", " +\n") for m in summary]  # two lines for the long names
    ax.set_xticks(range(len(summary)), labels, fontsize=8)
    ax.set_ylabel("% correct (toy test)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TRAINED_RUNS = {"single-turn RL": ["single-turn"], "Stage II only": ["stage2-only"],
                "SCoRe (alpha=0)": ["stage1", "stage2-alpha0"], "SCoRe": ["stage1", "stage2"]}


def method_curve(root: Path, seed: int, parts: list[str], key: str) -> tuple[list[int], list[float]]:
    """One logged value over the RL steps of a method's runs, one stage after the other."""
    from score_cli.report import training_log

    offset, xs, ys = 0, [], []
    for part in parts:
        d = root / f"seed{seed}" / part
        if read_run_record(d) is None:
            continue
        history = [h for h in training_log(d) if "reward/t1" in h]
        xs += [offset + h["step"] for h in history if key in h]
        ys += [h[key] for h in history if key in h]
        offset += max((h["step"] for h in history), default=0)
    return xs, ys


def plot_training(root: Path, seeds, path: Path, methods: Sequence[str] = METHODS) -> Path:
    """Per trained method, over RL steps (seed 0 solid, others faint): reward/t1 and reward/t2
    (top), and the paper's collapse picture (bottom): how often attempt 2 changes the final answer
    after a wrong and after a right first attempt (learnt self-correction pulls them apart;
    collapse takes both to zero), and how often it copies attempt 1 word for word."""
    from score_cli.report import _plt

    plt = _plt()
    rows = ((("reward/t1", "#9ecae1", "reward t1"), ("reward/t2", "#3182bd", "reward t2")),
            (("changed_after_wrong", "#e6550d", "answer changed after a wrong t1"),
             ("changed_after_right", "#fdae6b", "... after a right t1"), ("zero_edit", "#756bb1", "copy of attempt 1")))
    runs = {m: parts for m, parts in TRAINED_RUNS.items() if m in methods} or TRAINED_RUNS
    fig, axes = plt.subplots(2, len(runs), figsize=(4 * len(runs), 6.2), sharey="row", squeeze=False)
    for col, (method, parts) in enumerate(runs.items()):
        for row, curves in enumerate(rows):
            ax = axes[row][col]
            for seed in seeds:
                alpha = 1.0 if seed == seeds[0] else 0.3
                for key, colour, label in curves:
                    xs, ys = method_curve(root, seed, parts, key)
                    if xs:
                        ax.plot(xs, ys, color=colour, alpha=alpha, label=label if seed == seeds[0] else None)
            ax.grid(alpha=0.3)
            if row == 1 and not ax.lines:  # single-turn RL: no second attempt to change
                ax.text(0.5, 0.5, "one attempt:\nnothing to change", ha="center", va="center",
                        transform=ax.transAxes, fontsize=9, color="grey")
                ax.set_xticks([])
            if row == 0:
                ax.set_title(method, fontsize=9)
            else:
                ax.set_xlabel("RL step")
    axes[0][0].set_ylabel("training reward")
    axes[1][0].set_ylabel("share of rollouts")
    for row in range(2):  # on the first panel of the row that has curves
        first = next((ax for ax in axes[row] if ax.lines), None)
        if first is not None:
            first.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
