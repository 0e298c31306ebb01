"""Bring your own model: prompt settings (eval and stages alike), model paths and an unreachable hub
in one line, the model card, the rerunnable config record, file modes, --version and the run's
provenance in metrics.json."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from score_cli import models
from score_cli.cli import app
from score_cli.errors import ScoreError
from score_cli.evaluate import EvalConfig, evaluate
from score_cli.rollout import first_attempt_ids
from score_cli.tasks import (
    BOXED_INSTRUCTION,
    BOXED_REQUEST,
    MATH_INSTRUCTION,
    MATH_PROMPT,
    Problem,
    PromptSpec,
    apply_prompt,
    read_text_option,
)
from score_cli.tasks.math_task import MathTask

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
GOLD = {"What is 17+25?": "42", "What is 9*9?": "81", "What is 100-1?": "99"}


@pytest.fixture
def data_file(tmp_path, jsonl):
    return jsonl(tmp_path / "bare.jsonl", [{"id": f"q{i}", "problem": q, "answer": a}
                                           for i, (q, a) in enumerate(GOLD.items())])


def one_line(result, *match):
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    for m in match:
        assert m in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------
def test_presets_template_system_prompt_and_instruction(tmp_path):
    p = Problem("1", "What is 1+1?", "2")
    math = MathTask()
    assert apply_prompt(math, PromptSpec()) is math  # the default is the task's own (the paper's)
    assert apply_prompt(math, PromptSpec()).messages(p)[0]["content"].startswith(MATH_PROMPT)
    raw = apply_prompt(math, PromptSpec("raw"))
    assert raw.messages(p) == [{"role": "user", "content": "What is 1+1?"}] and raw.instruction == MATH_INSTRUCTION
    boxed = apply_prompt(math, PromptSpec("boxed"))
    assert boxed.messages(p) == [{"role": "user", "content": f"What is 1+1?\n{BOXED_REQUEST}"}]
    assert boxed.instruction == BOXED_INSTRUCTION and "\\boxed{}" in BOXED_REQUEST
    t = apply_prompt(math, PromptSpec(template=r"Q: {question} Put it in \boxed{}.", system_prompt="Be brief.",
                                      instruction="Try again."))
    assert t.messages(p) == [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": r"Q: What is 1+1? Put it in \boxed{}."}]
    assert t.instruction == "Try again." and t.name == "math"
    assert t.grade([p], ["\\boxed{2}"])[0].correct  # grading is the task's
    assert t.plain_prompt(p) == "Be brief.\n\nQ: What is 1+1? Put it in \\boxed{}.\n\n"  # no chat template

    # under `paper` the toy and code tasks keep their own prompts; boxed does not fit code
    from score_cli.tasks.code_task import CodeTask
    from score_cli.tasks.toy_task import ToyTask

    toy, code = ToyTask(), CodeTask("mbpp")
    assert apply_prompt(toy, PromptSpec()) is toy and apply_prompt(code, PromptSpec()) is code
    assert apply_prompt(toy, PromptSpec("boxed")).instruction == toy.instruction  # toy keeps its instruction
    with pytest.raises(ScoreError, match="code task"):
        apply_prompt(code, PromptSpec("boxed"))
    assert apply_prompt(code, PromptSpec("raw")).timeout == code.timeout  # the rest is the task's

    for bad, message in [(PromptSpec("chat"), "unknown --prompt"), (PromptSpec(template="no slot"), "{question}"),
                         (PromptSpec("raw", template="{question}"), "pass one of them")]:
        with pytest.raises(ScoreError, match=message):
            bad.check()
    f = tmp_path / "tpl.txt"
    f.write_text("Solve: {question}\n")
    assert read_text_option(f"@{f}", "--prompt-template") == "Solve: {question}"
    with pytest.raises(ScoreError, match="does not exist"):
        read_text_option(f"@{tmp_path / 'nope.txt'}", "--prompt-template")


class BareQuestionModel:
    """A model that only answers bare questions: right when its user turn is exactly the question
    (no instructions around it), else lost. It reads its input tokens, as a real model would."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.generated_tokens = 0

    def __call__(self, inputs, *, group_size=1):
        outs = []
        for ids in inputs:
            text = self.tokenizer.decode(ids)
            bare = [q for q in GOLD if text.startswith(f"<s><|user|>{q}</s><|assistant|>")]
            reply = f"The answer is \\boxed{{{GOLD[bare[0]]}}}." if bare else "I do not understand the question."
            outs.append(self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id])
            self.generated_tokens += len(outs[-1])
        return outs, None


def test_a_bare_question_model_scores_with_raw_and_not_with_the_paper_prompt(data_file, tmp_path, char_tokenizer):
    def run(out, **kw):
        cfg = EvalConfig(model="bare", bench=None, data=str(data_file), output_dir=str(tmp_path / out), **kw)
        return evaluate(cfg, tokenizer=char_tokenizer, generator=BareQuestionModel(char_tokenizer))

    paper = run("paper")
    assert paper.metrics["accuracy@t1"]["value"] == 0.0 and paper.metrics["accuracy@t2"]["value"] == 0.0
    raw = run("raw", prompt=PromptSpec("raw"))
    assert raw.metrics["accuracy@t1"]["value"] == 1.0 and raw.metrics["accuracy@t2"]["value"] == 1.0
    assert run("tpl", prompt=PromptSpec(template="{question}")).metrics["accuracy@t1"]["value"] == 1.0
    assert run("boxed", prompt=PromptSpec("boxed")).metrics["accuracy@t1"]["value"] == 0.0

    record = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    assert record["prompt"]["preset"] == "raw" and record["prompt"]["example"].startswith("<s><|user|>What is 17+25?")
    assert record["instruction"] == MATH_INSTRUCTION
    assert json.loads((tmp_path / "raw" / "eval_settings.json").read_text())["prompt"]["preset"] == "raw"
    # the prompt is part of a run's identity: resuming with other prompt settings is refused
    for other in (PromptSpec(), PromptSpec("raw", system_prompt="S"), PromptSpec("raw", instruction="Again.")):
        with pytest.raises(ScoreError, match=r"other settings \(prompt\)"):
            run("raw", prompt=other, resume=True)
    again = run("raw", prompt=PromptSpec("raw"), resume=True)
    assert again.metrics["accuracy@t2"] == raw.metrics["accuracy@t2"] and len(again.rows) == 3


def test_a_run_of_an_older_score_resumes_under_the_default_prompt(data_file, tmp_path, char_tokenizer):
    cfg = EvalConfig(model="bare", bench=None, data=str(data_file), output_dir=str(tmp_path / "o"), limit=1)
    evaluate(cfg, tokenizer=char_tokenizer, generator=BareQuestionModel(char_tokenizer))
    settings = tmp_path / "o" / "eval_settings.json"
    old = json.loads(settings.read_text())
    del old["prompt"]  # eval_settings.json as score wrote it before prompt settings existed
    settings.write_text(json.dumps(old))
    cfg.resume, cfg.limit = True, 2
    evaluate(cfg, tokenizer=char_tokenizer, generator=BareQuestionModel(char_tokenizer))


def test_eval_cli_prompt_options_and_provenance(tmp_path, tiny_model_dir, data_file):
    system = tmp_path / "system.txt"
    system.write_text("You are terse.\n")
    out = tmp_path / "ev"
    r = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data_file), "--limit", "1",
                            "--max-new-tokens", "2", "--prompt", "raw", "--system-prompt", f"@{system}",
                            "--instruction", "Again.", "--output-dir", str(out)])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["prompt"]["preset"] == "raw" and record["prompt"]["system_prompt"] == "You are terse."
    assert record["prompt"]["example"].startswith("<s>You are terse.</s><|user|>What is 17+25?</s>")
    assert record["instruction"] == "Again."
    # provenance: times, the command line, and what identifies the weights
    assert record["started"] <= record["finished"] and isinstance(record["command"], str) and record["cwd"]
    rev = record["model_revision"]
    assert rev["path"] == str(Path(tiny_model_dir).resolve()) and len(rev["weights_sha256"]) == 64
    assert rev["weights_files"] == ["model.safetensors"]
    assert models.weights_fingerprint(Path(tiny_model_dir)) == {k: v for k, v in rev.items() if k != "path"}


def test_weights_fingerprint_tells_checkpoints_apart(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, fill in ((a, b"\0"), (b, b"\1")):
        d.mkdir()
        (d / "config.json").write_text("{}")
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + fill * 3000)
    monkeypatch.setattr(models, "WHOLE_FILE_LIMIT", 1000)  # sampled, as a big model is
    monkeypatch.setattr(models, "SLICE", 64)
    fa, fb = models.weights_fingerprint(a), models.weights_fingerprint(b)
    assert fa["weights_sha256"] != fb["weights_sha256"] and fa["weights_hash"].startswith("sampled")


def test_trainer_asks_with_the_configured_prompt(tiny_model_dir, tmp_path, scripted):
    from tests.test_trainer_objective import QUESTIONS, ExactTask, make_trainer

    spec = PromptSpec("raw", system_prompt="Be exact.", instruction="Again.")
    trainer, tok = make_trainer(tiny_model_dir, tiny_model_dir, 1, tmp_path, scripted, prompt="raw",
                                system_prompt="Be exact.", instruction="Again.", beta1=0.0, beta2=0.0)
    seen = []

    def generate(ids, images, mm, n, **_):
        seen.append([list(x) for x in ids])
        return [[tok.eos_token_id] for _ in ids], None

    trainer._generate_single_turn = generate
    trainer.model.train()
    q = next(iter(QUESTIONS))
    trainer._rollout([q, q], trainer, group_size=2)
    problem = trainer._by_question[q]
    expected = first_attempt_ids(tok, apply_prompt(ExactTask(), spec), problem)  # what score eval builds
    assert seen[0] == [expected, expected]
    assert tok.decode(seen[1][0]).startswith(tok.decode(expected)) and "Again." in tok.decode(seen[1][0])


# ---------------------------------------------------------------------------------------------
# Model paths and the hub
# ---------------------------------------------------------------------------------------------
def test_what_reads_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for hub_id in ("gpt2", "Qwen/Qwen2.5-Math-1.5B-Instruct", "org/name.v1_2", "runs/toy-bse"):
        assert models.looks_like_path(hub_id) is None, hub_id  # runs/ does not exist (yet)
    (tmp_path / "runs").mkdir()
    for path in ("runs/toy-bse", "./x", "../x", "/x/y", "~/m", "a/b/c", "bad name/x", "org/na--me", "org//x"):
        assert models.looks_like_path(path), path
    with pytest.raises(ScoreError, match=r"model path runs/toy-bse does not exist \(read as a local path: ./runs"):
        models.check_model_source("runs/toy-bse")


def test_a_mistyped_model_path_is_one_line_at_once(tmp_path):
    """Before any heavy import and before the output directory is created."""
    (tmp_path / "runs").mkdir()
    code = ("import sys, time; t = time.time(); from typer.testing import CliRunner; from score_cli.cli import app; "
            "r = CliRunner().invoke(app, sys.argv[1:]); "
            "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules, round(time.time() - t, 1)); "
            "print(r.output, end='')")
    for cmd in (["eval", "--model", "runs/toy-bse", "--bench", "toy"], ["stage1", "--model", "runs/toy-bse"]):
        p = subprocess.run([sys.executable, "-c", code, *cmd], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        status, *lines = p.stdout.strip().splitlines()
        assert status.split()[:3] == ["2", "False", "False"], p.stdout + p.stderr
        assert len(lines) == 1 and "model path runs/toy-bse does not exist" in lines[0], p.stdout
    assert os.listdir(tmp_path / "runs") == []


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The hub libraries as they are without HF_HUB_OFFLINE, an empty hub cache, nothing looked up yet."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    models.hub_lookup.cache_clear()
    yield constants
    models.hub_lookup.cache_clear()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_is_one_line_within_seconds(online, monkeypatch):
    monkeypatch.setattr(online, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # connection refused
    t = time.time()
    with pytest.raises(ScoreError) as e:
        models.check_model_source("someorg/nomodel")
    assert time.time() - t < 10
    msg = str(e.value)
    assert "neither a local directory nor reachable on the Hugging Face Hub" in msg and "\n" not in msg
    assert "HF_HUB_OFFLINE=1" in msg and "local directory" in msg

    # a hub that takes the connection and never answers: the lookup gives up after HUB_TIMEOUT
    models.hub_lookup.cache_clear()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(online, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setattr(models, "HUB_TIMEOUT", 1.0)
        t = time.time()
        with pytest.raises(ScoreError, match="reachable on the Hugging Face Hub"):
            models.check_model_source("someorg/othermodel")
        assert time.time() - t < 5


def test_a_cached_model_runs_offline_when_the_hub_is_unreachable(online, monkeypatch):
    sha = "a" * 40
    snap = Path(online.HF_HUB_CACHE) / "models--someorg--cached" / "snapshots" / sha
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text(sha)
    monkeypatch.setattr(online, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    models.check_model_source("someorg/cached")  # no error: the cache serves it
    assert os.environ["HF_HUB_OFFLINE"] == "1" and online.HF_HUB_OFFLINE is True  # no minutes of retries
    assert models.model_revision("someorg/cached") == {"hub_id": "someorg/cached", "commit": sha}


def test_offline_and_not_cached_says_so(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ScoreError, match="not in the Hugging Face cache, and HF_HUB_OFFLINE is set"):
        models.check_model_source("someorg/nomodel")


def test_eval_against_an_unreachable_hub_leaves_nothing_behind(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)

    def timed_eval(model: str) -> tuple[subprocess.CompletedProcess, float]:
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "score_cli", "eval", "--model", model, "--bench", "toy"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
        return p, time.time() - t

    p, hub = timed_eval("someorg/nomodel")
    lines = [x for x in (p.stdout + p.stderr).strip().splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "HF_HUB_OFFLINE=1" in lines[0], p.stdout + p.stderr
    assert not (tmp_path / "runs").exists()
    # No retries: the hub's backoff would sleep 20 s or more, whatever the load; a missing local path,
    # timed under the same load, fails on the same imports without touching the network.
    local, start_up = timed_eval(str(tmp_path / "no-such-dir"))
    assert local.returncode == 2 and hub < start_up + 15, (hub, start_up)


# ---------------------------------------------------------------------------------------------
# Stage outputs: model card, config record, file modes
# ---------------------------------------------------------------------------------------------
def fake_trainer(out: Path, stage: int, ref_model: str, policy: str):
    from score_cli.trainers import SCoReConfig

    args = SCoReConfig(output_dir=str(out), stage=stage, ref_model=ref_model, report_to="none", prompt="raw")
    config = types.SimpleNamespace(_name_or_path=policy)
    return types.SimpleNamespace(args=args, model=types.SimpleNamespace(config=config), task=MathTask())


def test_model_card_names_score_the_base_model_and_the_recipe(tmp_path):
    from score_cli.card import write_model_card
    from score_cli.trainers import SCoReTrainer

    assert SCoReTrainer._paper["id"] == "2409.12917" and "create_model_card" in vars(SCoReTrainer)
    out = tmp_path / "s2"
    out.mkdir()
    (out / "score_config.yaml").write_text("from_checkpoint: runs/s1\nalpha: 10.0\n")
    (out / "score_run.json").write_text(json.dumps({"base_model": "Qwen/Qwen2.5-Math-1.5B", "policy_init": "runs/s1",
                                                     "task": "math", "data": {"bench": "math"}}))
    card = write_model_card(fake_trainer(out, 2, "Qwen/Qwen2.5-Math-1.5B", "runs/s1")).read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "Qwen/Qwen2.5-Math-1.5B" and "score" in meta["tags"]
    assert "[Qwen/Qwen2.5-Math-1.5B](https://huggingface.co/Qwen/Qwen2.5-Math-1.5B)" in card
    assert "SCoRe" in card and "2409.12917" in card and "Stage II" in card and "kumar2024training" in card
    assert "from_checkpoint: runs/s1" in card and "score stage2 --recipe score_config.yaml" in card
    assert "`runs/s1` (the Stage I output)" in card and "--prompt raw" in card
    assert "DeepSeekMath" not in card and "[None]" not in card and "fine-tuned version of" not in card

    local = tmp_path / "local-run"
    card = write_model_card(fake_trainer(local, 1, str(tmp_path / "toy-base"), str(tmp_path / "toy-base"))).read_text()
    assert "base_model" not in yaml.safe_load(card.split("---")[1])  # the hub cannot link a local directory
    assert f"`{tmp_path / 'toy-base'}` (a local directory)" in card and "Stage I:" in card


def stage1_output(tmp_path, tiny_model_dir, data_file) -> Path:
    """A finished Stage I output as `score stage1` leaves it (the model and its run record)."""
    s1 = tmp_path / "s1"
    shutil.copytree(tiny_model_dir, s1)
    (s1 / "score_run.json").write_text(json.dumps({
        "stage": 1, "finished": True, "base_model": str(tiny_model_dir), "policy_init": str(tiny_model_dir),
        "data": {"bench": "math", "data": str(data_file), "question_field": "problem", "answer_field": "answer"},
        "config": {"prompt": "raw", "system_prompt": "Be exact.", "prompt_template": None, "instruction": None},
    }))
    return s1


def test_score_config_yaml_is_complete_and_reruns_each_stage(tmp_path, tiny_model_dir, data_file):
    from score_cli.train import CONFIG_FILE, TrainRequest, build_config, config_yaml, resolve

    def resolved(req):
        data, kwargs, lineage = resolve(req)
        config = build_config(req.stage, kwargs, str(tmp_path / "out"), ref_model=lineage["base_model"])
        return data, lineage, config

    def same(a, b):
        da, db = json.loads(a.to_json_string()), json.loads(b.to_json_string())
        return {k: (v, db.get(k)) for k, v in da.items() if db.get(k) != v and k not in ("output_dir", "logging_dir")}

    # Stage I: every SCoRe field is written, also at its default (alpha, betas, baseline, temperature)
    req = TrainRequest(stage=1, model=str(tiny_model_dir), data=str(data_file),
                       overrides={"learning_rate": 1e-3, "max_steps": 7, "prompt": "boxed", "report_to": "none"})
    data, lineage, config = resolved(req)
    text = config_yaml(config, data)
    saved = yaml.safe_load(text)
    for k in ("alpha", "beta1", "beta2", "gamma", "baseline", "temperature", "prompt", "max_attempt_length",
              "num_generations", "seed"):
        assert k in saved, k
    assert saved["alpha"] == 10.0 and saved["temperature"] == 1.0 and saved["prompt"] == "boxed"
    assert saved["learning_rate"] == 1e-3 and saved["model"] == str(tiny_model_dir)
    assert "bf16" not in saved  # follows the machine unless set
    (tmp_path / "s1.yaml").write_text(text)
    data2, _, config2 = resolved(TrainRequest(stage=1, recipe=str(tmp_path / "s1.yaml")))
    assert data2 == data and same(config, config2) == {}

    # Stage II: its copy names the Stage I output and reruns with --recipe alone; prompt from Stage I
    s1 = stage1_output(tmp_path, tiny_model_dir, data_file)
    req = TrainRequest(stage=2, from_checkpoint=str(s1), overrides={"alpha": 5.0, "report_to": "none"})
    data, lineage, config = resolved(req)
    assert config.prompt == "raw" and config.system_prompt == "Be exact."  # Stage I's prompt, unless told
    text = config_yaml(config, data, from_checkpoint=str(s1))
    assert "Rerun: score stage2 --recipe THIS_FILE" in text
    saved = yaml.safe_load(text)
    assert saved["from_checkpoint"] == str(s1) and "model" not in saved and saved["data"] == str(data_file)
    (tmp_path / CONFIG_FILE).write_text(text)
    data2, lineage2, config2 = resolved(TrainRequest(stage=2, recipe=str(tmp_path / CONFIG_FILE)))
    assert data2 == data and lineage2["base_model"] == str(tiny_model_dir) and same(config, config2) == {}
    with pytest.raises(ScoreError, match="only Stage II"):
        resolve(TrainRequest(stage=1, recipe=str(tmp_path / CONFIG_FILE), model=str(tiny_model_dir)))


def test_output_files_follow_the_umask(tmp_path):
    from score_cli.files import atomic_write_json, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
        os.umask(0o002)
        (tmp_path / "a.txt").chmod(0o640)
        atomic_write_text(tmp_path / "a.txt", "y")  # rewriting keeps a file's own mode
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("score 0.") and "trl " in r.output


def test_each_stage_reads_its_own_section_of_one_recipe(tmp_path, tiny_model_dir):
    """`score stage1` and `score stage2` with the same recipe: Stage I takes `stage1:`'s max_steps, Stage II
    the top level's, and an option on the command line beats both; `score sft` reads the top level and
    lists the section it left among the run record's unused keys."""
    from score_cli.train import TrainRequest, resolve

    recipe = tmp_path / "r.yaml"
    recipe.write_text("bench: toy\nmax_steps: 40\nstage1:\n  max_steps: 80\n")
    assert resolve(TrainRequest(stage=1, recipe=str(recipe), model=str(tiny_model_dir)))[1]["max_steps"] == 80
    assert resolve(TrainRequest(stage=2, recipe=str(recipe), model=str(tiny_model_dir)))[1]["max_steps"] == 40
    told = TrainRequest(stage=1, recipe=str(recipe), model=str(tiny_model_dir), overrides={"max_steps": 7})
    assert resolve(told)[1]["max_steps"] == 7
    from score_cli.sft import SFTRequest
    from score_cli.sft import resolve as resolve_sft

    _, kwargs, _, unused = resolve_sft(SFTRequest(recipe=str(recipe), model=str(tiny_model_dir)))
    assert kwargs["max_steps"] == 40 and "stage1" in unused  # SFT reads the top level and says it left the section
