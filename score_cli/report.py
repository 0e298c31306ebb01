"""`score report`: PNG plots of a run's training curves and of an evaluation's transitions."""

from __future__ import annotations

import json
from pathlib import Path

from score_cli.errors import ScoreError
from score_cli.files import read_jsonl

# Panels and their curves; "{k}" stands for each attempt k logged (reward/t1, reward/t2, ...), "{p}"
# for each later pair of attempts (delta/t2t3, ...): a run with N attempts draws them all.
CURVES = (
    ("reward per attempt", ("reward/t{k}",)),
    ("Δ(t1,t2) and transitions", ("delta", "i2c", "c2i", "delta/{p}")),
    ("behaviour collapse: attempt 2 vs 1", ("answer_changed", "zero_edit")),
    ("answer changed, by attempt 1", ("changed_after_wrong", "changed_after_right")),
    ("KL to the base model per attempt", ("kl/t{k}",)),
    ("attempt length (tokens)", ("length/t{k}",)),
)


def _curve_keys(history: list[dict], keys: tuple[str, ...]) -> list[str]:
    """`keys` with "{k}" and "{p}" expanded over the attempts and pairs the history holds."""
    attempts = max((int(k.rsplit("t", 1)[1]) for h in history for k in h
                    if k.startswith("reward/t") and k.rsplit("t", 1)[1].isdigit()), default=2)
    out = []
    for key in keys:
        if "{k}" in key:
            out += [key.format(k=k) for k in range(1, attempts + 1)]
        elif "{p}" in key:
            out += [key.format(p=f"t{k}t{k + 1}") for k in range(2, attempts)]
        else:
            out.append(key)
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_log(run_dir: Path) -> list[dict]:
    """The per-step logs of a training run (final record, else the newest readable checkpoint state)."""
    from score_cli.models import read_run_record

    record = read_run_record(run_dir)  # a corrupt record is a one-line error
    history = record.get("log_history") if record else None
    if history:
        return _log_entries(history, run_dir / "score_run.json")
    states = [p for p in run_dir.glob("checkpoint-*/trainer_state.json") if p.parent.name.split("-")[-1].isdigit()]
    for state in sorted(states, key=lambda p: int(p.parent.name.split("-")[-1]), reverse=True):
        try:  # a checkpoint being written (or cut short) is skipped for the one before it
            return _log_entries(json.loads(state.read_text(encoding="utf-8")).get("log_history") or [], state)
        except (ValueError, AttributeError):
            continue
    return []


def _log_entries(history, source: Path) -> list[dict]:
    if not isinstance(history, list) or not all(isinstance(h, dict) and "step" in h for h in history):
        raise ScoreError(f"{source}: log_history is not a list of logged steps: re-run the stage that wrote it")
    return history


def plot_training(history: list[dict], out: Path, title: str = "") -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4))
    for ax, (name, keys) in zip(axes, CURVES, strict=True):
        for k in _curve_keys(history, keys):
            pts = [(h["step"], h[k]) for h in history if k in h]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=k, marker="." if len(pts) < 40 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:  # a panel with nothing logged (e.g. a malformed log) has no legend to draw
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def transition_counts(rows: list[dict]) -> dict[str, int]:
    """Counts of c->c, i->c, c->i, i->i between attempt 1 and 2 over all chains."""
    counts = {"c->c": 0, "i->c": 0, "c->i": 0, "i->i": 0}
    for r in rows:
        for chain in r["chains"]:
            a, b = chain[0]["correct"], chain[1]["correct"]
            counts[f"{'c' if a else 'i'}->{'c' if b else 'i'}"] += 1
    return counts


def plot_transitions(runs: dict[str, list[dict]], out: Path) -> Path:
    """Per evaluated model: stacked bars of unchanged-right, i->c, c->i, unchanged-wrong."""
    plt = _plt()
    colours = {"c->c": "#9ecae1", "i->c": "#31a354", "c->i": "#de2d26", "i->i": "#d9d9d9"}
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(runs), 3.6))
    for x, rows in enumerate(runs.values()):
        counts = transition_counts(rows)
        total = max(sum(counts.values()), 1)
        bottom = 0.0
        for k in ("c->c", "i->c", "c->i", "i->i"):
            h = 100 * counts[k] / total
            ax.bar(x, h, bottom=bottom, color=colours[k], label=k if x == 0 else None)
            if h >= 4:
                ax.text(x, bottom + h / 2, f"{h:.0f}", ha="center", va="center", fontsize=8)
            bottom += h
    ax.set_xticks(range(len(runs)), list(runs), rotation=15, fontsize=8)
    ax.set_ylabel("% of problems (attempt 1 -> attempt 2)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def report(run_dir: str, out_dir: str | None = None) -> list[Path]:
    """Draw whatever `run_dir` holds: training curves and/or eval transitions (also in eval*/ subdirs)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ScoreError(f"run directory {root} does not exist: pass a score stage or eval output directory")
    out = Path(out_dir) if out_dir else root
    out.mkdir(parents=True, exist_ok=True)
    written = []
    history = training_log(root)
    if history:
        written.append(plot_training(history, out / "training_curves.png", title=root.name))
    evals = {}
    for d in [root, *sorted(root.glob("eval*"))]:
        samples = d / "samples.jsonl"
        if samples.exists():
            rows = read_jsonl(samples, what="samples file", line_numbers=True)
            for lineno, row in rows:
                chains = row.get("chains")
                if not (isinstance(chains, list) and chains and all(
                        isinstance(c, list) and c and all(isinstance(a, dict) and "correct" in a for a in c)
                        for c in chains)):
                    raise ScoreError(f"{samples}:{lineno}: not a score eval row (needs 'chains' of attempts with "
                                     "'correct'): pass the directory of a `score eval` run")
            if rows and len(rows[0][1]["chains"][0]) >= 2:
                evals[d.name] = [row for _, row in rows]
    if evals:
        written.append(plot_transitions(evals, out / "transitions.png"))
    if not written:
        raise ScoreError(f"{root} holds no training log or evaluation samples: pass a score run directory")
    return written
