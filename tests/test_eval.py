"""`score eval` end to end on a scripted policy with known transitions, resuming, and bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from score_cli.cli import app
from score_cli.errors import ScoreError
from score_cli.evaluate import EvalConfig, evaluate
from score_cli.rollout import Decoding
from score_cli.tasks import MATH_INSTRUCTION

FINAL = "Final Answer: The final answer is ${}$. I hope it is correct."
# question -> (gold, attempt 1, attempt 2); transitions: 3 c->c, 1 c->i, 2 i->c, 2 i->i
PROBLEMS = {
    "Compute 2+3.": ("5", FINAL.format(5), FINAL.format(5)),
    "Compute 10-4.": ("6", FINAL.format(6), "So \\boxed{6}."),
    "Compute 1/2 as a fraction.": ("\\frac{1}{2}", FINAL.format("\\frac{1}{2}"), FINAL.format("0.5")),
    "Compute 3*3.": ("9", FINAL.format(9), FINAL.format(8)),
    "Compute 7+7.": ("14", FINAL.format(13), FINAL.format(14)),
    "Compute 2^5.": ("32", "I think it is 32 but I am not done", FINAL.format(32)),
    "Compute 100/4.": ("25", FINAL.format(24), FINAL.format(24)),
    "Compute 8+8.": ("16", "no idea", "still no idea"),
}
SCRIPT = {q: [a1, a2] for q, (_, a1, a2) in PROBLEMS.items()}


@pytest.fixture
def data_file(tmp_path, jsonl):
    return jsonl(tmp_path / "problems.jsonl", [{"id": f"p{i}", "problem": q, "answer": g}
                                               for i, (q, (g, _, _)) in enumerate(PROBLEMS.items())])


def run(cfg, tok, gen):
    return evaluate(cfg, tokenizer=tok, generator=gen)


def config(data_file, out, **kw):
    return EvalConfig(model="scripted", bench=None, data=str(data_file), output_dir=str(out), chunk_size=3, **kw)


def test_scripted_eval_outputs_and_metrics(data_file, tmp_path, char_tokenizer, scripted):
    gen = scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION)
    res = run(config(data_file, tmp_path / "out"), char_tokenizer, gen)
    m = {k: v["value"] for k, v in res.metrics.items()}
    assert m["accuracy@t1"] == pytest.approx(4 / 8)  # c->c x3 (5, 6, 1/2 vs 0.5) and 9 (then broken)
    assert m["accuracy@t2"] == pytest.approx(5 / 8)
    assert m["i->c(t1,t2)"] == pytest.approx(2 / 8) and m["c->i(t1,t2)"] == pytest.approx(1 / 8)
    assert m["delta(t1,t2)"] == pytest.approx(1 / 8)
    assert m["fixed|wrong(t1,t2)"] == pytest.approx(2 / 4) and m["broken|right(t1,t2)"] == pytest.approx(1 / 4)

    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(8)]
    r = rows[5]
    assert r["question"] == "Compute 2^5." and r["gold"] == "32"
    (chain,) = r["chains"]
    assert chain[0]["answer"] is None and chain[0]["correct"] is False  # no marker: unfinished work scores 0
    assert chain[1]["answer"] == "32" and chain[1]["correct"] is True
    assert chain[1]["text"] == FINAL.format(32)

    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["model"] == "scripted" and record["turns"] == 2 and record["seed"] == 0
    assert record["decoding"]["temperature"] == 0.0 and "transformers" in record["versions"]
    assert record["summary"]["delta"] == pytest.approx(1 / 8)
    # attempt 2 saw attempt 1 and the instruction (the scripted policy counts instructions)
    assert sorted(gen.questions_seen(1)) == sorted(PROBLEMS)


def test_resume_after_interruption_loses_nothing(data_file, tmp_path, char_tokenizer, scripted):
    out = tmp_path / "out"

    def policy():
        return scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION)

    # chunks of 3 problems, 2 generate calls per chunk: dies in the second chunk
    with pytest.raises(KeyboardInterrupt):
        run(config(data_file, out), char_tokenizer, scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION, fail_after=3))
    done = [json.loads(x)["id"] for x in (out / "samples.jsonl").read_text().splitlines()]
    assert done == ["p0", "p1", "p2"]
    with pytest.raises(ScoreError, match="--resume"):
        run(config(data_file, out), char_tokenizer, scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION))
    gen = scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION)
    res = run(config(data_file, out, resume=True), char_tokenizer, gen)
    assert sorted(gen.questions_seen(0)) == sorted(list(PROBLEMS)[3:])  # finished problems not redone
    fresh = run(config(data_file, tmp_path / "fresh"), char_tokenizer, policy())
    assert res.metrics == fresh.metrics
    with pytest.raises(ScoreError, match="other settings"):
        run(config(data_file, out, resume=True, turns=3), char_tokenizer, policy())


def test_samples_majority_vote(data_file, tmp_path, char_tokenizer, scripted):
    script = {q: [[FINAL.format(g), FINAL.format(g)], [FINAL.format("0"), FINAL.format(g)],
                  [FINAL.format("0"), FINAL.format("1")]] for q, (g, _, _) in PROBLEMS.items()}
    cfg = config(data_file, tmp_path / "out", samples=3, decoding=Decoding(temperature=1.0))
    res = run(cfg, char_tokenizer, scripted(char_tokenizer, script, MATH_INSTRUCTION))
    m = {k: v["value"] for k, v in res.metrics.items()}
    assert m["accuracy@t1"] == pytest.approx(1 / 3) and m["accuracy@t2"] == pytest.approx(2 / 3)
    assert m["maj@3@t1"] == 0.0  # "0" wins two votes to one
    assert m["maj@3@t2"] == 1.0
    row = json.loads((tmp_path / "out" / "samples.jsonl").read_text().splitlines()[0])
    assert len(row["chains"]) == 3


def test_three_turns(data_file, tmp_path, char_tokenizer, scripted):
    script = {q: [a1, a2, FINAL.format(PROBLEMS[q][0])] for q, (a1, a2) in SCRIPT.items()}
    res = run(config(data_file, tmp_path / "out", turns=3), char_tokenizer, scripted(char_tokenizer, script,
                                                                                      MATH_INSTRUCTION))
    assert res.metrics["accuracy@t3"]["value"] == 1.0
    assert res.metrics["delta(t1,t3)"]["value"] == pytest.approx(4 / 8)


def test_real_model_generation_path(tmp_path, tiny_model_dir, data_file):
    """The transformers path end to end with a tiny random model (the outputs are noise)."""
    cfg = EvalConfig(model=str(tiny_model_dir), bench=None, data=str(data_file), output_dir=str(tmp_path / "o"),
                     decoding=Decoding(max_new_tokens=8, batch_size=4), limit=4)
    res = evaluate(cfg)
    assert res.record["n_problems"] == 4 and res.record["throughput"]["generated_tokens"] > 0
    rows = res.rows
    assert all(0 < c[0]["tokens"] <= 8 for r in rows for c in r["chains"])


def test_cache_reuse_is_the_same_evaluation(tmp_path, tiny_model_dir, data_file):
    """Continuing attempt 1's KV cache (the default) samples what re-reading it samples, and a run
    resumed with the other setting is the same run."""
    rows = {}
    for reuse in (True, False):
        cfg = EvalConfig(model=str(tiny_model_dir), bench=None, data=str(data_file), limit=4, reuse_cache=reuse,
                         output_dir=str(tmp_path / f"{reuse}"),
                         decoding=Decoding(max_new_tokens=8, temperature=1.0, batch_size=4))
        rows[reuse] = evaluate(cfg).rows
    assert rows[True] == rows[False]
    assert len({c[0]["text"] for r in rows[True] for c in r["chains"]}) > 1  # sampled, not one repeated text
    resumed = evaluate(dataclasses.replace(cfg, output_dir=str(tmp_path / "True"), resume=True))
    assert resumed.rows == rows[True]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, the fix, exit code 2, no traceback
# ---------------------------------------------------------------------------------------------
runner = CliRunner()


def cli_error(args, match):
    result = runner.invoke(app, ["eval", *args])
    text = result.output  # stdout and stderr together
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    assert match in lines[0], lines[0]
    return lines[0]


def test_bad_input_errors(tmp_path, tiny_model_dir, data_file):
    model = str(tiny_model_dir)
    out = ["--output-dir", str(tmp_path / "o")]
    cli_error(["--model", model, "--bench", "nope", *out], "unknown benchmark 'nope'")
    cli_error(["--model", str(tmp_path / "missing"), "--data", str(data_file), *out], "does not exist")
    cli_error(["--model", "./no/such/dir", "--data", str(data_file), *out], "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", answer: 2}\n')
    cli_error(["--model", model, "--data", str(bad), *out], "bad.jsonl:2: malformed JSON")
    cli_error(["--model", model, "--data", str(data_file), "--answer-field", "solution", *out], "--answer-field")
    cli_error(["--model", model, "--data", str(data_file), "--question-field", "q", *out], "no field 'q'")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cli_error(["--model", model, "--data", str(empty), *out], "holds no problems")
    cli_error(["--model", model, "--data", str(tmp_path / "nope.jsonl"), *out], "does not exist")
    cli_error(["--model", model, "--data", str(data_file), "--samples", "4", *out], "--temperature")


def test_offline_math_says_to_pass_data(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = cli_error(["--model", str(tiny_model_dir), "--bench", "math", "--output-dir", str(tmp_path)], "--data")
    assert "HuggingFaceH4/MATH-500" in line


def test_not_a_causal_lm(tmp_path, char_tokenizer, data_file):
    d = tmp_path / "encoder"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    char_tokenizer.save_pretrained(d)
    cli_error(["--model", str(d), "--data", str(data_file), "--output-dir", str(tmp_path / "o")],
              "not a causal language model")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    cli_error(["--model", str(empty), "--data", str(data_file), "--output-dir", str(tmp_path / "o")], "config.json")


def test_output_dir_with_another_runs_results(tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    cli_error(["--model", str(tiny_model_dir), "--data", str(data_file), "--output-dir", str(out)], "already holds")


def test_resume_with_another_limit_extends_or_is_refused(data_file, tmp_path, char_tokenizer, scripted):
    """A larger --limit keeps the rows done and evaluates the rest; a smaller one is refused; and
    metrics.json describes exactly the rows of samples.jsonl at every point."""
    out = tmp_path / "out"

    def policy(**kw):
        return scripted(char_tokenizer, SCRIPT, MATH_INSTRUCTION, **kw)

    def on_disk():
        ids = [json.loads(x)["id"] for x in (out / "samples.jsonl").read_text().splitlines()]
        metrics = out / "metrics.json"
        return ids, json.loads(metrics.read_text())["n_problems"] if metrics.exists() else None

    run(config(data_file, out, limit=4), char_tokenizer, policy())
    assert on_disk() == ([f"p{i}" for i in range(4)], 4)
    # extending, interrupted: the old metrics.json goes as soon as rows are added
    with pytest.raises(KeyboardInterrupt):
        run(config(data_file, out, limit=8, resume=True), char_tokenizer, policy(fail_after=2))
    assert on_disk() == ([f"p{i}" for i in range(7)], None)
    gen = policy()
    res = run(config(data_file, out, limit=8, resume=True), char_tokenizer, gen)
    assert gen.questions_seen(0) == [list(PROBLEMS)[7]]  # the rows done are kept, not redone
    assert on_disk() == ([f"p{i}" for i in range(8)], 8)
    assert res.metrics == run(config(data_file, tmp_path / "fresh"), char_tokenizer, policy()).metrics
    # fewer problems than are done: refused, and nothing on disk changes
    before = {f: (out / f).read_text() for f in ("samples.jsonl", "metrics.json")}
    with pytest.raises(ScoreError, match=r"holds 8 evaluated problems, 6 of them beyond --limit 2: resume with "
                                         r"--limit 8 or more \(or without --limit\)"):
        run(config(data_file, out, limit=2, resume=True), char_tokenizer, policy())
    assert before == {f: (out / f).read_text() for f in ("samples.jsonl", "metrics.json")}
    # the same rows resumed without --limit (all 8): nothing to generate, the same rows and metrics
    gen = policy()
    run(config(data_file, out, resume=True), char_tokenizer, gen)
    assert not gen.calls and (out / "samples.jsonl").read_text() == before["samples.jsonl"]
    assert json.loads((out / "metrics.json").read_text())["metrics"] == json.loads(before["metrics.json"])["metrics"]
    # rows of problems the data no longer has are refused too
    data_file.write_text("".join(data_file.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(ScoreError, match="problems this data does not have \\(e.g. id 'p0'\\)"):
        run(config(data_file, out, resume=True), char_tokenizer, policy())


def test_resume_with_another_limit_through_the_cli(tmp_path, tiny_model_dir, data_file):
    out = tmp_path / "o"
    args = ["--model", str(tiny_model_dir), "--data", str(data_file), "--max-new-tokens", "2", "--output-dir", str(out)]
    assert runner.invoke(app, ["eval", *args, "--limit", "4"]).exit_code == 0
    cli_error([*args, "--limit", "2", "--resume"], "--limit 4 or more")
    r = runner.invoke(app, ["eval", *args, "--limit", "6", "--resume"])
    assert r.exit_code == 0, r.output
    rows = (out / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 6 == json.loads((out / "metrics.json").read_text())["n_problems"]
