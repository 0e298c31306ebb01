"""The model card a stage writes into its output directory (`README.md`, what the Hub shows).

TRL's card names GRPO's paper (DeepSeekMath) as the method and links the policy's init path as
the base model ("fine-tuned version of [None]" for a local one). SCoRe's says what the model is:
the base model it was trained from (the KL reference, in both stages), the stage, the task and
prompt, the recipe that reruns it, how to evaluate it, and SCoRe's citation.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

SCORE_CITATION = """\
@article{kumar2024training,
  title   = {{Training Language Models to Self-Correct via Reinforcement Learning}},
  author  = {Kumar, Aviral and Zhuang, Vincent and Agarwal, Rishabh and Su, Yi and Co-Reyes, John D. and
             Singh, Avi and Baumli, Kate and Iqbal, Shariq and Bishop, Colton and Roelofs, Rebecca and
             Zhang, Lei M. and McKinney, Kay and Shrivastava, Disha and Paduraru, Cosmin and Tucker, George and
             Precup, Doina and Behbahani, Feryal and Faust, Aleksandra},
  journal = {arXiv preprint arXiv:2409.12917},
  year    = {2024},
}"""
SCORE_PAPER = {
    "title": "Training Language Models to Self-Correct via Reinforcement Learning",
    "id": "2409.12917",
    "citation": SCORE_CITATION,
}
TRL_CITATION = """\
@software{vonwerra2020trl,
  title   = {{TRL: Transformers Reinforcement Learning}},
  author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and
             Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallouédec, Quentin},
  license = {Apache-2.0},
  url     = {https://github.com/huggingface/trl},
  year    = {2020}
}"""
STAGES = {
    1: "Stage I: attempt 2 trained for reward while a strong KL (beta2) keeps attempt 1 at the base model",
    2: "Stage II: both attempts trained for reward, attempt 2 with the progress bonus alpha * (r(y2) - r(y1)); "
       "KL (beta1) to the base model",
}
CARD_FILE = "README.md"


def hub_id_of(name: str | None) -> str | None:
    """The hub id `name` stands for: itself when it is one, or the repo of a hub-cache snapshot path."""
    from score_cli.models import is_hub_id

    if not name:
        return None
    if is_hub_id(name) and not Path(name).exists():
        return name
    m = re.search(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]", str(name))
    return f"{m.group(1)}/{m.group(2)}" if m else None


def _shown(name: str | None) -> str:
    hub = hub_id_of(name)
    if hub:
        return f"[{hub}](https://huggingface.co/{hub})"
    return f"`{name}` (a local directory)" if name else "an unrecorded model"


def _versions() -> str:
    from score_cli import __version__

    rows = [f"- score: {__version__}"]
    for pkg in ("trl", "transformers", "torch", "peft"):
        try:
            rows.append(f"- {pkg}: {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return "\n".join(rows)


def model_card_text(
    *,
    model_name: str,
    base_model: str | None,
    policy_init: str | None,
    stage: int,
    single_turn: bool = False,
    turns: int = 2,
    task: str | None = None,
    data: dict[str, Any] | None = None,
    prompt: dict[str, Any] | None = None,
    recipe_yaml: str = "",
    tags: list[str] | None = None,
    location: str | None = None,
) -> str:
    """The card's text: YAML metadata (base_model only for a hub id, which the Hub can link) and the body."""
    from huggingface_hub import ModelCardData

    base_hub = hub_id_of(base_model)
    card_data = ModelCardData(
        base_model=base_hub, library_name="transformers", pipeline_tag="text-generation", model_name=model_name,
        tags=sorted({"score", "self-correction", "trl", "reinforcement-learning", *(tags or [])}),
    )
    what = ("single-attempt RL (the paper's single-turn baseline, not SCoRe's two-attempt training)"
            if single_turn else STAGES[stage])
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# {model_name}", "",
        f"This model is {_shown(base_model)} trained with **SCoRe**, self-correction by multi-turn reinforcement "
        "learning, from [Training Language Models to Self-Correct via Reinforcement Learning]"
        "(https://arxiv.org/abs/2409.12917) (Kumar et al., 2024, arXiv:2409.12917), using `score` on "
        "[TRL](https://github.com/huggingface/trl).", "",
        f"- **Base model** (the KL reference): {_shown(base_model)}",
        f"- **Stage**: {what}",
    ]
    if turns > 2 and not single_turn:
        lines.append(f"- **Attempts per rollout**: {turns} (`--turns {turns}`: every attempt after the first "
                     "follows the instruction; the credit per attempt is in score's README)")
    if policy_init and policy_init != base_model:
        lines.append(f"- **Initialised from**: `{policy_init}` (the Stage I output)" if stage == 2
                     else f"- **Initialised from**: `{policy_init}`")
    if task or data:
        shown = {k: v for k, v in (data or {}).items() if v is not None}
        lines.append(f"- **Task**: {task or 'math'}" + (f" ({', '.join(f'{k}: {v}' for k, v in shown.items())})"
                                                        if shown else ""))
    eval_flags = ""
    if prompt:
        preset = prompt.get("preset") or "paper"
        lines.append(f"- **Prompt**: {preset}" + (" (a template)" if prompt.get("template") else "")
                     + (", with a system prompt" if prompt.get("system_prompt") else ""))
        flags = {"--prompt": preset if preset != "paper" else None, "--prompt-template": prompt.get("template"),
                 "--system-prompt": prompt.get("system_prompt"), "--instruction": prompt.get("instruction")}
        import shlex

        eval_flags = "".join(f" {k} {shlex.quote(v)}" for k, v in flags.items() if v)
        if turns > 2 and not single_turn:
            eval_flags += f" --turns {turns}"
        if prompt.get("resolved_instruction"):
            lines.append(f"- **Self-correction instruction** (before attempt 2): \"{prompt['resolved_instruction']}\"")
    bench = (data or {}).get("bench") or "math"
    lines += [
        "",
        "## Evaluate",
        "",
        "The model answers, is told the instruction above with no other feedback, and answers again; "
        "`score eval` reports Accuracy@t1, Accuracy@t2 and Delta(t1, t2) with the same prompt it was trained with:",
        "",
        "```bash",
        f"score eval --model {location or model_name} --bench {bench}{eval_flags}",
        "```",
        "",
    ]
    if recipe_yaml.strip():
        lines += [
            "## Training recipe",
            "",
            f"Every resolved setting (`score_config.yaml` in this directory); `score stage{stage} --recipe "
            "score_config.yaml` reruns it:",
            "",
            "```yaml",
            recipe_yaml.rstrip(),
            "```",
            "",
        ]
    lines += [
        "### Framework versions", "", _versions(), "",
        "## Citations", "",
        "Cite SCoRe as:", "", "```bibtex", SCORE_CITATION, "```", "",
        "Cite TRL as:", "", "```bibtex", TRL_CITATION, "```", "",
    ]
    return "\n".join(lines)


def write_model_card(trainer, *, model_name: str | None = None, tags: str | list[str] | None = None) -> Path:
    """Write the card of `trainer`'s run to its output directory, from its config, its run record
    (score_run.json) and its recipe (score_config.yaml), as far as they exist."""
    import json

    from score_cli.files import atomic_write_text

    args = trainer.args
    out = Path(args.output_dir)
    record: dict[str, Any] = {}
    try:
        record = json.loads((out / "score_run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    try:
        recipe = (out / "score_config.yaml").read_text(encoding="utf-8")
    except OSError:
        recipe = ""
    config = getattr(trainer.model, "config", None)
    policy_init = record.get("policy_init") or getattr(config, "_name_or_path", None)
    base = record.get("base_model") or args.ref_model or policy_init
    task = getattr(trainer, "task", None)
    prompt = record.get("prompt") or {**args.prompt_spec().record(task)}
    text = model_card_text(
        model_name=model_name or out.name, base_model=base, policy_init=policy_init, stage=args.stage,
        single_turn=args.single_turn, turns=args.turns, task=record.get("task") or getattr(task, "name", None),
        data=record.get("data"), prompt=prompt, recipe_yaml=recipe,
        tags=[tags] if isinstance(tags, str) else list(tags or []), location=args.hub_model_id or str(out),
    )
    atomic_write_text(out / CARD_FILE, text)
    return out / CARD_FILE
