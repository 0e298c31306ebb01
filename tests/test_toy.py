"""The toy world: a deterministic generated task, disjoint splits, gold solutions the math reward
accepts, training data whose second attempts ignore first-attempt correctness, and a test model
that loads like a hub model."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import score_cli.toy_model as toy_model
from score_cli.math_grader import extract_answer as final_answer
from score_cli.rollout import Decoding, HFGenerator, first_attempt_ids, instruction_ids, run_attempts
from score_cli.tasks.toy_task import (
    TOY_INSTRUCTION,
    NoisySolver,
    ToyTask,
    gold_solution,
    nines,
    review,
    solution_part,
    split_of,
    split_review,
    toy_problems,
)
from score_cli.toy_model import (
    DEFAULT_DATA,
    RECORD_FILE,
    VERIFY_INSTRUCTION,
    ToyData,
    ToyTraining,
    build_char_tokenizer,
    conversation_ids,
    make_test_model,
    toy_conversations,
    train_toy_model,
    verdict,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two threads on a shared CPU can be 30 times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory):
    """The unit-test toy model (trained for a few seconds), saved like a hub model."""
    return make_test_model(tmp_path_factory.mktemp("toy-test-model"), seed=0)


def test_problems_are_deterministic_under_a_seed():
    a, b = toy_problems("train", seed=3, n=300), toy_problems("train", seed=3, n=300)
    assert [vars(p) for p in a] == [vars(p) for p in b]
    assert [p.question for p in toy_problems("train", seed=4, n=300)] != [p.question for p in a]
    assert [p.question for p in toy_problems("train", seed=3, n=100)] == [p.question for p in a[:100]]
    assert len({p.question for p in a}) == len(a) and len({p.id for p in a}) == len(a)


def test_train_and_test_are_disjoint():
    train = {p.question for seed in (0, 1) for p in toy_problems("train", seed=seed)}
    test = {p.question for seed in (0, 1) for p in toy_problems("test", seed=seed)}
    assert len(test) >= 900 and not train & test
    # Disjoint by construction: the split is a function of the question, for every seed.
    assert all(split_of(p.meta["a"], p.meta["op"], p.meta["b"]) == "test"
               for p in toy_problems("test", seed=7))
    # The base model's training conversations come from the train split only.
    assert not {r["question"] for r in toy_conversations(3000, seed=5)} & test
    with pytest.raises(ValueError):
        toy_problems("validation")


def test_gold_solutions_are_right_and_multi_step():
    for p in toy_problems("test") + toy_problems("train", n=2000):
        sol = gold_solution(p)
        a, op, b = p.meta["a"], p.meta["op"], p.meta["b"]
        assert p.question == f"{a}{op}{b}=?"
        assert final_answer(sol) == p.answer == str(a + b if op == "+" else a - b)
        assert sol.count("\n") >= 2  # at least two column steps before the final answer


def test_gold_solutions_grade_correct_under_the_math_reward():
    pytest.importorskip("score_cli.math_grader")
    task = ToyTask()
    problems = toy_problems("test", n=300)
    assert all(g.correct for g in task.grade(problems, [gold_solution(p) for p in problems]))
    wrong = [gold_solution(p).replace(f"${p.answer}$", f"${int(p.answer) + 1}$") for p in problems]
    assert not any(g.correct for g in task.grade(problems, wrong))


def test_question_and_solution_round_trip_through_the_tokenizer():
    tok, task = build_char_tokenizer(), ToyTask()
    for p in toy_problems("test", n=50):
        for text in (p.question, gold_solution(p), task.instruction):
            assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    row = toy_conversations(50, seed=1)
    row = next(r for r in row if r["y2"] is not None)
    ids, labels = conversation_ids(tok, row)
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["y1"]},
         {"role": "user", "content": task.instruction}, {"role": "assistant", "content": row["y2"]}],
        tokenize=True, return_dict=False,
    )
    assert ids == list(rendered)
    trained = tok.decode([t for t in labels if t != -100])
    assert trained == f"{row['y1']}{tok.eos_token}{row['y2']}{tok.eos_token}"


def test_noisy_solver_mistakes_are_local_and_consistent():
    rng = random.Random(0)
    p = next(p for p in toy_problems("test", n=200) if p.meta["op"] == "+" and len(p.answer) >= 3)
    a, op, b = p.meta["a"], p.meta["op"], p.meta["b"]
    sols = [NoisySolver(drop=0.5, slip=0.2).solve(a, op, b, rng) for _ in range(300)]
    assert any(final_answer(s) != p.answer for s in sols) and any(final_answer(s) == p.answer for s in sols)
    for s in sols:  # the final answer is the last line's running answer, mistakes included
        assert final_answer(s) == str(int(s.splitlines()[-2].split()[-1]))
    with pytest.raises(ValueError):
        NoisySolver(drop=0.1).solve(a, op, b)


def test_slips_to_any_digit_keep_the_carry_and_spread_over_the_wrong_digits():
    rng = random.Random(0)
    near, anywhere = NoisySolver(slip=1.0), NoisySolver(slip=1.0, slip_to="any")
    # 482+397: the first column is 2+7=9; a neighbour slip writes 8 or 10, an "any" slip 0-8 with no carry
    assert {near.solve(482, "+", 397, rng).splitlines()[0].split()[0] for _ in range(50)} == {"2+7=8", "2+7=10"}
    firsts = [anywhere.solve(482, "+", 397, rng).splitlines()[0] for _ in range(400)]
    assert {f.split()[0] for f in firsts} == {f"2+7={d}" for d in range(9)}
    # (so no carry reaches the next column) and 8+9=17 slips to 1x, never to 17; 13-8=5 to another digit
    seconds = {anywhere.solve(482, "+", 397, rng).splitlines()[1].split()[0] for _ in range(400)}
    assert seconds == {f"8+9=1{d}" for d in range(10) if d != 7}
    borrows = {anywhere.solve(903, "-", 258, rng).splitlines()[0].split()[0] for _ in range(400)}
    assert borrows == {f"13-8={d}" for d in range(10) if d != 5}
    with pytest.raises(ValueError, match="slip_to"):
        NoisySolver(slip_to="far").solve(1, "+", 2)


def test_place_value_method_reaches_the_same_answer_by_other_lines():
    gold = NoisySolver(method="places")
    assert gold.solve(482, "+", 397).splitlines() == ["482+300=782", "782+90=872", "872+7=879",
                                                      "The final answer is $879$."]
    assert gold.solve(482, "-", 397).splitlines()[:3] == ["482-300=182", "182-90=92", "92-7=85"]
    assert gold.solve(95, "+", 60).splitlines() == ["95+60=155", "The final answer is $155$."]
    for p in toy_problems("test", n=300):
        m = p.meta
        assert final_answer(gold.solve(m["a"], m["op"], m["b"])) == p.answer
    # a forgotten carry drops exactly one unit of the next place; a slip moves the step's place by one
    assert NoisySolver(drop=1.0, method="places").solve(482, "+", 397, random.Random(0)).splitlines()[1] == \
        "782+90=772"
    slipped = NoisySolver(slip=1.0, method="places").solve(482, "+", 397, random.Random(0)).splitlines()[0]
    assert slipped in ("482+300=882", "482+300=682")
    with pytest.raises(ValueError):
        NoisySolver(method="abacus").solve(1, "+", 2)


def test_verdict_names_the_first_wrong_line():
    gold = NoisySolver().solve(482, "+", 397)
    assert verdict(gold, gold) == "yes"
    lines = gold.splitlines()
    assert verdict("\n".join([lines[0], "8+9=16 69", *lines[2:]]), gold) == "no: line 2"
    assert verdict("\n".join(lines[:2]), gold) == "no: line 3"  # cut short


def test_review_checks_each_column_against_the_lines_above_it():
    """Each column step is shown beside the step worked again from the carry the line above it wrote,
    their last digits are subtracted, and the line is "ok" when that is 0: a slip and a dropped
    carry are "no" where they happen, and the lines that then follow the written numbers are "ok"
    again; the attempt after the check is what is compared for copies."""
    gold = NoisySolver().solve(482, "+", 397)
    assert review(gold, 482, "+", 397) == (
        "Check:\n2+7=9 2+7=9 9-9=0 ok\n8+9=17 8+9=17 7-7=0 ok\n4+3+1=8 4+3+1=8 8-8=0 ok\nSolution:")
    slipped = "2+7=9 9\n8+9=16 69\n4+3+1=8 869\nThe final answer is $869$."  # 16 written for 17: carry kept
    assert review(slipped, 482, "+", 397).splitlines()[1:4] == [
        "2+7=9 2+7=9 9-9=0 ok", "8+9=16 8+9=17 7-6=1 no", "4+3+1=8 4+3+1=8 8-8=0 ok"]
    dropped = "2+7=9 9\n8+9=17 79\n4+3=7 779\nThe final answer is $779$."  # the carry into the hundreds dropped
    assert review(dropped, 482, "+", 397).splitlines()[1:4] == [
        "2+7=9 2+7=9 9-9=0 ok", "8+9=17 8+9=17 7-7=0 ok", "4+3=7 4+3+1=8 8-7=1 no"]
    borrow = NoisySolver().solve(903, "-", 258)  # 13-8=5, 10-5-1=4, 9-2-1=6
    assert " no" not in review(borrow, 903, "-", 258)
    no_borrow = borrow.replace("9-2-1=6 645", "9-2=7 745").replace("$645$", "$745$")
    assert review(no_borrow, 903, "-", 258).splitlines()[-2] == "9-2=7 9-2-1=6 7-6=1 no"
    garbled = "2+7=9 9\n8+9=17\n4+3+1=8 879\nThe final answer is $879$."  # a line without its digits
    assert review(garbled, 482, "+", 397).splitlines()[-2] == "4+3+1=8 ? no"
    attempt = f"{review(slipped, 482, '+', 397)}\n{gold}"
    assert split_review(attempt) == (review(slipped, 482, "+", 397), gold) and solution_part(attempt) == gold
    assert split_review(gold) == ("", gold) and solution_part("Check:\n2+7=9 ok") == ""
    # the edit metrics compare what follows the check: a checked copy is a zero edit
    from score_cli.evaluate import metrics_from_rows

    rows = [{"chains": [[{"text": gold, "answer": "879", "correct": True},
                         {"text": f"{review(gold, 482, '+', 397)}\n{gold}", "answer": "879", "correct": True}]]}]
    assert metrics_from_rows(rows, compared=ToyTask().compared_part)["zero_edit(t1,t2)"]["value"] == 1.0
    assert metrics_from_rows(rows)["zero_edit(t1,t2)"]["value"] == 0.0


def test_nines_checks_the_stated_answer_by_digit_sums():
    """Casting out nines: each number's digit sum under 9, the operation on the residues, the
    stated answer's residue compared by a subtraction; a right answer always passes, the solver's
    slips (a power of ten off) never do, and an answer off by a multiple of 9 slips through."""
    gold = NoisySolver().solve(482, "+", 397)  # 879
    assert nines(gold, 482, "+", 397) == (
        "Check:\n4+8+2=14 14-9=5\n3+9+7=19 19-9=10 10-9=1\n5+1=6\n8+7+9=24 24-9=15 15-9=6\n6-6=0 ok\nSolution:")
    slipped = "2+7=9 9\n8+9=16 69\n4+3+1=8 869\nThe final answer is $869$."
    assert nines(slipped, 482, "+", 397).splitlines()[-3:-1] == ["8+6+9=23 23-9=14 14-9=5", "6-5=1 no"]
    borrow = NoisySolver().solve(903, "-", 258)  # 645: 903 -> 3, 258 -> 6, 3+9-6=6, 645 -> 6
    assert nines(borrow, 903, "-", 258).splitlines()[3:6] == ["3+9-6=6", "6+4+5=15 15-9=6", "6-6=0 ok"]
    rng = random.Random(0)
    for _ in range(300):
        a, b, op = rng.randrange(1000), rng.randrange(1000), rng.choice("+-")
        a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
        right = a + b if op == "+" else a - b
        for claimed in (right, right + 10 ** rng.randrange(3), right + 9 * rng.randrange(1, 5)):
            check = nines(f"The final answer is ${claimed}$.", a, op, b)
            assert check.endswith(" ok\nSolution:") == ((claimed - right) % 9 == 0)
    assert nines("8+9=17", 482, "+", 397) == "Check:\nno\nSolution:"  # no stated answer
    with_check = f"{nines(slipped, 482, '+', 397)}\n{gold}"
    assert split_review(with_check) == (nines(slipped, 482, "+", 397), gold)
    rows = toy_conversations(200, seed=3, data=ToyData(review=True, review_kind="nines", two_turn=1.0))
    plain = toy_conversations(200, seed=3, data=ToyData(two_turn=1.0))
    for r, p in zip(rows, plain, strict=True):  # the same draws, each second attempt opened by its check
        a, op, b = (int(x) if x.isdigit() else x for x in re.fullmatch(r"(\d+)([+-])(\d+)=\?", r["question"]).groups())
        assert r["y2"] == f"{nines(p['y1'], a, op, b)}\n{p['y2']}"
    with pytest.raises(ValueError, match="review_kind"):
        ToyData(review=True, review_kind="sums")


def test_reviewed_second_attempts_render_like_the_rollout():
    """With review every later attempt opens with the true check of the attempt before it; what
    follows is drawn exactly as without it (the same rng draws: the same solutions)."""
    plain = toy_conversations(400, seed=6, data=ToyData(max_attempts=3))
    reviewed = toy_conversations(400, seed=6, data=ToyData(max_attempts=3, review=True))
    tok = build_char_tokenizer()
    for p, r in zip(plain, reviewed, strict=True):
        assert r["y1"] == p["y1"] and (r["y2"] is None) == (p["y2"] is None)
        if r["y2"] is None:
            continue
        a, op, b = (int(x) if x.isdigit() else x for x in re.fullmatch(r"(\d+)([+-])(\d+)=\?", r["question"]).groups())
        attempts, reviewed_attempts = [p["y1"], p["y2"], *p["more"]], [r["y2"], *r["more"]]
        for before, plain_next, got in zip(attempts[:-1], attempts[1:], reviewed_attempts, strict=True):
            assert got == f"{review(before, a, op, b)}\n{plain_next}"
    row = next(r for r in reviewed if r["y2"] is not None)
    ids, labels = conversation_ids(tok, row)
    said = [row["y1"], row["y2"], *row["more"]]
    assert tok.decode([t for t in labels if t != -100]) == "".join(f"{y}</s>" for y in said)
    assert any(" no" in r["y2"] for r in reviewed if r["y2"]) and any(" no" not in r["y2"] for r in reviewed if r["y2"])


def test_short_copy_restates_only_the_final_answer_and_draws_like_a_full_copy():
    """A short copy is y1's last line; which second attempts are copies, and every new try, are the
    same draws as with full copies (the option changes what a copy looks like, not when it is made)."""
    full = toy_conversations(300, seed=4, data=ToyData(review=True, retry_marker="Redo:"))
    short = toy_conversations(300, seed=4, data=ToyData(review=True, retry_marker="Redo:", short_copy=True))
    copies = 0
    for f, s in zip(full, short, strict=True):
        assert (s["y1"], s["copied"]) == (f["y1"], f["copied"])
        if s["copied"]:
            copies += 1
            check, _, kept = s["y2"].partition("Solution:\n")
            assert kept == f["y1"].splitlines()[-1] == "The final answer is $" + final_answer(f["y1"]) + "$."
            assert f["y2"] == f"{check}Solution:\n{f['y1']}"
        else:
            assert s["y2"] == f["y2"]
    assert 50 < copies < 100
    with pytest.raises(ValueError, match="two attempts only"):
        ToyData(short_copy=True, max_attempts=3)


def test_the_default_base_data_keeps_with_a_one_line_restatement_or_retries_from_scratch():
    """DEFAULT_DATA (the toy world's base): 70% of the conversations have a second attempt; a quarter
    of those restate y1's final-answer line (15% of them with a digit wrong), the rest are fresh
    tries that keep none of y1's lines, whether y1 was right or not; `toy_conversations` draws it when given no data."""
    rows = toy_conversations(2000, seed=3)
    assert rows == toy_conversations(2000, seed=3, data=DEFAULT_DATA) != toy_conversations(2000, seed=3, data=ToyData())
    two = [r for r in rows if r["y2"] is not None]
    assert 0.66 < len(two) / len(rows) < 0.74
    keeps = [r for r in two if r["copied"]]
    assert 0.21 < len(keeps) / len(two) < 0.29
    assert all(r["y2"] == r["y1"].splitlines()[-1] for r in keeps if not r.get("slipped"))
    assert 0.10 < sum(bool(r.get("slipped")) for r in keeps) / len(keeps) < 0.20  # the lossy keep (copy_slip 0.15)
    assert all("kept" not in r and len(r["y2"].splitlines()) > 1 for r in two if not r["copied"])
    for y1_right in (True, False):  # the keep rate does not look at y1
        group = [r for r in two if (final_answer(r["y1"]) == r["answer"]) is y1_right]
        assert 0.19 < sum(r["copied"] for r in group) / len(group) < 0.31


def test_a_lossy_keep_garbles_one_digit_of_a_share_of_the_copies_whatever_y1_was():
    """`copy_slip`: that share of the short copies states y1's answer with exactly one digit changed
    (no leading zero), as often after a right y1 as after a wrong one; every other draw (y1, which
    attempts are copies, every retry) is the data's without the slip."""
    plain = toy_conversations(3000, seed=6, data=toy_model.toy_data({"copy_slip": 0.0}))
    lossy = toy_conversations(3000, seed=6, data=toy_model.toy_data({"copy_slip": 0.3}))
    slipped = {True: [], False: []}  # y1 right -> [slipped] over the copies
    for p, s in zip(plain, lossy, strict=True):
        assert (s["y1"], s["copied"]) == (p["y1"], p["copied"])
        if not s["copied"]:
            assert s["y2"] == p["y2"] and "slipped" not in s
            continue
        slipped[final_answer(s["y1"]) == s["answer"]].append(bool(s.get("slipped")))
        if s.get("slipped"):
            was, now = final_answer(p["y2"]), final_answer(s["y2"])
            assert len(was) == len(now) and sum(a != b for a, b in zip(was, now, strict=True)) == 1
            assert not now.startswith("0") or len(now) == 1
            assert s["y2"] == f"The final answer is ${now}$."
        else:
            assert s["y2"] == p["y2"]
    for group in slipped.values():
        assert len(group) > 150 and 0.24 < sum(group) / len(group) < 0.36
    with pytest.raises(ValueError, match="needs short_copy"):
        ToyData(copy_slip=0.2)
    with pytest.raises(toy_model.ScoreError, match="copy_slip is a probability"):
        toy_model.toy_data({"copy_slip": 1.5})


def test_a_recheck_compares_the_new_answer_with_y1s_and_works_the_problem_once_more_when_they_differ():
    """`recheck`: that share of the new tries goes on with a digit-by-digit comparison of the two
    stated answers, ends at "same", and after "differ" adds a third solution whose answer is the
    attempt's; which tries are rechecked never depends on y1 being right, and the main stream's
    draws (y1, copies, the first new try) are the data's without the option."""
    assert toy_model.compare_answers("730", "720") == "Compare:\n730 720\n0-0=0\n3-2=1\n7-7=0\ndiffer"
    assert toy_model.compare_answers("54", "154") == "Compare:\n54 154\n4-4=0\n5-5=0\n10-1=9\ndiffer"
    assert toy_model.compare_answers("7", "7") == "Compare:\n7 7\n7-7=0\nsame"
    plain = toy_conversations(3000, seed=4, data=toy_model.toy_data({"copy_slip": 0.0}))
    checked = toy_conversations(3000, seed=4, data=toy_model.toy_data({"copy_slip": 0.0, "recheck": 0.5}))
    share = {True: [], False: []}  # y1 right -> [rechecked] over the new tries
    verdicts = set()
    for p, c in zip(plain, checked, strict=True):
        assert (c["y1"], c["copied"]) == (p["y1"], p["copied"])
        if not c["copied"] and c["y2"] is not None:
            share[final_answer(c["y1"]) == c["answer"]].append("rechecked" in c)
        if "rechecked" not in c:
            assert c["y2"] == p["y2"]
            continue
        verdicts.add(c["rechecked"])
        retry, rest = c["y2"].split("\nCompare:\n", 1)
        assert retry == p["y2"]
        new, old = final_answer(retry), final_answer(c["y1"])
        pair, *lines = rest.splitlines()
        assert pair == f"{new} {old}"
        width = max(len(new), len(old))
        assert len(lines) >= width + 1 and lines[width] == ("same" if new == old else "differ")
        assert all(line.endswith("=0") == (a == b) for line, a, b in
                   zip(lines[:width], new.zfill(width)[::-1], old.zfill(width)[::-1], strict=True))
        if new == old:
            assert len(lines) == width + 1 and final_answer(c["y2"]) == new
        else:
            assert lines[-1].startswith("The final answer is $") and len(lines) > width + 2
    assert verdicts == {"same", "differ"}
    for group in share.values():
        assert len(group) > 300 and 0.43 < sum(group) / len(group) < 0.57
    with pytest.raises(toy_model.ScoreError, match="recheck is a probability"):
        toy_model.toy_data({"recheck": -0.1})
    with pytest.raises(ValueError, match="recheck works with two attempts"):
        ToyData(recheck=0.3, review=True)


def test_a_base_built_without_a_recipe_records_the_default_data_and_training(tmp_path, monkeypatch):
    small = ToyTraining(hidden=16, layers=1, heads=2, steps=2, batch_size=4, warmup=1, clean_steps=1, tail_steps=1)
    monkeypatch.setattr(toy_model, "DEFAULT_TRAINING", small)
    record = json.loads((train_toy_model(tmp_path / "m", seed=2, log_every=0) / RECORD_FILE).read_text())
    assert record["data"]["short_copy"] is True and record["data"]["second"]["slip"] == 0.13
    assert record["data"]["copy"] == 0.25 and record["data"]["two_turn"] == 0.7 and not record["data"]["keep_prefix"]
    assert record["data"]["copy_slip"] == 0.15
    assert record["training"]["tail_steps"] == 1 and record["training"]["steps"] == 2
    assert toy_model.ToyTraining().tail_steps == 0 and DEFAULT_DATA != ToyData()  # e18's fields stay as they were


def test_noisy_first_attempts_are_context_not_labels_and_leave_the_other_conversations_alone():
    """noisy_first: a share of the two-attempt conversations gets a y1 from the noisy solver that the
    model reads but is not trained to write; y2 is drawn as always (copies too); the default draws
    the same conversations as before the option existed."""
    assert toy_conversations(200, seed=5, data=ToyData()) == toy_conversations(200, seed=5,
                                                                              data=ToyData(noisy_first=0.0))
    rows = toy_conversations(600, seed=5, data=ToyData(noisy_first=0.5, short_copy=True, keep_prefix=False))
    noisy = [r for r in rows if r.get("y1_trained") is False]
    two_turn = [r for r in rows if r["y2"] is not None]
    assert all(r["y2"] is not None for r in noisy) and 0.35 < len(noisy) / len(two_turn) < 0.65
    wrong = sum(final_answer(r["y1"]) != r["answer"] for r in noisy) / len(noisy)
    assert wrong > 0.7  # the noisy solver's y1 is mostly wrong
    assert 0.3 < sum(r["copied"] for r in noisy) / len(noisy) < 0.7  # keeps drawn as always
    tok = build_char_tokenizer()
    row = noisy[0]
    ids, labels = conversation_ids(tok, row)
    assert tok.decode([t for t in labels if t != -100]) == f"{row['y2']}</s>"  # y1 read, not learnt
    assert row["y1"] in tok.decode(ids)
    trained = next(r for r in two_turn if r.get("y1_trained", True))
    said = tok.decode([t for t in conversation_ids(tok, trained)[1] if t != -100])
    assert said == f"{trained['y1']}</s>{trained['y2']}</s>"


def test_conversations_with_more_attempts():
    """max_attempts 4: two-attempt conversations get 2 to 4 attempts, each made from the one before
    (a copy of it, or a new try keeping a prefix of its lines), rendered like the rollout renders
    attempt k+1; the default draws no further attempt."""
    assert all("more" not in r for r in toy_conversations(300, seed=4))
    rows = [r for r in toy_conversations(900, seed=4, data=ToyData(max_attempts=4, two_turn=1.0))]
    counts = {n: sum(2 + len(r["more"]) == n for r in rows) for n in (2, 3, 4)}
    assert sum(counts.values()) == len(rows) and min(counts.values()) > 200, counts
    tok = build_char_tokenizer()
    # with a slip-free second solver and no copies, each attempt is the one before's first k lines
    # (for some k), then the right columns worked from what those lines wrote
    exact = ToyData(max_attempts=4, two_turn=1.0, copy=0.0, second=NoisySolver())
    row = next(r for r in toy_conversations(200, seed=5, data=exact) if len(r["more"]) == 2)
    attempts = [row["y1"], row["y2"], *row["more"]]
    a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)=\?", row["question"]).groups()
    for prev, nxt in zip(attempts, attempts[1:], strict=False):
        lines = prev.splitlines()[:-1]
        assert any(nxt == NoisySolver().resume(int(a), op, int(b), lines[:k]) for k in range(len(lines)))
    ids, labels = conversation_ids(tok, row)
    messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": attempts[0]}]
    for y in attempts[1:]:
        messages += [{"role": "user", "content": TOY_INSTRUCTION}, {"role": "assistant", "content": y}]
    assert ids == list(tok.apply_chat_template(messages, tokenize=True, return_dict=False))
    assert tok.decode([t for t in labels if t != -100]) == "".join(f"{y}</s>" for y in attempts)


def test_verification_and_marked_retries_in_the_data():
    """Verification conversations end in a verdict, never in a rewrite; a marked retry opens with
    its marker; both render through the chat template exactly like the rollout."""
    data = ToyData(retry_marker="Redo:", verify=0.3, two_turn=1.0)
    rows = toy_conversations(600, seed=2, data=data)
    judged = [r for r in rows if r["verdict"] is not None]
    assert 0.2 < len(judged) / len(rows) < 0.4 and all(r["y2"] is None for r in judged)
    for r in judged:  # "yes" exactly when y1 is the correct worked solution
        a, op, b = re.fullmatch(r"(\d+)([+-])(\d+)=\?", r["question"]).groups()
        right = r["y1"] == NoisySolver().solve(int(a), op, int(b))
        assert (r["verdict"] == "yes") == right and (right or r["verdict"].startswith("no: line "))
    assert {r["verdict"] == "yes" for r in judged} == {True, False}
    retries = [r for r in rows if r["copied"] is False]
    assert retries and all(r["y2"].startswith("Redo:\n") for r in retries)
    tok = build_char_tokenizer()
    ids, labels = conversation_ids(tok, judged[0])
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": judged[0]["question"]}, {"role": "assistant", "content": judged[0]["y1"]},
         {"role": "user", "content": VERIFY_INSTRUCTION}, {"role": "assistant", "content": judged[0]["verdict"]}],
        tokenize=True, return_dict=False,
    )
    assert ids == list(rendered)
    assert tok.decode([t for t in labels if t != -100]) == f"{judged[0]['y1']}</s>{judged[0]['verdict']}</s>"


@pytest.mark.parametrize("data", [ToyData(two_turn=1.0, keep_prefix=False),
                                  ToyData(two_turn=1.0, keep_prefix=False, retry_marker="Redo:", verify=0.2,
                                          second=NoisySolver(drop=0.2, slip=0.05, method="places")),
                                  ToyData(two_turn=1.0, keep_prefix=False, review=True)],
                         ids=["fresh-retry", "marker-verify-places", "reviewed"])
def test_second_attempts_do_not_depend_on_first_attempt_correctness(data):
    """Whether y2 copies y1, and whether a fresh y2 is right, are independent of y1 being right:
    the data shows how to write a second attempt, never which first attempts to fix.

    Checked problem by problem: across problems, two independent tries are both more often right on
    easy problems (no carries) than on hard ones, for any solver, so the pooled rates would differ.
    """
    rng = random.Random(0)
    problems = [p for p in toy_problems("train", n=400) if _carries(gold_solution(p)) >= 2]
    copy_gaps, fresh_gaps = [], []
    for p in problems[:12]:
        rows = [data.conversation(rng, (p.meta["a"], p.meta["op"], p.meta["b"])) for _ in range(800)]
        rows = [r for r in rows if r["verdict"] is None]
        right = [r for r in rows if final_answer(r["y1"]) == r["answer"]]
        wrong = [r for r in rows if final_answer(r["y1"]) != r["answer"]]
        assert min(len(right), len(wrong)) > 100
        assert all(solution_part(r["y2"]) == r["y1"] for r in rows if r["copied"])  # after any check
        copy_gaps.append(_rate(right, lambda r: r["copied"]) - _rate(wrong, lambda r: r["copied"]))
        fresh_right, fresh_wrong = ([r for r in rs if not r["copied"]] for rs in (right, wrong))
        fresh_gaps.append(_rate(fresh_right, _y2_right) - _rate(fresh_wrong, _y2_right))
    # P(copy | y1 right) = P(copy | y1 wrong), P(fresh y2 right | y1 right) = P(fresh y2 right | y1 wrong)
    assert abs(sum(copy_gaps) / len(copy_gaps)) < 0.04, copy_gaps
    assert abs(sum(fresh_gaps) / len(fresh_gaps)) < 0.05, fresh_gaps


def test_resumed_solutions_keep_the_first_lines_and_redo_the_rest():
    """`resume` continues from the carry and digits the kept lines wrote: from gold lines a clean
    solver ends at the gold solution; from a slipped line it follows the slip, as a person would."""
    clean = NoisySolver()
    for a, op, b in [(482, "+", 397), (812, "-", 67), (25, "+", 607), (100, "-", 1), (999, "+", 1)]:
        gold = clean.solve(a, op, b)
        lines = gold.splitlines()[:-1]
        assert all(clean.resume(a, op, b, lines[:k]) == gold for k in range(len(lines) + 1))
    slipped = ["8+4=12 2", "4+8+1=14 42"]  # 348+484 with a slip in the tens (13 written as 14)
    assert clean.resume(348, "+", 484, slipped) == "\n".join([*slipped, "3+4+1=8 842", "The final answer is $842$."])


def test_kept_lines_do_not_depend_on_first_attempt_correctness():
    """With keep_prefix a new try keeps y1's first k lines, k uniform and blind to where y1 went
    wrong: the share of kept lines is the same after a right and after a wrong first attempt."""
    data = ToyData(two_turn=1.0, copy=0.0, keep_prefix=True, first=NoisySolver(drop=0.1, slip=0.15),
                   second=NoisySolver(drop=0.1, slip=0.15))
    rows = toy_conversations(4000, seed=3, data=data)
    three = [r for r in rows if len(r["y1"].splitlines()) == 4]  # three column lines: k in {0, 1, 2}
    right = [r["kept"] for r in three if final_answer(r["y1"]) == r["answer"]]
    wrong = [r["kept"] for r in three if final_answer(r["y1"]) != r["answer"]]
    assert min(len(right), len(wrong)) > 500 and set(right) == set(wrong) == {0, 1, 2}
    assert abs(sum(right) / len(right) - sum(wrong) / len(wrong)) < 0.08
    for r in three:  # the kept lines are y1's, word for word
        assert r["y2"].splitlines()[: r["kept"]] == r["y1"].splitlines()[: r["kept"]]


def _carries(solution: str) -> int:
    """Columns that take a carry or borrow: their line reads "x+y+1=..." or "x-y-1=..."."""
    return sum(line.count("+") + line.count("-") == 2 for line in solution.splitlines())


def _rate(rows: list[dict], pred) -> float:
    return sum(map(pred, rows)) / len(rows)


def _y2_right(row: dict) -> bool:
    return final_answer(row["y2"]) == row["answer"]


def test_training_is_deterministic_under_a_seed(tmp_path):
    small = ToyTraining(hidden=16, layers=1, heads=2, steps=3, batch_size=4, warmup=1)
    a = train_toy_model(tmp_path / "a", seed=1, training=small, log_every=0)
    b = train_toy_model(tmp_path / "b", seed=1, training=small, log_every=0)
    ma, mb = AutoModelForCausalLM.from_pretrained(a), AutoModelForCausalLM.from_pretrained(b)
    for (name, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def _weights(path) -> dict:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_the_tail_trains_on_after_the_schedule_at_its_own_constant_rate(tmp_path):
    small = ToyTraining(hidden=16, layers=1, heads=2, steps=3, batch_size=4, warmup=1, clean_steps=1)
    plain = _weights(train_toy_model(tmp_path / "plain", seed=1, training=small, log_every=0))
    seen: list[int] = []
    still = ToyTraining(**{**small.__dict__, "tail_steps": 2, "tail_lr": 0.0})
    frozen = train_toy_model(tmp_path / "frozen", seed=1, training=still, log_every=0,
                             on_step=lambda step, model: seen.append(step))
    assert seen == [1, 2, 3, 4, 5]  # the tail's steps are numbered after the schedule's
    for name, x in _weights(frozen).items():  # at rate 0 the tail's steps change nothing
        assert torch.equal(x, plain[name]), name
    assert json.loads((frozen / RECORD_FILE).read_text())["training"]["tail_steps"] == 2
    moving = _weights(train_toy_model(tmp_path / "moving", seed=1, log_every=0,
                                      training=ToyTraining(**{**still.__dict__, "tail_lr": 1e-2})))
    assert any(not torch.equal(x, plain[name]) for name, x in moving.items())


def test_test_model_reloads_like_a_hub_model_and_generates(toy_model_dir):
    record = json.loads((toy_model_dir / RECORD_FILE).read_text())
    assert record["seed"] == 0 and record["parameters"] > 0
    # what the model's numbers depend on beyond the seed: the machine's CPU and kernels, the versions
    assert record["cpu"] and record["cpu_kernels"] and record["packages"]["torch"] == torch.__version__
    tok = AutoTokenizer.from_pretrained(toy_model_dir)
    model = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    task, problems = ToyTask(), toy_problems("test", n=32)
    first = [first_attempt_ids(tok, task, p) for p in problems]
    gen = HFGenerator(model, tok, Decoding(max_new_tokens=80, temperature=1.0, batch_size=32))
    torch.manual_seed(0)
    rollouts = run_attempts(gen, first, turns=2, instruction=instruction_ids(tok, task.instruction),
                            eos_id=tok.eos_token_id)
    texts = [tok.decode(r.outputs[k], skip_special_tokens=True) for r in rollouts for k in range(2)]
    assert all(r.outputs[0] and r.outputs[1] for r in rollouts)
    assert any("The final answer is $" in t for t in texts)


def test_toy_init_builds_the_default_base_and_the_previous_recipe_for_longer_conversations(tmp_path, monkeypatch):
    """`score toy init` trains the toy world's base (DEFAULT_DATA and DEFAULT_TRAINING, by passing no
    recipe); --max-attempts above 2 asks for e18 with longer conversations, as the default's one-line
    keep has no third attempt."""
    from typer.testing import CliRunner

    from score_cli.cli import app

    calls: list[dict] = []
    monkeypatch.setattr(toy_model, "train_toy_model", lambda out, **kw: calls.append(kw) or out)
    for args in ([], ["--max-attempts", "4"]):
        r = CliRunner().invoke(app, ["toy", "init", "--out", str(tmp_path / "b"), "--seed", "3", *args])
        assert r.exit_code == 0, r.output
    assert calls[0] == {"seed": 3}
    assert calls[1] == {"seed": 3, "data": ToyData(max_attempts=4), "training": ToyTraining()}
