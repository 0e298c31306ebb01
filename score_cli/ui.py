"""Terminal output at the edge: rich progress bars and tables (library code never prints)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)
# Piped or logged output keeps whole tables (rich would wrap them to 80 columns).
stdout = Console(width=None if sys.stdout.isatty() else 160)


def announce(step: str) -> None:
    """One line on stderr as a long job (demo, repro) moves to its next step."""
    console.print(f"[bold cyan]==>[/] {step}")


@contextmanager
def eval_progress(description: str = "evaluating"):
    """A progress bar over problems showing problems/s and generated tokens/s.

    The bar appears when evaluation starts, so input errors found before it leave no trace.
    """
    from score_cli.evaluate import Progress as Callbacks

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[pps]:.2f} problems/s"),
        TextColumn("{task.fields[tps]:.0f} tok/s"),
        TimeElapsedColumn(),
        console=console,
    )
    state = {"t0": time.perf_counter(), "tokens": 0, "problems": 0, "resumed": None, "task": None}

    def rates():
        dt = max(time.perf_counter() - state["t0"], 1e-9)
        return {"pps": state["problems"] / dt, "tps": state["tokens"] / dt}

    def on_start(total: int) -> None:
        state["t0"] = time.perf_counter()
        state["task"] = bar.add_task(description, total=total, pps=0.0, tps=0.0)
        bar.start()

    def on_tokens(n: int) -> None:
        state["tokens"] += n
        bar.update(state["task"], **rates())

    def on_problems(n: int) -> None:
        if state["resumed"] is None:  # the first call reports problems resumed from disk
            state["resumed"] = n
        else:
            state["problems"] += n
        bar.update(state["task"], advance=n, **rates())

    try:
        yield Callbacks(start=on_start, tokens=on_tokens, problems=on_problems)
    finally:
        bar.stop()


def pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


def results_table(title: str, rows: Sequence[tuple[str, dict[str, dict[str, float]]]], turns: int = 2) -> Table:
    """The paper's columns per model: Accuracy@t1..tN, Delta(t1,t2), Delta i->c, Delta c->i (in %)."""
    table = Table(title=title)
    table.add_column("model")
    for t in range(turns):
        table.add_column(f"Acc@t{t + 1}", justify="right")
    if turns > 1:
        for col in ("Δ(t1,t2)", "Δ i→c", "Δ c→i", "fixed|wrong", "broken|right", "answer changed", "edit ratio"):
            table.add_column(col, justify="right")
    for name, m in rows:
        cells = [name] + [_with_ci(m[f"accuracy@t{t + 1}"]) for t in range(turns)]
        if turns > 1:
            keys = ("delta", "i->c", "c->i", "fixed|wrong", "broken|right", "answer_changed", "edit_ratio")
            cells += [_with_ci(m[f"{k}(t1,t2)"], signed=k == "delta") for k in keys]
        table.add_row(*cells)
    return table


def _with_ci(e: dict[str, float], signed: bool = False) -> str:
    v = f"{100 * e['value']:+.1f}" if signed else pct(e["value"])
    return f"{v} [{pct(e['low'])}, {pct(e['high'])}]"


def training_progress():
    """A TrainerCallback drawing a rich progress bar with the per-step SCoRe metrics."""
    from transformers import TrainerCallback

    class RichTraining(TrainerCallback):
        KEYS = (("reward/t1", "r1"), ("reward/t2", "r2"), ("delta", "Δ"), ("i2c", "i→c"), ("c2i", "c→i"),
                ("kl/t1", "kl1"), ("kl/t2", "kl2"), ("loss", "loss"))

        def __init__(self):
            self.bar = None
            self.task = None
            self.last = ""

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.bar = Progress(
                TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"), console=console,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, stats="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is None or not logs:
                return
            parts = [f"{short} {logs[k]:.3f}" for k, short in self.KEYS if isinstance(logs.get(k), int | float)]
            if parts:
                self.bar.update(self.task, stats="  ".join(parts))
                if not console.is_terminal:  # logs and CI: a line per logging step instead of a live bar
                    console.print(f"step {state.global_step}/{state.max_steps}  " + "  ".join(parts), highlight=False,
                                  soft_wrap=True)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return RichTraining()
