"""Atomic output files and strict JSONL reading, so nothing already written is ever lost."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from score_cli.errors import ScoreError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes it 0600; the file gets what open() would give it
            os.fchmod(fd, file_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_mode(path: Path) -> int:
    """The mode a file written at `path` gets: an existing file's own, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process's umask, read without changing it where /proc says it (Linux), else set back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike, *, what: str = "file", line_numbers: bool = False,
               torn_tail_ok: bool = False) -> list:
    """Read a JSONL file; a malformed line (bad JSON, not UTF-8) raises a ScoreError naming the line.

    `line_numbers`: return (line number, row) pairs instead of rows. `torn_tail_ok`: a last line
    without its newline that does not parse (a write cut short, see `append_jsonl`) is left out.
    """
    path = Path(path)
    if not path.exists():
        raise ScoreError(f"{what} {path} does not exist: check the path")
    if path.is_dir():
        raise ScoreError(f"{what} {path} is a directory: pass a .jsonl file")
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if torn_tail_ok and not raw.endswith(b"\n"):
                try:
                    json.loads(raw.decode("utf-8"))
                except ValueError:  # UnicodeDecodeError is one too
                    break
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ScoreError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}): "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ScoreError(
                    f"{path}:{lineno}: malformed JSON ({e.msg}): each line must be one JSON object"
                ) from None
            if not isinstance(row, dict):
                raise ScoreError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row) if line_numbers else row)
    return rows


def check_output_is_dir(out: Path) -> None:
    """Refuse an output directory that is, or lies under, an existing file (one line, no traceback)."""
    for d in (out, *out.parents):  # the first existing one must be a directory
        if d.exists():
            if not d.is_dir():
                where = "is a file" if d == out else f"lies under {d}, which is a file"
                raise ScoreError(f"--output-dir {out} {where}, not a directory: choose another --output-dir")
            break


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Append rows to a JSONL file in one write, synced: what is written survives a crash; a kill in
    the middle can leave only the last line cut short (`read_jsonl(torn_tail_ok=True)` drops it)."""
    data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows).encode("utf-8")
    if not data:
        return
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode(path))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
