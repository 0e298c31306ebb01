"""The options of `score stage1|stage2`: one per SCoReConfig field, described without importing it.

SCoReConfig subclasses TRL's GRPOConfig and transformers' TrainingArguments (about 250 fields);
reading them imports torch, transformers and peft, about 8 s on a small machine, which
`score --help` should not pay. So the description of each field (what its option parses, its
default and help) is cached in `$XDG_CACHE_HOME/score` (default `~/.cache/score`), under a key
made of the installed trl and transformers versions and the source of the modules that define
the fields; any change of these writes a new one. Without a writable cache directory nothing is
cached and every start reads the fields again.

`config_fields` (the fields themselves, with their types) is here too: `score_cli.train` checks
recipes against them, building on this module, which never imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Config fields the CLI does not offer: derived or set by score itself.
DERIVED_FIELDS = ("beta", "max_completion_length", "output_dir", "stage", "ref_model")
SIMPLE_KINDS = {"bool": bool, "int": int, "float": float, "str": str}


@dataclass(frozen=True)
class FieldSpec:
    """What the CLI needs to know of one config field."""

    name: str
    kind: str  # bool, int, float or str: what the option's text is parsed as
    is_list: bool  # the field takes a list: YAML "[a, b]" or "a,b"
    is_dict: bool  # the field takes a dict: YAML "{k: v}"
    default: str  # shown in --help
    help: str


def config_fields() -> list[tuple[dataclasses.Field, Any]]:
    """The SCoReConfig fields a user may set (in a recipe or as an option), with resolved types."""
    import typing

    from score_cli.trainers import SCoReConfig

    hints = typing.get_type_hints(SCoReConfig)
    return [(f, hints[f.name]) for f in dataclasses.fields(SCoReConfig) if f.init and not f.name.startswith("_")]


def field_specs() -> list[FieldSpec]:
    """The user-settable SCoReConfig fields, from the cache when it matches what is installed."""
    path = _cache_path()
    if path is not None and path.exists():
        try:
            return [FieldSpec(**row) for row in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            log.debug("ignoring unreadable option cache %s", path)
    specs = live_field_specs()
    if path is not None:
        try:
            from score_cli.files import atomic_write_text

            atomic_write_text(path, json.dumps([dataclasses.asdict(s) for s in specs]))
        except OSError:
            log.debug("cannot write option cache %s", path)
    return specs


def live_field_specs() -> list[FieldSpec]:
    """The field descriptions read from SCoReConfig itself (imports trl and transformers)."""
    import types
    import typing

    specs = []
    for f, tp in config_fields():
        if f.name in DERIVED_FIELDS:
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
        kind = next((k for k, t in SIMPLE_KINDS.items() if inner is t), "str")
        kinds = {typing.get_origin(a) or a for a in typing.get_args(tp)} | {typing.get_origin(tp)}
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        specs.append(FieldSpec(
            name=f.name, kind=kind, is_list=list in kinds, is_dict=dict in kinds, default=str(default),
            help=(f.metadata.get("help") or "").split("\n")[0][:300],
        ))
    return specs


def parse_value(spec: FieldSpec, value):
    """Turn an option's text into the field's value: YAML for dicts and lists, commas for lists."""
    if not isinstance(value, str) or spec.kind != "str" or not (spec.is_list or spec.is_dict):
        return value
    if value.strip().startswith(("{", "[")):
        import yaml

        return yaml.safe_load(value)
    if spec.is_list and "," in value:
        return [v.strip() for v in value.split(",")]
    return value


def _cache_path() -> Path | None:
    """Where the descriptions for what is installed now live; None if that cannot be known."""
    try:
        versions = [metadata.version("trl"), metadata.version("transformers")]
    except metadata.PackageNotFoundError:
        return None
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256("|".join(versions).encode())
    for module in ("config_options.py", "trainers.py"):  # where config_fields and SCoReConfig are
        digest.update((here / module).read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "score"
    return root / f"config-options-{digest.hexdigest()[:16]}.json"
