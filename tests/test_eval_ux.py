"""`score eval` as a user meets it (issue 14): a results table that fits 80 columns and shows every
attempt pair, progress and saving per generated batch with a resume command on Ctrl-C, a
--max-new-tokens that fits the task and the model's context, argument errors before any heavy
import, several benchmarks in one call, `score compare` and `score env`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from score_cli import evaluate as evaluate_module
from score_cli.cli import app
from score_cli.compare import comparison, markdown, short_names
from score_cli.environment import command_line
from score_cli.errors import ScoreError
from score_cli.evaluate import (
    EvalConfig,
    EvalInterrupted,
    Progress,
    evaluate,
    fit_to_context,
    plan_evals,
)
from score_cli.rollout import Decoding
from score_cli.tasks import MATH_INSTRUCTION
from score_cli.ui import results_table
from tests.test_eval import PROBLEMS, SCRIPT

ROOT = Path(__file__).resolve().parents[1]
FINAL = "Final Answer: The final answer is ${}$. I hope it is correct."
runner = CliRunner()


@pytest.fixture
def data_file(tmp_path, jsonl):
    return jsonl(tmp_path / "problems.jsonl", [{"id": f"p{i}", "problem": q, "answer": g}
                                               for i, (q, (g, _, _)) in enumerate(PROBLEMS.items())])


def scripted_config(data_file, out, **kw):
    return EvalConfig(model="scripted", bench=None, data=str(data_file), output_dir=str(out), **kw)


# ---------------------------------------------------------------------------------------------
# Point 4: the results table
# ---------------------------------------------------------------------------------------------
def test_three_turn_table_fits_80_columns_and_shows_every_pair(data_file, tmp_path, char_tokenizer, scripted):
    script = {q: [a1, a2, FINAL.format(PROBLEMS[q][0])] for q, (a1, a2) in SCRIPT.items()}
    res = evaluate(scripted_config(data_file, tmp_path / "out", turns=3), tokenizer=char_tokenizer,
                   generator=scripted(char_tokenizer, script, MATH_INSTRUCTION))
    m = res.metrics
    models = ["runs/stage1/checkpoint-500", "Qwen/Qwen2.5-Math-1.5B-Instruct", str(tmp_path / "runs" / "stage2")]
    for ci, shown in ((False, models), (True, models[1:2])):  # with intervals, as `score eval --ci` shows one model
        console = Console(width=80, record=True)
        console.print(results_table("data: 8 problems, 3 attempts", [(name, m) for name in shown], 3, ci=ci))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= 80, text
        assert "…" not in text  # model names are not cut short
        for pair in ("(t1,t2)", "(t2,t3)"):
            for label in ("Δ", "Δ i→c", "Δ c→i", "fixed|wrong", "broken|right", "answer changed",
                          "changed|wrong"):
                assert any(row.strip().startswith(f"{label}{pair}") for row in text.splitlines()), (label, pair)
        row = next(line for line in text.splitlines() if line.strip().startswith("Δ(t2,t3)"))
        assert f"{100 * m['delta(t2,t3)']['value']:+.1f}" in row  # each pair's own values
        row = next(line for line in text.splitlines() if line.strip().startswith("Δ i→c(t2,t3)"))
        assert f"{100 * m['i->c(t2,t3)']['value']:.1f}" in row
        assert any(line.strip().startswith("Δ(t1,t3)") for line in text.splitlines())
        assert ("[" in text) == ci  # intervals only when asked for
        headers = text.split("───")[0]
        for part in ("stage1/", "checkpoint-500", "Qwen/", "Qwen2.5-Math-1.5B-Instruct", "stage2")[3 * ci:4]:
            assert part in headers, headers  # whole names, broken only after a "/"


def test_short_names_are_readable_and_tell_runs_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a" / "s1").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "s1").mkdir(parents=True)
    assert short_names(["Qwen/Qwen2.5-Math-1.5B-Instruct", "runs/a/s1", "/x/y/stage2/"]) == [
        "Qwen/Qwen2.5-Math-1.5B-Instruct", "s1", "stage2"]
    assert short_names(["runs/a/s1", "runs/b/s1"]) == ["a/s1", "b/s1"]
    assert short_names(["/r/s1/checkpoint-500", "base"]) == ["s1/checkpoint-500", "base"]


# ---------------------------------------------------------------------------------------------
# Point 5: saving per batch, resuming, progress, --max-new-tokens
# ---------------------------------------------------------------------------------------------
def test_every_batch_is_saved_and_resume_does_not_redo_it(data_file, tmp_path, char_tokenizer, scripted):
    out = tmp_path / "out"
    calls = []

    def stop_after_first_batch(n):
        calls.append(n)
        if len(calls) == 2:  # the first call reports resumed problems, the second the first batch
            raise KeyboardInterrupt

    cfg = scripted_config(data_file, out, decoding=Decoding(batch_size=3))  # a batch: 3 problems x 1 sample
    first = scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION)
    with pytest.raises(EvalInterrupted) as e:
        evaluate(cfg, Progress(problems=stop_after_first_batch), tokenizer=char_tokenizer, generator=first)
    assert (e.value.saved, e.value.total, e.value.output_dir) == (3, 8, out)
    saved = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in saved] == ["p0", "p1", "p2"] and not (out / "metrics.json").exists()
    assert sorted(first.questions_seen(0)) == sorted(list(PROBLEMS)[:3])  # one batch was generated

    # a line cut short by a kill mid-write is dropped on resume, and that problem redone
    with open(out / "samples.jsonl", "a") as f:
        f.write('{"id": "p3", "question": "Comp')
    gen = scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION)
    resumed = evaluate(scripted_config(data_file, out, decoding=Decoding(batch_size=3), resume=True),
                       tokenizer=char_tokenizer, generator=gen)
    assert sorted(gen.questions_seen(0)) == sorted(list(PROBLEMS)[3:])  # the saved batch is not regenerated
    assert [r["id"] for r in resumed.rows] == [f"p{i}" for i in range(8)]
    fresh = evaluate(scripted_config(data_file, tmp_path / "fresh", decoding=Decoding(batch_size=3)),
                     tokenizer=char_tokenizer, generator=scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION))
    assert resumed.metrics == fresh.metrics


def test_progress_moves_per_batch(data_file, tmp_path, char_tokenizer, scripted):
    events = []
    progress = Progress(start=lambda total: events.append(("start", total)),
                        problems=lambda n: events.append(("problems", n)))
    evaluate(scripted_config(data_file, tmp_path / "o", decoding=Decoding(batch_size=2)), progress,
             tokenizer=char_tokenizer, generator=scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION))
    assert events == [("start", 8), ("problems", 0)] + [("problems", 2)] * 4


def test_interrupted_cli_says_what_is_saved_and_how_to_resume(tmp_path, tiny_model_dir, data_file, monkeypatch):
    real = evaluate_module.rollout_rows
    seen = []

    def rollout_rows(task, problems, *args, **kw):
        if len(seen) == 1:
            raise KeyboardInterrupt
        seen.append([p.id for p in problems])
        return real(task, problems, *args, **kw)

    monkeypatch.setattr(evaluate_module, "rollout_rows", rollout_rows)
    out = tmp_path / "ev"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(data_file), "--max-new-tokens", "2",
            "--batch-size", "4", "--output-dir", str(out)]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/score", *args])
    r = runner.invoke(app, args)
    assert r.exit_code == 130, r.output
    (line,) = [x for x in r.output.splitlines() if x.startswith("interrupted")]
    assert line == (f"interrupted: 4 of 8 data problems are saved in {out}; resume with: score "
                    f"{' '.join(args)} --resume")
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4

    seen.clear()
    monkeypatch.setattr(evaluate_module, "rollout_rows", lambda *a, **kw: seen.append(1) or real(*a, **kw))
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert len(seen) == 1 and json.loads((out / "metrics.json").read_text())["n_problems"] == 8  # one batch left


def test_command_line_and_resume_command():
    assert command_line(["/venv/bin/score", "eval", "--model", "a b"]) == "score eval --model 'a b'"
    main = "/x/score_cli/__main__.py"
    assert command_line([main, "eval", "--no-resume"], resume=True) == "python -m score_cli eval --resume"
    assert command_line([main, "eval", "--resume"], resume=True) == "python -m score_cli eval --resume"


def test_max_new_tokens_defaults_to_the_task_and_is_kept_when_given():
    assert [c.decoding.max_new_tokens for c in plan_evals("m", "toy,math,gsm8k,humaneval,mbpp,champ")] == [
        160, 1024, 512, 512, 512, 1024]
    (cfg,) = plan_evals("m", "math", data="x.jsonl")
    assert cfg.decoding.max_new_tokens == 1024 and cfg.output_dir == os.path.join("runs", "eval-data-m")
    assert [c.decoding.max_new_tokens for c in plan_evals("m", "toy,math", max_new_tokens=7)] == [7, 7]
    assert plan_evals("m", "toy")[0].decoding.batch_size == 32  # vLLM gets more sequences at once
    assert plan_evals("m", "toy", backend="vllm")[0].decoding.batch_size == 256
    assert [c.output_dir for c in plan_evals("org/m", "toy,math", output_dir="o")] == [
        os.path.join("o", "toy"), os.path.join("o", "math")]


def test_fit_to_context():
    # prompt + turns x budget + (turns - 1) x (EOS + instruction) <= context
    assert fit_to_context(1024, context=4096, longest_prompt=300, turns=2, instruction_tokens=90) == 1024
    assert fit_to_context(1024, context=2048, longest_prompt=300, turns=2, instruction_tokens=89) == 829
    assert fit_to_context(1024, context=2048, longest_prompt=300, turns=3, instruction_tokens=89) == 522
    with pytest.raises(ScoreError, match="leave no room"):
        fit_to_context(10, context=400, longest_prompt=399, turns=2, instruction_tokens=5)


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory, char_tokenizer):
    from score_cli.toy_model import tiny_causal_lm

    path = tmp_path_factory.mktemp("short-context")
    tiny_causal_lm(char_tokenizer, hidden=32, layers=2, heads=2, max_len=640, seed=0).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


def test_max_new_tokens_is_clipped_to_the_context(short_context_model, data_file, tmp_path, caplog,
                                                  char_tokenizer):
    from score_cli.rollout import first_attempt_ids, instruction_ids
    from score_cli.tasks.registry import load_task

    task, problems = load_task(None, data=str(data_file), limit=2)
    longest = max(len(first_attempt_ids(char_tokenizer, task, p)) for p in problems)
    budget = (640 - longest - (len(instruction_ids(char_tokenizer, task.instruction)) + 1)) // 2
    assert 0 < budget < 1024
    with caplog.at_level("WARNING"):
        res = evaluate(EvalConfig(model=str(short_context_model), bench=None, data=str(data_file), limit=2,
                                  output_dir=str(tmp_path / "o"),
                                  decoding=Decoding(max_new_tokens=1024, temperature=1.0, batch_size=2)))
    assert f"generating at most {budget} tokens per attempt" in caplog.text
    assert res.record["decoding"]["max_new_tokens"] == budget and res.record["max_new_tokens_asked"] == 1024
    assert all(a["tokens"] <= budget for r in res.rows for c in r["chains"] for a in c)
    # provenance of a --data run: what the file held, where it ran
    assert res.record["data_sha256"] and res.record["device"] == "cpu" and res.record["platform"]
    assert EvalConfig(model="m").identity() == EvalConfig(model="m").identity()  # identity keeps the asked value


# ---------------------------------------------------------------------------------------------
# Point 8: argument errors before any heavy import
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["eval", "--bench", "tyo", "--model", "x"], "error: unknown benchmark 'tyo' (did you mean toy?)"),
    (["stage1", "--bench", "tyo", "--model", "x"], "error: unknown benchmark 'tyo' (did you mean toy?)"),
    (["stage2", "--from-checkpoint", "runs/s1-typo"], "error: --from-checkpoint runs/s1-typo does not exist"),
], ids=["eval", "stage1", "stage2"])
def test_a_mistyped_argument_fails_at_once_without_importing_torch(args, message, tmp_path, monkeypatch):
    from score_cli.config_options import field_specs

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    field_specs()  # the stage options' cache, as any earlier `score` run leaves it
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "score_cli", *args],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "score_cli.cli" in imported  # the import log is complete
    assert not {"torch", "transformers", "trl", "datasets"} & imported, sorted(imported)
    lines = [x for x in (p.stdout + p.stderr).splitlines() if x.strip() and not x.startswith("import time:")]
    assert p.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith(message)


def test_bench_list_errors_are_one_line():
    with pytest.raises(ScoreError, match="--data evaluates one file"):
        plan_evals("m", "toy,math", data="x.jsonl")
    with pytest.raises(ScoreError, match="names a benchmark twice"):
        plan_evals("m", "toy,toy")
    with pytest.raises(ScoreError, match="unknown benchmark 'gms8k' \\(did you mean gsm8k\\?\\)"):
        plan_evals("m", "toy,gms8k")


# ---------------------------------------------------------------------------------------------
# Point 9: several benchmarks, compare, env
# ---------------------------------------------------------------------------------------------
def test_several_benchmarks_in_one_call_load_the_model_once(tmp_path, tiny_model_dir, monkeypatch):
    import score_cli.models as models

    loads = []
    real = models.load_causal_lm
    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **kw: loads.append(a) or real(*a, **kw))
    out = tmp_path / "ev"
    r = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--bench", "toy,champ", "--limit", "2",
                            "--max-new-tokens", "2", "--output-dir", str(out)])
    assert r.exit_code == 0, r.output
    assert len(loads) == 1
    for bench in ("toy", "champ"):
        record = json.loads((out / bench / "metrics.json").read_text())
        assert record["benchmark"] == bench and record["n_problems"] == 2
    assert "toy (2)" in r.output and "champ (2)" in r.output  # one table, a column per benchmark


def fake_run(d: Path, model: str, bench: str, t1: float, t2: float, n: int = 100) -> Path:
    d.mkdir(parents=True)
    metrics = {"accuracy@t1": {"value": t1}, "accuracy@t2": {"value": t2}, "delta(t1,t2)": {"value": t2 - t1},
               "i->c(t1,t2)": {"value": 0.1}, "c->i(t1,t2)": {"value": 0.1 - (t2 - t1)}}
    (d / "metrics.json").write_text(json.dumps({"model": model, "benchmark": bench, "n_problems": n, "turns": 2,
                                                "metrics": metrics}))
    return d


def test_compare_two_runs_and_write_markdown(tmp_path):
    a = fake_run(tmp_path / "eval-a", "/runs/s1", "math", 0.5, 0.55)
    b = fake_run(tmp_path / "eval-b", "Qwen/Qwen2.5-Math-1.5B-Instruct", "data:/x/my.jsonl", 0.4, 0.38, n=50)
    out = tmp_path / "cmp.md"
    r = runner.invoke(app, ["compare", str(a), str(b), "--out", str(out)])
    assert r.exit_code == 0, r.output
    for text in ("s1", "Qwen/Qwen2.5-Math-1.5B-Instruct", "data:my.jsonl", "50.0", "55.0", "+5.0", "-2.0", "50"):
        assert text in r.output, text
    md = out.read_text().splitlines()
    assert md[0] == "| model | bench | t1 | t2 | Δ(t1,t2) | Δ i→c | Δ c→i | n |"
    assert md[2] == "| s1 | math | 50.0 | 55.0 | +5.0 | 10.0 | 5.0 | 100 |"
    assert md[3] == "| Qwen/Qwen2.5-Math-1.5B-Instruct | data:my.jsonl | 40.0 | 38.0 | -2.0 | 10.0 | 12.0 | 50 |"
    # two runs of one model on one benchmark: the run tells them apart
    c = fake_run(tmp_path / "eval-c", "/runs/s1", "math", 0.6, 0.6)
    assert markdown(comparison([a, c])).splitlines()[0].startswith("| run | model | bench |")


def test_compare_needs_eval_runs(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "samples.jsonl").write_text("{}\n")
    for d, match in ((tmp_path / "half", "--resume"), (tmp_path / "none", "not a directory")):
        r = runner.invoke(app, ["compare", str(d)])
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and match in lines[0], r.output


def test_env_reports_versions_and_cuda():
    r = runner.invoke(app, ["env"])
    assert r.exit_code == 0, r.output
    for key in ("python", "CPU", "torch", "transformers", "trl", "datasets", "accelerate", "math-verify", "CUDA"):
        assert re.search(rf"^- {re.escape(key)}: \S", r.output, re.M), key
