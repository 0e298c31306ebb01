"""Bad input to stage1/eval/report: one line saying what is wrong and how to fix it, exit code 2, no
traceback, and no model loaded for what can be checked without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from score_cli.cli import app
from score_cli.errors import ScoreError
from score_cli.train import coerce_recipe_value

runner = CliRunner()
FAST = ["--max-attempt-length", "6", "--num-generations", "2", "--per-device-train-batch-size", "4",
        "--report-to", "none", "--save-strategy", "no", "--max-steps", "1"]


@pytest.fixture
def data_file(doubling_data):
    return doubling_data(6)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a tokenizer or model fails the test: these errors must come before any is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the input was checked")

    monkeypatch.setattr("score_cli.models.load_tokenizer", refuse)
    monkeypatch.setattr("score_cli.models.load_causal_lm", refuse)


def one_line_error(args, *match):
    result = runner.invoke(app, [str(a) for a in args])
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    for m in match:
        assert m in lines[0], lines[0]
    return lines[0]


def stage1(model, tmp_path, *args):
    return ["stage1", "--model", model, "--output-dir", tmp_path / "run", *FAST, *args]


def evaluate(model, tmp_path, *args):
    return ["eval", "--model", model, "--max-new-tokens", "4", "--output-dir", tmp_path / "ev", *args]


def test_paths_that_are_directories_or_files(tmp_path, tiny_model_dir, data_file, no_model):
    model = tiny_model_dir
    one_line_error(stage1(model, tmp_path, "--data", data_file, "--recipe", tmp_path), "is a directory", "--recipe")
    one_line_error(stage1(model, tmp_path, "--data", tmp_path), "is a directory", "--data")
    one_line_error(evaluate(model, tmp_path, "--data", tmp_path), "is a directory", "--data")
    named_jsonl = tmp_path / "dir.jsonl"
    named_jsonl.mkdir()
    one_line_error(evaluate(model, tmp_path, "--data", named_jsonl), "is a directory")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for cmd in ("stage1", "eval"):
        args = ["--model", model, "--data", data_file, "--output-dir", a_file] + (FAST if cmd == "stage1" else [])
        one_line_error([cmd, *args], "--output-dir", "is a file", "choose another --output-dir")
        args[args.index(a_file)] = a_file / "sub"
        one_line_error([cmd, *args], "which is a file")
    assert a_file.read_text() == "x"


def test_data_that_is_not_utf8_names_its_line(tmp_path, tiny_model_dir, no_model):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(b'{"problem": "1+1", "answer": "2"}\n{"problem": "caf\xe9", "answer": "1"}\n')
    for args in (stage1(tiny_model_dir, tmp_path, "--data", latin),
                 evaluate(tiny_model_dir, tmp_path, "--data", latin)):
        one_line_error(args, f"{latin}:2: not UTF-8", "save the file as UTF-8")
    bom = tmp_path / "bom.jsonl"  # a UTF-8 byte-order mark is still UTF-8
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"problem": "", "answer": "2"}\n')
    one_line_error(evaluate(tiny_model_dir, tmp_path, "--data", bom), f"{bom}:1: 'problem' is empty")


def test_empty_question_or_answer_names_file_and_line(tmp_path, tiny_model_dir, no_model):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n\n{"problem": "  ", "answer": "3"}\n')
    for args in (stage1(tiny_model_dir, tmp_path, "--data", data), evaluate(tiny_model_dir, tmp_path, "--data", data)):
        one_line_error(args, f"{data}:3: 'problem' is empty", "drop the row")
    data.write_text('{"problem": "1+1", "answer": ""}\n')
    one_line_error(evaluate(tiny_model_dir, tmp_path, "--data", data), f"{data}:1: 'answer' is empty")
    data.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": null, "answer": "2"}\n')
    one_line_error(evaluate(tiny_model_dir, tmp_path, "--data", data), f"{data}:2: the row has no 'problem'")


def test_out_of_range_values(tmp_path, tiny_model_dir, data_file, no_model):
    one_line_error(stage1(tiny_model_dir, tmp_path, "--data", data_file, "--temperature", -1),
                   "temperature must be > 0", "--temperature 1.0")
    one_line_error(stage1(tiny_model_dir, tmp_path, "--data", data_file, "--temperature", 0), "temperature must be > 0")
    one_line_error(stage1(tiny_model_dir, tmp_path, "--data", data_file, "--max-attempt-length", 0),
                   "max_attempt_length must be at least 1")
    one_line_error(evaluate(tiny_model_dir, tmp_path, "--data", data_file, "--temperature", -1),
                   "--temperature must be >= 0", "greedy")
    one_line_error(evaluate(tiny_model_dir, tmp_path, "--data", data_file, "--limit", 0), "--limit must be at least 1")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("temperature: -0.5\n")  # a recipe's values are checked as the options are
    one_line_error(stage1(tiny_model_dir, tmp_path, "--data", data_file, "--recipe", recipe), "temperature must be > 0")


def test_recipe_values_of_the_wrong_type_name_key_and_type(tmp_path, tiny_model_dir, data_file, no_model):
    recipe = tmp_path / "r.yaml"
    cases = {
        "alpha: ten\n": "alpha must be a number, got 'ten'",
        "max_steps: 2.5\n": "max_steps must be an integer, got 2.5",
        "max_steps: many\n": "max_steps must be an integer, got 'many'",
        "alpha: yes\n": "alpha must be a number, got True",
        "alpha: [1, 2]\n": "alpha must be a number, got [1, 2]",
        "alpha: null\n": "alpha must be a number, got null",
        "bf16: maybe\n": "bf16 must be true or false, got 'maybe'",
        "limit: some\n": "limit must be an integer, got 'some'",
        "baseline: [rloo]\n": "baseline must be a string",
    }
    for text, message in cases.items():
        recipe.write_text(text)
        one_line_error(stage1(tiny_model_dir, tmp_path, "--data", data_file, "--recipe", recipe),
                       f"recipe {recipe}: {message}")
    recipe.write_bytes(b"alpha: 1.0 # caf\xe9\n")
    one_line_error(stage1(tiny_model_dir, tmp_path, "--data", data_file, "--recipe", recipe), "not UTF-8")


def test_numbers_written_as_text_in_a_recipe_are_converted(tmp_path, tiny_model_dir, data_file):
    recipe = tmp_path / "r.yaml"
    # PyYAML reads 5e-6 (no dot) as a string; "10" quoted is a string; 3.0 is a float
    recipe.write_text('learning_rate: 5e-6\nmax_steps: "10"\nsave_steps: 3.0\nnum_generations: 4.0\n'
                      'alpha: "2.5"\nbf16: "false"\nlimit: "5"\n')
    assert yaml.safe_load(recipe.read_text())["learning_rate"] == "5e-6"
    r = runner.invoke(app, ["stage1", "--model", str(tiny_model_dir), "--data", str(data_file), "--recipe",
                            str(recipe), "--dry-run"])
    assert r.exit_code == 0, r.output
    plan = yaml.safe_load(r.output)
    config = plan["config"]
    assert config["learning_rate"] == 5e-6 and config["max_steps"] == 10 and config["save_steps"] == 3
    assert config["num_generations"] == 4 and config["alpha"] == 2.5 and config["bf16"] is False
    assert plan["data"]["limit"] == 5


def test_coerce_recipe_value():
    p = Path("r.yaml")
    assert coerce_recipe_value(p, "x", "1e3", int) == 1000 and coerce_recipe_value(p, "x", "-7", int) == -7
    assert coerce_recipe_value(p, "x", "1e-3", float) == 0.001 and coerce_recipe_value(p, "x", 2, float) == 2.0
    assert coerce_recipe_value(p, "x", None, int | None) is None
    assert coerce_recipe_value(p, "x", "off", bool | None) is False
    assert coerce_recipe_value(p, "x", ["a"], list[str]) == ["a"]  # not a simple type: unchanged
    assert coerce_recipe_value(p, "x", "steps", int | str) == "steps"
    with pytest.raises(ScoreError, match="recipe r.yaml: x must be an integer, got '1.5'"):
        coerce_recipe_value(p, "x", "1.5", int)


def test_report_on_malformed_files(tmp_path):
    run = tmp_path / "ev"
    run.mkdir()
    (run / "samples.jsonl").write_text('{"id": "a", "chains": [[{"correct": true}, {"correct": false}]]}\n{"id": \n')
    one_line_error(["report", run], "samples.jsonl:2: malformed JSON")
    (run / "samples.jsonl").write_text('{"id": "a", "chains": [[{"correct": true}, {"correct": false}]]}\n'
                                       '{"id": "b"}\n')
    one_line_error(["report", run], "samples.jsonl:2: not a score eval row")
    (run / "samples.jsonl").write_bytes(b'{"id": "\xff"}\n')
    one_line_error(["report", run], "samples.jsonl:1: not UTF-8")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "score_run.json").write_text('{"stage": 1, "log_history": [{"step": 1, "lo')
    one_line_error(["report", stage], "score_run.json is corrupt")
    (stage / "score_run.json").write_text('{"stage": 1, "log_history": [3]}')
    one_line_error(["report", stage], "log_history is not a list of logged steps")
    # an unfinished run: a checkpoint cut short is passed over for the one before it
    (stage / "score_run.json").write_text('{"stage": 1, "finished": false}')
    for step, text in ((1, json.dumps({"log_history": [{"step": 1, "reward/t1": 0.5}]})), (2, '{"log_hist')):
        (stage / f"checkpoint-{step}").mkdir()
        (stage / f"checkpoint-{step}" / "trainer_state.json").write_text(text)
    r = runner.invoke(app, ["report", str(stage)])
    assert r.exit_code == 0 and (stage / "training_curves.png").exists(), r.output


@pytest.mark.parametrize(("args", "match"), [
    (["--data-json", "{slip: 0.15}"], "--data-json is not JSON"),
    (["--data-json", "[1]"], "must be a JSON object of toy data fields"),
    (["--data-json", '{"secnd": {"slip": 0.15}}'], "unknown toy data field(s) secnd"),
    (["--base-band", "--one-base"], "--base-band chooses a base per seed"),
    (["--seeds", "0,x"], "--seeds '0,x' is not a comma-separated list of integers"),
    (["--seeds", "1,1"], "no seed twice"),
    (["--learning-rate", "SCoRe"], "--learning-rate 'SCoRe' is not METHOD=LR"),
    (["--learning-rate", "STaR=1e-4"], "'STaR', which is not an RL method"),
    (["--learning-rate", "SCoRe=0"], "a learning rate must be a positive number"),
    (["--recipe", "no/such.yaml"], "recipe no/such.yaml does not exist"),
])
def test_repro_refuses_bad_options_before_building_anything(tmp_path, monkeypatch, args, match):
    monkeypatch.setattr("score_cli.toy_model.train_toy_model",
                        lambda *a, **k: pytest.fail("a base was built before the options were checked"))
    one_line_error(["repro", "--root", tmp_path / "r", *args], match)
    assert not (tmp_path / "r").exists()
