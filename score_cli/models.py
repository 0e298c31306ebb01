"""Loading policies and tokenizers from a hub id or a local directory, with one-line errors.

`check_model_source` runs before anything heavy is imported or written: a local-looking path that
does not exist is refused at once, and a hub id is looked up with a short time limit, so an
unreachable hub is one line within seconds (not minutes of retries). It imports no torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from score_cli.errors import ScoreError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# A hub id is exactly 'name' or 'org/name' (letters, digits, '-', '_', '.'; no '--' or '..').
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")
HUB_TIMEOUT = float(os.environ.get("SCORE_HUB_TIMEOUT", "8"))  # seconds for the hub lookup, all told
OFFLINE_HOWTO = ("to run offline, set HF_HUB_OFFLINE=1 and pass a local directory (a score run, or a model "
                 "downloaded on a connected machine with `hf download ORG/NAME --local-dir DIR`)")


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and "--" not in name and ".." not in name


def looks_like_path(name: str) -> str | None:
    """Why `name` is meant as a local path (a phrase), or None for a hub id.

    Hub ids are exactly 'name' or 'org/name'. Anything else is a path: ./x, ../x, /x, ~/x, a/b/c,
    characters a hub id cannot hold, and 'dir/name' where ./dir exists (runs/toy-bse when runs/
    does): a hub organisation is never a directory of the working directory."""
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or os.path.isabs(name) or name in (".", ".."):
        return "it starts like a path"
    if os.sep != "/" and os.sep in name or name.rstrip("/").count("/") > 1:
        return "it has more than one path separator"
    if not is_hub_id(name.rstrip("/")):
        return "it is not a hub id (ORG/NAME)"
    parent = name.rstrip("/").partition("/")[0]
    if "/" in name and os.path.isdir(parent):
        return f"./{parent} is a local directory"
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, now or when huggingface_hub was imported."""
    if any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in
           ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    return bool(constants is not None and constants.HF_HUB_OFFLINE)


def check_model_source(name: str, *, hub: bool = True) -> None:
    """Fail early, in one line, on a model that cannot be loaded: a local path that does not hold a
    saved model, or (with `hub`) a hub id that is neither cached nor reachable on the hub."""
    path = Path(os.path.expanduser(name))
    if path.exists():
        if not path.is_dir():
            raise ScoreError(f"model path {name} is a file: pass the directory written by save_pretrained")
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ScoreError(
                f"model directory {name} has no config.json: pass a directory written by save_pretrained "
                "(a score run's output directory, or a downloaded hub snapshot)"
            )
        return
    why = looks_like_path(name)
    if why:
        raise ScoreError(f"model path {name} does not exist (read as a local path: {why}): check the path, "
                         "or pass a hub id like Qwen/Qwen2.5-Math-1.5B-Instruct")
    if hub:
        check_hub_model(name)


@functools.cache
def hub_lookup(name: str) -> tuple[str, str]:
    """('found', commit) | ('missing', reason) | ('unreachable', reason): the hub's answer about
    model `name`, within HUB_TIMEOUT seconds (name resolution included, which no HTTP timeout bounds)."""
    result: list[tuple[str, str]] = []

    def ask():
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            info = HfApi().model_info(name, timeout=HUB_TIMEOUT)
            result.append(("found", info.sha or ""))
        except GatedRepoError:  # exists; loading it needs a token, and says so itself
            result.append(("found", ""))
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            result.append(("missing", _first_line(e)))
        except Exception as e:  # noqa: BLE001 - connection refused, DNS, TLS, timeout, 5xx: all unreachable
            result.append(("unreachable", f"{type(e).__name__}: {_first_line(e)}"[:160]))

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(HUB_TIMEOUT + 1)
    return result[0] if result else ("unreachable", f"no answer within {HUB_TIMEOUT:.0f} s")


def cached_hub_snapshot(name: str) -> Path | None:
    """The snapshot directory of hub model `name` in the local Hugging Face cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    if not isinstance(found, str):
        found = try_to_load_from_cache(name, "adapter_config.json")
    return Path(found).parent if isinstance(found, str) else None


def check_hub_model(name: str) -> None:
    """A hub id must be cached (offline) or on a reachable hub; when the hub cannot be reached but
    the model is cached, the rest of the run goes offline (no minutes of retries)."""
    cached = cached_hub_snapshot(name)
    if hub_offline():
        if cached is None:
            raise ScoreError(f"model {name} is not a local directory and not in the Hugging Face cache, and "
                             "HF_HUB_OFFLINE is set: pass a local directory, or unset HF_HUB_OFFLINE to download it")
        return
    status, detail = hub_lookup(name)
    if status == "found":
        return
    if cached is not None:
        if status == "unreachable":
            log.warning("the Hugging Face Hub is unreachable (%s): using the cached copy of %s offline", detail, name)
            go_offline()
        return
    if status == "missing":
        raise ScoreError(f"model {name} is neither a local directory nor a model on the Hugging Face Hub: check "
                         "the id or path (a private or gated model needs `hf auth login`)")
    raise ScoreError(f"model {name} is neither a local directory nor reachable on the Hugging Face Hub "
                     f"({detail}): {OFFLINE_HOWTO}")


def go_offline() -> None:
    """Make this process's hub libraries read the cache only."""
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def model_revision(name: str) -> dict:
    """What identifies the weights of model `name`: a hub id's commit, or a local directory's
    weights fingerprint (`weights_fingerprint`)."""
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        return {"path": str(path.resolve()), **weights_fingerprint(path)}
    out: dict = {"hub_id": name}
    snapshot = cached_hub_snapshot(name) if is_hub_id(name) else None
    if snapshot is not None and re.fullmatch(r"[0-9a-f]{40}", snapshot.name):
        out["commit"] = snapshot.name  # what transformers loaded: the cached snapshot
    elif not hub_offline() and is_hub_id(name):
        status, detail = hub_lookup(name)
        if status == "found" and detail:
            out["commit"] = detail
    return out


WHOLE_FILE_LIMIT = 256 * 2**20  # weight files up to this size are hashed whole
SLICE = 2**20


def weights_fingerprint(path: Path) -> dict:
    """sha256 over each weight file's name, size and content, in name order. A file over 256 MiB
    is sampled instead of read whole: its safetensors header (names, dtypes, shapes, offsets) and
    17 evenly spaced 1 MiB slices, first and last included - a second or so for a 7B model, and
    two trained checkpoints never share it in practice."""
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".bin", ".pt", ".pth") or p.name.endswith(".index.json"))
        and not p.name.startswith(("training_args", "optimizer", "scheduler", "rng_state")))
    h = hashlib.sha256()
    sampled = False
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= WHOLE_FILE_LIMIT:
                for block in iter(lambda: fh.read(8 * SLICE), b""):  # noqa: B023 - consumed at once
                    h.update(block)
                continue
            sampled = True
            if f.suffix == ".safetensors":
                n = int.from_bytes(fh.read(8), "little")
                h.update(fh.read(min(n, 100 * SLICE)))
            for k in range(17):
                fh.seek((size - SLICE) * k // 16)
                h.update(fh.read(SLICE))
    return {
        "weights_sha256": h.hexdigest(),
        "weights_files": [f.name for f in files],
        "weights_hash": "sampled: header and 17 slices of each file over 256 MiB" if sampled else "whole files",
    }


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise ScoreError(f"unknown dtype '{dtype}': use auto, bf16, fp16 or fp32")
    return table[dtype]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ScoreError(f"--device {device} asked for, but torch sees no CUDA device: use --device cpu")
    return device


def load_tokenizer(name: str):
    """The tokenizer, left-padded for batched generation, with a pad token."""
    from transformers import AutoTokenizer

    check_model_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except OSError as e:
        raise ScoreError(f"could not load a tokenizer for {name} ({_first_line(e)}): check the id or path") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name: str, *, device: str = "auto", dtype: str = "auto"):
    """A causal LM in eval mode; a model of another kind is refused with the fix."""
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model_source(name)
    device = resolve_device(device)
    src = os.path.expanduser(name)
    try:
        config = AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise ScoreError(f"could not load model {name} ({_first_line(e)}): check the hub id or local path") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=resolve_dtype(dtype, device))
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise ScoreError(
                f"{name} is not a causal language model (its config is {type(config).__name__}): "
                "pass a decoder-only model such as Qwen2.5 or Llama"
            ) from None
        raise ScoreError(f"could not load model {name} ({_first_line(e)})") from None
    except OSError as e:
        raise ScoreError(f"could not load model weights for {name} ({_first_line(e)}): check the path") from None
    return model.to(device).eval()


def read_run_record(path: str | os.PathLike) -> dict | None:
    """The `score_run.json` a score training run leaves in its output directory, if any."""
    f = Path(os.path.expanduser(path)) / "score_run.json"
    if not f.exists():
        return None
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
    except ValueError:  # bad JSON (e.g. truncated) or not UTF-8
        raise ScoreError(f"{f} is corrupt: re-run the stage that wrote it") from None
    if not isinstance(record, dict):
        raise ScoreError(f"{f} is corrupt (not a JSON object): re-run the stage that wrote it")
    return record


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def export_merged(src: str, out: str) -> Path:
    """Write a LoRA run's adapter merged into its base as a plain model (plus the tokenizer)."""
    from peft import AutoPeftModelForCausalLM

    source = Path(os.path.expanduser(src))
    if not (source / "adapter_config.json").exists():
        raise ScoreError(f"{src} holds no LoRA adapter (adapter_config.json): only LoRA runs need --merge")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise ScoreError(f"{target} is not empty: choose a new --out directory")
    model = AutoPeftModelForCausalLM.from_pretrained(str(source)).merge_and_unload()
    model.save_pretrained(target)
    load_tokenizer(str(source)).save_pretrained(target)
    record = read_run_record(source)
    if record is not None:
        record = {**record, "merged_from": str(source)}
        (target / "score_run.json").write_text(json.dumps(record, indent=2, default=str))
    return target


def stage1_output_record(src: str) -> dict:
    """The run record of a finished Stage I output (what Stage II starts from; a `score sft` output
    serves too), or a one-line error saying what `src` is instead. Light: the CLI calls it before
    torch is imported."""
    if not Path(src).is_dir():
        raise ScoreError(f"--from-checkpoint {src} does not exist: pass the output directory of `score stage1`")
    record = read_run_record(src)
    if record is None or record.get("stage") not in (1, "sft"):
        what = "no score run record" if record is None else f"a Stage {record.get('stage')} output"
        raise ScoreError(f"{src} is not a Stage I output ({what}): pass the output directory of `score stage1`")
    if not record.get("finished"):
        what, command = ("SFT", "score sft") if record.get("stage") == "sft" else ("Stage I", "score stage1")
        raise ScoreError(f"{what} in {src} did not finish: resume it with `{command} --resume` first")
    return record
