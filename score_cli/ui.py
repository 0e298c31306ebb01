"""Terminal output at the edge: rich progress bars and tables (library code never prints)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)
# Piped or logged output keeps whole tables (rich would wrap them to 80 columns).
stdout = Console(width=None if sys.stdout.isatty() else 160)


def announce(step: str) -> None:
    """One line on stderr as a long job (demo, repro) moves to its next step."""
    console.print(f"[bold cyan]==>[/] {step}")


@contextmanager
def eval_progress(description: str = "evaluating"):
    """A progress bar over problems, moving after every generated batch, with problems/s, generated
    tokens/s, the time so far and the time left (from this run's pace; resumed problems do not count).

    The bar appears when evaluation starts, so input errors found before it leave no trace.
    """
    from score_cli.evaluate import Progress as Callbacks

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("{task.fields[pps]:.2f} problems/s"),
        TextColumn("{task.fields[tps]:.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
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
        if state["resumed"] is None:  # the first call reports problems resumed from disk: not this run's pace
            state["resumed"] = n
            bar.reset(state["task"], completed=n, pps=0.0, tps=0.0)
            return
        state["problems"] += n
        bar.update(state["task"], advance=n, **rates())

    try:
        yield Callbacks(start=on_start, tokens=on_tokens, problems=on_problems)
    finally:
        bar.stop()


def pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


PAIR_ROWS = (("Δ", "delta", True), ("Δ i→c", "i->c", False), ("Δ c→i", "c->i", False),
             ("fixed|wrong", "fixed|wrong", False), ("broken|right", "broken|right", False),
             ("answer changed", "answer_changed", False), ("changed|wrong", "changed|wrong", False),
             ("fixed|changed", "fixed|changed", False),
             ("edit ratio", "edit_ratio", False))


def metric_rows(turns: int, keys: set[str]) -> list[list[tuple[str, str, bool]]]:
    """The table's rows, in sections: accuracy at each attempt; for every consecutive pair of
    attempts Δ, i→c, c→i and how the later attempt changed; Δ(t1,tN) for N > 2; then any majority
    vote or pass@k. Each row is (label, metrics key, signed)."""
    sections = [[(f"Acc@t{t}", f"accuracy@t{t}", False) for t in range(1, turns + 1)]]
    for a in range(1, turns):
        tag = f"(t{a},t{a + 1})"
        sections.append([(f"{label}{tag}" if label != "Δ" else f"Δ{tag}", f"{key}{tag}", signed)
                         for label, key, signed in PAIR_ROWS])
    if turns > 2:
        sections.append([(f"Δ(t1,t{turns})", f"delta(t1,t{turns})", True)])
    attempts = {f"t{t}" for t in range(1, turns + 1)}
    extra = sorted((k for k in keys if k.startswith(("maj@", "pass@")) and k.split("@")[-1] in attempts),
                   key=lambda k: (k.split("@")[0], int(k.split("@")[1]) if k.split("@")[1].isdigit() else 0,
                                  k.split("@")[-1]))
    if extra:
        sections.append([(k, k, False) for k in extra])
    return sections


def results_table(title: str, rows: Sequence[tuple[str, dict[str, dict[str, float]]]], turns: int = 2, *,
                  ci: bool = False) -> Table:
    """The paper's metrics in %, a column per model (or benchmark) and a row per metric: tall rather
    than wide, so every attempt pair of any --turns fits 80 columns. `ci` adds the 95% intervals."""
    from score_cli.compare import short_names

    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("metric (%)" + (", 95% CI" if ci else ""), no_wrap=True)
    for name in short_names([name for name, _ in rows]):  # a long name breaks after its "/", not mid-word
        table.add_column(name.replace("/", "/\n") if len(name) > 12 else name, justify="right", overflow="fold")
    keys = set().union(*(m for _, m in rows)) if rows else set()
    sections = metric_rows(turns, keys)
    for s, section in enumerate(sections):
        for i, (label, key, signed) in enumerate(section):
            cells = [_cell(m.get(key), signed, ci) for _, m in rows]
            table.add_row(label, *cells, end_section=i == len(section) - 1 and s < len(sections) - 1)
    return table


def _cell(e: dict[str, float] | None, signed: bool, ci: bool) -> str:
    if not e or e["value"] != e["value"]:  # not measured, or undefined (e.g. broken|right with no right answer)
        return "–"
    v = f"{100 * e['value']:+.1f}" if signed else pct(e["value"])
    return f"{v}\n[{pct(e['low'])}, {pct(e['high'])}]" if ci else v  # the interval under the value: narrow


def compare_table(rows: Sequence[dict]) -> Table:
    """`score compare`'s runs side by side (rows from `compare.comparison`), metrics in %."""
    from score_cli.compare import cell, headers

    cols = headers(rows)
    table = Table(box=box.SIMPLE_HEAD)
    for c in cols:
        numeric = c not in ("run", "model", "bench")
        table.add_column(c, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for r in rows:
        table.add_row(*(cell(r, c) for c in cols))
    return table


def env_lines(report: dict[str, str]) -> str:
    """`score env`'s report as lines to paste into an issue."""
    return "Copy-paste the following into a bug report:\n\n" + "\n".join(f"- {k}: {v}" for k, v in report.items())


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
