"""Benchmark rows into `Problem`s: hub datasets (one line that says to pass --data when the hub
cannot be reached) and local .jsonl/.parquet files (every user mistake a one-line `ScoreError`
naming the file, the line or the field).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from score_cli.errors import ScoreError
from score_cli.tasks.base import Problem


def _hub_dataset(path: str, *, name: str | None = None, split: str, bench: str):
    """Load a hub dataset; offline (or unreachable), one line that says to pass --data instead."""
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as e:  # noqa: BLE001 - any failure to reach the hub means the same thing to the user
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ScoreError(
            f"could not load {path} ({split}) from the Hugging Face Hub ({reason}): connect to the hub, "
            f"or download it elsewhere and pass --data FILE.jsonl|.parquet instead of --bench {bench}"
        ) from None


def _rows_from_file(path: str) -> tuple[list[dict], list[str]]:
    """The rows of a local data file, and where each one is ('FILE:LINE' or 'FILE row N')."""
    from score_cli.files import read_jsonl

    p = Path(path)
    if not p.exists():
        raise ScoreError(f"data file {p} does not exist: check the --data path")
    if p.is_dir():
        raise ScoreError(f"data file {p} is a directory: pass a .jsonl or .parquet file with --data")
    if p.suffix == ".jsonl" or p.suffix == ".json":
        numbered = read_jsonl(p, what="data file", line_numbers=True)
        return [row for _, row in numbered], [f"{p}:{n}" for n, _ in numbered]
    if p.suffix == ".parquet":
        import datasets

        try:
            rows = list(datasets.Dataset.from_parquet(str(p)))
        except Exception as e:  # noqa: BLE001
            raise ScoreError(f"data file {p} is not a readable parquet file ({type(e).__name__}): check it") from None
        return rows, [f"{p} row {i + 1}" for i in range(len(rows))]
    raise ScoreError(f"data file {p} has an unsupported extension: use .jsonl or .parquet")


def problems_from_rows(
    rows: Sequence[dict], *, question_field: str, answer_field: str, source: str, id_field: str | None = None,
    where: Sequence[str] | None = None,
) -> list[Problem]:
    """Turn raw rows into Problems, naming the missing field and the fields that do exist. A row
    without a question or answer is refused; with `where` (a local file: each row's place, e.g.
    FILE:LINE), so is a blank one, named by its place."""
    if not rows:
        raise ScoreError(f"{source} holds no problems: pass a file with at least one row")
    first = rows[0]
    for fld, opt in ((question_field, "--question-field"), (answer_field, "--answer-field")):
        if fld not in first:
            raise ScoreError(
                f"{source} has no field '{fld}' (fields: {', '.join(sorted(first))}): pass {opt} NAME"
            )
    problems = []
    for i, row in enumerate(rows):
        at = where[i] if where is not None else f"{source}: row {i + 1}"
        for fld in (question_field, answer_field):
            if row.get(fld) is None:
                raise ScoreError(f"{at}: the row has no '{fld}': fix or drop it")
            if where is not None and not str(row[fld]).strip():  # a local file, which the user can fix
                raise ScoreError(f"{at}: '{fld}' is empty: fill it in or drop the row")
        pid = str(row[id_field]) if id_field and id_field in row else str(row.get("id", row.get("unique_id", i)))
        problems.append(Problem(id=pid, question=str(row[question_field]), answer=str(row[answer_field])))
    return problems


def env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
