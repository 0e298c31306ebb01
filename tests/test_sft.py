"""The SFT baselines (`score sft`): which pairs and traces are kept, the loss mask, a whole run on a
scripted sampler with a real fine-tune, resuming, loading the output, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from score_cli.cli import app
from score_cli.errors import ScoreError
from score_cli.rollout import first_attempt_ids, instruction_ids, next_attempt_input
from score_cli.sft import (
    DATA_FILE,
    SAMPLES_FILE,
    Attempt,
    SFTRequest,
    build_examples,
    pair_examples,
    run_sft,
    sft_sequence,
    star_examples,
)
from score_cli.tasks.toy_task import TOY_INSTRUCTION, ToyTask, toy_problems

EOS = 2


def att(text: str, correct: bool) -> Attempt:
    return Attempt(ids=(ord(text[0]), EOS), text=text, correct=correct)


def test_pair_sft_pairs_each_wrong_first_attempt_with_a_right_one_in_turn():
    w1, w2, w3, r1, r2 = att("a", False), att("b", False), att("c", False), att("R", True), att("S", True)
    pairs = pair_examples({
        "p": [w1, r1, w2, r2, w3],  # three wrong, two right: the right ones in turn
        "all-right": [r1, r2],  # nothing to correct
        "all-wrong": [w1, w2],  # nothing to pair with
    })
    assert pairs == [("p", w1, r1), ("p", w2, r2), ("p", w3, r1)]


def test_star_keeps_every_trace_whose_second_attempt_is_right():
    w, r = att("w", False), att("r", True)
    kept = star_examples({"p": [(w, r), (r, r), (r, w), (w, w)], "q": [(w, w)]})
    assert kept == [("p", w, r), ("p", r, r)]


def test_the_sequence_is_the_rollouts_attempt_two_input_and_the_loss_covers_y2_only():
    x1, instr = [1, 5, 6], [7, 8]
    seq = sft_sequence(x1, [10, 11], [20, 21, EOS], eos_id=EOS, instruction=instr)  # y1 cut off: EOS added
    assert seq["input_ids"] == [1, 5, 6, 10, 11, EOS, 7, 8, 20, 21, EOS]
    assert seq["input_ids"][:8] == next_attempt_input(x1, [10, 11], eos_id=EOS, instruction=instr)
    assert seq["completion_mask"] == [0] * 8 + [1, 1, 1]
    seq = sft_sequence(x1, [10, EOS], [20], eos_id=EOS, instruction=instr)  # y2 cut off: EOS appended
    assert seq["input_ids"] == [1, 5, 6, 10, EOS, 7, 8, 20, EOS] and seq["completion_mask"] == [0] * 7 + [1, 1]


def _rows(chains_by_id: dict[str, list[list[tuple[str, bool]]]]) -> list[dict]:
    return [{"id": pid, "chains": [[{"ids": [ord(t[0]), EOS], "text": t, "correct": ok} for t, ok in chain]
                                   for chain in chains]} for pid, chains in chains_by_id.items()]


def test_a_round_without_pairs_or_kept_traces_is_one_line_saying_why():
    firsts = {"p": [1], "q": [1]}
    every_first_right = _rows({"p": [[("R", True)], [("S", True)]], "q": [[("T", True)], [("U", True)]]})
    with pytest.raises(ScoreError, match="no pairs in 4 sampled first attempts .every first attempt was right"):
        build_examples("pair", every_first_right, firsts=firsts, eos_id=EOS, instruction=[9])
    never_right = _rows({"p": [[("a", False)], [("b", False)]], "q": [[("R", True)], [("S", True)]]})
    with pytest.raises(ScoreError, match="no problem with a wrong first attempt has a right one"):
        build_examples("pair", never_right, firsts=firsts, eos_id=EOS, instruction=[9])
    no_right_second = _rows({"p": [[("R", True), ("a", False)]], "q": [[("a", False), ("b", False)]]})
    with pytest.raises(ScoreError, match="STaR kept no traces: none of 2 sampled second attempts is right"):
        build_examples("star", no_right_second, firsts=firsts, eos_id=EOS, instruction=[9])
    examples, stats = build_examples("star", _rows({"p": [[("a", False), ("R", True)], [("R", True), ("b", False)]]}),
                                     firsts=firsts, eos_id=EOS, instruction=[9])
    assert stats == {"traces": 2, "wrong_to_right": 1, "right_to_right": 0, "examples": 1}
    assert examples[0]["input_ids"] == [1, ord("a"), EOS, 9, ord("R"), EOS] and examples[0]["y2"] == "R"


def test_trls_collator_puts_the_loss_on_y2_only(tiny_model_dir, char_tokenizer):
    """What SFTTrainer builds from our sequences: labels are -100 everywhere but y2 and its EOS."""
    from datasets import Dataset
    from trl import SFTTrainer

    from score_cli.sft import build_config

    task, problem = ToyTask(), toy_problems("train", n=1)[0]
    x1 = first_attempt_ids(char_tokenizer, task, problem)
    y1, y2 = char_tokenizer("12 wrong")["input_ids"], char_tokenizer("The final answer is $3$.")["input_ids"]
    seq = sft_sequence(x1, y1, y2, eos_id=char_tokenizer.eos_token_id,
                       instruction=instruction_ids(char_tokenizer, TOY_INSTRUCTION))
    config = build_config({"report_to": "none", "per_device_train_batch_size": 1}, "/tmp/unused-sft")
    trainer = SFTTrainer(model=str(tiny_model_dir), args=config, train_dataset=Dataset.from_list([seq]),
                         processing_class=char_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"][0].tolist()
    n = len(seq["input_ids"])
    assert batch["input_ids"][0].tolist()[:n] == seq["input_ids"]
    assert [t for t in labels if t != -100] == [*y2, char_tokenizer.eos_token_id]
    assert labels[: n - len(y2) - 1] == [-100] * (n - len(y2) - 1)


class ScriptedFactory:
    """`make_generator` for run_sft: a scripted policy per round, recording which model it stands for."""

    def __init__(self, scripted, tokenizer, script, fail_after=None):
        self.scripted, self.tokenizer, self.script, self.fail_after = scripted, tokenizer, script, fail_after
        self.models: list[str] = []

    def __call__(self, model_name, tokenizer, config):
        self.models.append(model_name)
        return self.scripted(self.tokenizer, self.script, TOY_INSTRUCTION, fail_after=self.fail_after)


def _script(problems, samples: int) -> dict:
    """Per question, `samples` chains: odd ones wrong then right (a correction), even ones right twice."""
    right = {p.question: f"The final answer is ${p.answer}$." for p in problems}
    return {q: [["The final answer is $0$.", r] if k % 2 else [r, r] for k in range(samples)]
            for q, r in right.items()}


def _log_likelihood(model_dir, tokenizer, seqs) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total = 0.0
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s["input_ids"]])
            logp = model(ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
            total += float((logp * torch.tensor(s["completion_mask"][1:])).sum())
    return total


def test_star_end_to_end_trains_on_the_kept_traces_and_the_output_loads_like_a_stage(
        tiny_model_dir, char_tokenizer, scripted, tmp_path, monkeypatch):
    problems = toy_problems("train", seed=42, n=6)
    factory = ScriptedFactory(scripted, char_tokenizer, _script(problems, 2))
    out = tmp_path / "star"
    req = SFTRequest(method="star", model=str(tiny_model_dir), bench="toy", limit=6, output_dir=str(out),
                     overrides={"samples_per_problem": 2, "rounds": 2, "problems_per_round": 3, "max_steps": 4,
                                "learning_rate": 3e-3, "per_device_train_batch_size": 4, "report_to": "none",
                                "max_attempt_length": 40, "save_steps": 2})
    run_sft(req, make_generator=factory)
    # round 2 samples from round 1's model; each round fine-tunes the initial model (STaR)
    assert factory.models == [str(tiny_model_dir), str(out / "round-1")]
    record = json.loads((out / "score_run.json").read_text())
    assert record["stage"] == "sft" and record["method"] == "star" and record["finished"]
    assert record["base_model"] == str(tiny_model_dir)
    assert [r["problems"] for r in record["rounds"]] == [3, 3]
    # what repro compares before reusing the run: the request's settings are the recorded ones
    from score_cli.demo import check_same_settings

    check_same_settings(out, record, {**req.overrides, "method": "star"})
    assert [(r["traces"], r["wrong_to_right"], r["right_to_right"], r["examples"]) for r in record["rounds"]] == \
        [(6, 3, 3, 6), (6, 3, 3, 6)]
    rows = [json.loads(line) for line in (out / "round-1" / SAMPLES_FILE).read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["chains"]) == 2 and len(r["chains"][0]) == 2 for r in rows)
    data = [json.loads(line) for line in (out / "round-1" / DATA_FILE).read_text().splitlines()]
    # fine-tuning made the kept second attempts more likely than under the initial model
    assert _log_likelihood(out, char_tokenizer, data) > _log_likelihood(tiny_model_dir, char_tokenizer, data) + 1.0
    # the output is a model directory, evaluated like any, and Stage II starts from it
    from score_cli.models import stage1_output_record

    assert stage1_output_record(str(out))["base_model"] == str(tiny_model_dir)
    from score_cli.train import TrainRequest, plan

    assert plan(TrainRequest(stage=2, from_checkpoint=str(out), output_dir=str(tmp_path / "s2")))[
        "reference (base)"] == str(tiny_model_dir)


def test_pair_sft_run_resumes_after_an_interrupt_without_resampling(
        tiny_model_dir, char_tokenizer, scripted, tmp_path):
    problems = toy_problems("train", seed=42, n=4)
    script = {p.question: [["The final answer is $0$."], [f"The final answer is ${p.answer}$."]] for p in problems}
    out = tmp_path / "pair"
    over = {"samples_per_problem": 2, "max_steps": 2, "per_device_train_batch_size": 2, "report_to": "none",
            "generation_batch_size": 4, "max_attempt_length": 40}
    req = SFTRequest(method="pair", model=str(tiny_model_dir), bench="toy", limit=4, output_dir=str(out),
                     overrides=over)
    with pytest.raises(KeyboardInterrupt):  # the second generation batch is interrupted
        run_sft(req, make_generator=ScriptedFactory(scripted, char_tokenizer, script, fail_after=1))
    saved = (out / "round-1" / SAMPLES_FILE).read_text().splitlines()
    assert len(saved) == 2  # the first batch (2 problems x 2 samples) is on disk
    with pytest.raises(ScoreError, match="already holds a run: pass --resume"):
        run_sft(req, make_generator=ScriptedFactory(scripted, char_tokenizer, script))
    again = ScriptedFactory(scripted, char_tokenizer, script)
    req.resume = True
    run_sft(req, make_generator=again)
    rows = (out / "round-1" / SAMPLES_FILE).read_text().splitlines()
    assert rows[:2] == saved and len(rows) == 4
    record = json.loads((out / "score_run.json").read_text())
    assert record["finished"] and record["rounds"][0]["examples"] == 4  # each wrong sample paired with the right one
    data = [json.loads(line) for line in (out / "round-1" / DATA_FILE).read_text().splitlines()]
    assert {d["y1"] for d in data} == {"The final answer is $0$."}
    assert all(d["y2"] == f"The final answer is ${p.answer}$." for d, p in zip(data, problems, strict=True))


def test_sft_bad_input_is_one_line(tiny_model_dir, tmp_path):
    runner = CliRunner()
    cases = [
        (["sft", "--method", "dpo", "--model", str(tiny_model_dir)], "unknown --method 'dpo'"),
        (["sft", "--method", "pair", "--model", str(tmp_path / "nope")], "does not exist"),
        (["sft", "--method", "star", "--from-checkpoint", str(tiny_model_dir)], "is not a Stage I output"),
        (["sft", "--method", "pair", "--rounds", "2", "--model", str(tiny_model_dir), "--bench", "toy",
          "--output-dir", str(tmp_path / "o")], "Pair-SFT has one round"),
        (["sft", "--model", str(tiny_model_dir), "--bench", "nope"], "unknown benchmark 'nope'"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output and "Traceback" not in r.output, r.output


def test_sft_refuses_several_processes(tiny_model_dir, tmp_path, monkeypatch):
    """Every process would sample the same problems into the same files: one process only."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ScoreError, match="one process: run it without accelerate launch"):
        run_sft(SFTRequest(method="star", model=str(tiny_model_dir), bench="toy", output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
