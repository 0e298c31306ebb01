"""Toy world: SCoRe trained with 3 attempts against SCoRe trained with 2, both evaluated with 4.

For each seed, the two-attempt model is `make repro`'s SCoRe run (Stage I then Stage II with
recipes/toy.yaml; reused when ROOT already holds it, e.g. a `make repro` root), and the
three-attempt model is the same recipe, steps and seed with `turns: 3` in both stages. Every model
(the base too) is evaluated like `make demo` evaluates (300 toy test problems x 4 samples at
temperature 1) but with 4 attempts, so the table shows whether training on a third attempt carries
over to attempts the model was never trained on.

    python scripts/turns_compare.py --base runs/repro/base --root runs/repro --seeds 0,1,2 --out docs/turns

Writes OUT/results.json (accuracy per attempt, per model and seed), OUT/turns.png (mean accuracy
per attempt with the seeds' standard deviation) and prints the README's table.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

EVAL_TURNS = 4
MODELS = ("base", "SCoRe, 2 attempts", "SCoRe, 3 attempts")


def evaluate_turns(model: Path, out: Path, seed: int) -> dict[str, float]:
    """accuracy@t1..t4 (and the deltas) of `model` on the toy test split, cached in `out`."""
    from score_cli.demo import ensure_eval

    metrics = ensure_eval(model, out, seed=seed, turns=EVAL_TURNS)
    return {k: v["value"] for k, v in metrics.items() if k.startswith(("accuracy@t", "delta("))}


def train_models(base: Path, root: Path, seed: int, steps: int) -> dict[str, Path]:
    from score_cli.demo import ensure_stage, recipe_path
    from score_cli.repro import run_method

    recipe = recipe_path("toy.yaml")
    two = run_method("SCoRe", base, root, seed, recipe, steps)
    d = root / f"seed{seed}"
    per_stage = {"seed": seed, "max_steps": steps}
    s1 = ensure_stage(1, d / "stage1-3turns", model=str(base), recipe=recipe, overrides={**per_stage, "turns": 3})
    three = ensure_stage(2, d / "stage2-3turns", from_checkpoint=str(s1), recipe=recipe, overrides=per_stage)
    return {"base": base, "SCoRe, 2 attempts": two, "SCoRe, 3 attempts": three}


def summarise(results: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """model -> metric -> (mean, std over seeds), in %."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in MODELS:
        runs = [results[s][name] for s in sorted(results)]
        out[name] = {}
        for key in runs[0]:
            values = [100 * r[key] for r in runs]
            out[name][key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def table(summary: dict) -> str:
    """The README's table: accuracy per attempt and the change between consecutive attempts (mean ± std)."""
    accs = [f"accuracy@t{k}" for k in range(1, EVAL_TURNS + 1)]
    deltas = [f"delta(t{k},t{k + 1})" for k in range(1, EVAL_TURNS)] + [f"delta(t1,t{EVAL_TURNS})"]
    heads = [f"t{k}" for k in range(1, EVAL_TURNS + 1)] + [d.replace("delta", "Δ") for d in deltas]
    lines = ["| model | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name, m in summary.items():
        cells = [f"{m[c][0]:.1f} ± {m[c][1]:.1f}" for c in accs] + [f"{m[c][0]:+.1f} ± {m[c][1]:.1f}" for c in deltas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict, path: Path, seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    x = list(range(1, EVAL_TURNS + 1))
    for name, m in summary.items():
        means = [m[f"accuracy@t{k}"][0] for k in x]
        stds = [m[f"accuracy@t{k}"][1] for k in x]
        ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xticks(x)
    ax.set_xlabel("attempt")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"toy test problems, 4 attempts (seeds {', '.join(map(str, seeds))})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the toy base model (score toy init)")
    ap.add_argument("--root", required=True, help="where the runs go (a make repro root reuses its SCoRe runs)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=40, help="RL steps per stage (make repro's)")
    ap.add_argument("--out", default="docs/turns")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    base, root, out = Path(args.base), Path(args.root), Path(args.out)
    results = {}
    for seed in seeds:
        models = train_models(base, root, seed, args.steps)
        results[seed] = {}
        for name, model in models.items():
            where = root / f"seed{seed}" / f"eval-turns4-{name.split(',')[-1].strip().replace(' ', '-')}"
            results[seed][name] = evaluate_turns(model, where, seed)
            print(f"seed {seed} {name}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in results[seed][name].items()),
                  flush=True)
    summary = summarise(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"seeds": seeds, "steps": args.steps, "eval_turns": EVAL_TURNS,
                                                  "per_seed": results, "summary": summary}, indent=1) + "\n")
    plot(summary, out / "turns.png", seeds)
    print(table(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
