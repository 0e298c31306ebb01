"""`score compare`: evaluation runs side by side, read from each run's metrics.json; and the short,
readable model names every table uses."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from score_cli.errors import ScoreError

# (header, metrics.json key, signed): the paper's columns, in %.
COLUMNS = (("t1", "accuracy@t1", False), ("t2", "accuracy@t2", False), ("Δ(t1,t2)", "delta(t1,t2)", True),
           ("Δ i→c", "i->c(t1,t2)", False), ("Δ c→i", "c->i(t1,t2)", False))


def _parts(name: str) -> list[str]:
    """A model name as the components that can tell it apart: a path's components, or a hub id whole."""
    from score_cli.models import looks_like_path

    clean = name.rstrip("/\\") or name
    if os.path.exists(os.path.expanduser(clean)) or looks_like_path(clean):
        return [p for p in Path(os.path.normpath(os.path.expanduser(clean))).parts if p not in ("/", "")] or [clean]
    return [clean]


def short_names(names: Sequence[str]) -> list[str]:
    """Readable names for models: a hub id as it is, a path by its last component (with its parent for
    a `checkpoint-N`), and as many more components as it takes to tell equal ones apart."""
    parts = [_parts(n) for n in names]
    depth = [2 if len(p) > 1 and re.fullmatch(r"checkpoint-\d+", p[-1]) else 1 for p in parts]

    def label(i: int) -> str:
        return "/".join(parts[i][-depth[i]:])

    for _ in range(max((len(p) for p in parts), default=0)):
        labels = [label(i) for i in range(len(names))]
        clashes = [i for i, x in enumerate(labels) if labels.count(x) > 1 and depth[i] < len(parts[i])]
        if not clashes:
            break
        for i in clashes:
            depth[i] += 1
    return [label(i) for i in range(len(names))]


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """An eval run's metrics.json; anything else is one line saying what to pass instead."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ScoreError(f"{d} is not a directory: pass the --output-dir of score eval runs")
    f = d / "metrics.json"
    if not f.exists():
        hint = (" (an interrupted run: finish it with score eval ... --resume)" if (d / "samples.jsonl").exists()
                else ": pass the --output-dir of a score eval run")
        raise ScoreError(f"{d} has no metrics.json{hint}")
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ScoreError(f"{f} is corrupt: evaluate again with score eval") from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise ScoreError(f"{f} is not a score eval record (no metrics): pass the --output-dir of score eval runs")
    return record


def comparison(run_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """One row per run: run, model (short name), bench, the paper's columns (fractions) and n."""
    if not run_dirs:
        raise ScoreError("no runs to compare: pass the output directories of score eval runs")
    records = [read_metrics(d) for d in run_dirs]
    models = short_names([str(r.get("model", "?")) for r in records])
    runs = short_names([str(Path(d).resolve()) for d in run_dirs])
    rows = []
    for run, model, r in zip(runs, models, records, strict=True):
        bench = str(r.get("benchmark", "?"))
        if bench.startswith("data:"):
            bench = "data:" + Path(bench[5:]).name
        m = r["metrics"]
        row = {"run": run, "model": model, "bench": bench, "n": r.get("n_problems"), "turns": r.get("turns")}
        for header, key, _ in COLUMNS:
            row[header] = (m.get(key) or {}).get("value")
        rows.append(row)
    return rows


def headers(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The table's columns: `run` only where two runs share a model and benchmark."""
    pairs = [(r["model"], r["bench"]) for r in rows]
    first = ["run"] if len(set(pairs)) < len(pairs) else []
    return [*first, "model", "bench", *(h for h, _, _ in COLUMNS), "n"]


def cell(row: dict[str, Any], header: str) -> str:
    """A row's value as shown: metrics in % with one decimal (Δ signed), '–' where a run lacks it."""
    value = row.get(header)
    signed = next((s for h, _, s in COLUMNS if h == header), None)
    if signed is None:
        return "–" if value is None else str(value)
    if not isinstance(value, int | float) or value != value:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a markdown table (metrics in %)."""
    cols = headers(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r, c).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"
