"""Choosing a toy base before RL (score_cli/toy_selection.py): the selection problems, the retry's
quality, the band, and replacing a seed whose base lands outside it."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from score_cli.errors import ScoreError
from score_cli.tasks.toy_task import GOLD
from score_cli.toy_selection import BaseBand, choose_bases, probe_base, retry_quality, selection_problems

INSIDE = {"t1": 50.0, "delta": -2.0, "retry-delta": -2.5, "f": 47.0}


def attempt(text: str, gold: str) -> dict:
    answer = text.splitlines()[-1].split("$")[1]
    return {"text": text, "answer": answer, "correct": answer == gold}


def test_selection_problems_are_training_problems_outside_every_rl_seeds_pool_and_the_test_split():
    from score_cli.tasks.toy_task import toy_problems

    chosen = selection_problems(200)
    assert len({p.question for p in chosen}) == 200
    pools = {p.question for s in range(10) for p in toy_problems("train", seed=s)}
    assert not pools & {p.question for p in chosen}
    assert not {p.question for p in toy_problems("test")} & {p.question for p in chosen}
    assert [p.question for p in selection_problems(50)] == [p.question for p in chosen[:50]]


def test_retry_quality_compares_a_retry_with_another_first_attempt_at_the_same_problem(tmp_path, jsonl):
    right = GOLD.solve(482, "+", 397)
    wrong = "2+7=9 9\n8+9=16 69\n4+3+1=8 869\nThe final answer is $869$."
    keep = "The final answer is $869$."
    hard = [(wrong, keep), (wrong, right), (wrong, wrong.replace("869", "868")), (right, right)]
    easy = [(right, keep.replace("869", "879")), (right, right), (right, wrong), (right, right)]
    rows = [{"question": "482+397=?", "chains": [[attempt(a, "879"), attempt(b, "879")] for a, b in chains]}
            for chains in (hard, easy)]
    samples = jsonl(tmp_path / "samples.jsonl", rows)
    # retries (not one-line keeps): after a wrong y1, 1 right of 2; after a right y1, 3 of 4.
    # fresh|W: each of the 3 wrong first attempts sees 1 right among 3 others; fresh|R: the hard
    # problem's right one sees 0 of 3, each easy one 3 of 3.
    assert retry_quality(samples) == pytest.approx({"retry|R": 3 / 4, "retry|W": 1 / 2,
                                                    "fresh|R": 12 / 15, "fresh|W": 1 / 3, "t1": 5 / 8,
                                                    "retry-delta": 5 / 8 * (3 / 4 - 1) + 3 / 8 * 1 / 2})


@pytest.mark.parametrize(("change", "why"), [
    ({}, []),
    ({"delta": 0.4}, ["Delta +0.4 outside -5..-1"]),
    ({"delta": -6.7, "retry-delta": -10.2}, ["Delta -6.7 outside -5..-1", "retry-delta -10.2 below -5"]),
    ({"t1": 75.0, "f": 74.0}, ["t1 75.0 outside 30..70"]),
    ({"f": 38.0}, ["fix rate 38.0 more than 8 from t1 50.0"]),
    ({"f": 58.5}, ["fix rate 58.5 more than 8 from t1 50.0"]),
])
def test_band_names_every_criterion_a_base_misses(change, why):
    assert BaseBand().misses(INSIDE | change) == why


def test_choose_bases_replaces_a_rejected_seed_by_the_next_unused_one_and_records_every_try(tmp_path, monkeypatch):
    probes = {0: INSIDE | {"delta": 0.4}, 1: INSIDE, 2: INSIDE | {"retry-delta": -7.0}, 3: INSIDE}
    monkeypatch.setattr("score_cli.toy_selection.probe_base",
                        lambda base, out, problems: probes[int(out.parent.name.removeprefix("seed"))])
    built: list[int] = []
    said: list[str] = []
    kept, record = choose_bases(tmp_path, (0, 1), BaseBand(), lambda d, s: built.append(s) or d, said.append)
    # seed 0 is out; the next unused seed is 2 (past the requested 0 and 1), also out; then 3
    assert built == [0, 2, 3, 1]
    assert kept == {3: tmp_path / "seed3" / "base", 1: tmp_path / "seed1" / "base"}
    on_disk = json.loads((tmp_path / "base_selection.json").read_text())
    assert on_disk == json.loads(json.dumps(record)) and on_disk["kept"] == [3, 1]
    assert [(t["seed"], t["for"], t["kept"]) for t in on_disk["tries"]] == [(0, 0, False), (2, 0, False),
                                                                             (3, 0, True), (1, 1, True)]
    assert on_disk["tries"][1]["why"] == ["retry-delta -7.0 below -5"] and on_disk["band"]["problems"] == 2000
    assert said[:2] == ["base seed 0: probing on 2000 selection problems",
                        "base seed 0 rejected (Delta +0.4 outside -5..-1): t1 50.0, Delta +0.4, f 47.0, "
                        "retry-delta -2.5"]


def test_choose_bases_gives_up_with_one_line_saying_what_to_change(tmp_path, monkeypatch):
    monkeypatch.setattr("score_cli.toy_selection.probe_base", lambda base, out, problems: INSIDE | {"delta": 1.0})
    with pytest.raises(ScoreError, match="no base in the band for seed 5 after 2 tries .*widen the band"):
        choose_bases(tmp_path, (5,), BaseBand(tries_per_seed=2), lambda d, s: d)
    assert [t["seed"] for t in json.loads((tmp_path / "base_selection.json").read_text())["tries"]] == [5, 6]


def test_probe_base_measures_a_model_on_selection_problems_and_reuses_its_result(tmp_path, tiny_model_dir):
    row = probe_base(tiny_model_dir, tmp_path / "probe", problems=3)
    assert set(row) == {"t1", "t2", "delta", "i->c", "c->i", "f", "changed", "retry-delta"}
    assert row["delta"] == pytest.approx(row["t2"] - row["t1"], abs=0.02)
    asked = [json.loads(line)["question"] for line in (tmp_path / "probe" / "select.jsonl").read_text().splitlines()]
    assert asked == [p.question for p in selection_problems(3)]
    (tmp_path / "probe" / "probe.json").write_text(json.dumps(row | {"t1": 12.5}))
    assert probe_base(tiny_model_dir, tmp_path / "probe", problems=3)["t1"] == 12.5  # reused, not re-run


def test_ensure_base_refuses_a_base_built_from_another_seed_or_data(tmp_path):
    from score_cli.demo import ensure_base
    from score_cli.toy_model import DEFAULT_DATA, RECORD_FILE, toy_data

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / RECORD_FILE).write_text(json.dumps({"seed": 1, "data": asdict(DEFAULT_DATA)}))
    assert ensure_base(tmp_path, 1) == tmp_path / "base"
    with pytest.raises(ScoreError, match="built with seed 1, not the one asked for: remove it"):
        ensure_base(tmp_path, 2)
    with pytest.raises(ScoreError, match=r"built with other data \(second\)"):
        ensure_base(tmp_path, 1, data=toy_data({"second": {"slip": 0.15}}))
    # a base recorded before a field existed (here recheck) matches when the field is at its default
    older = {k: v for k, v in asdict(DEFAULT_DATA).items() if k != "recheck"}
    (tmp_path / "base" / RECORD_FILE).write_text(json.dumps({"seed": 1, "data": older}))
    assert ensure_base(tmp_path, 1) == tmp_path / "base"
    with pytest.raises(ScoreError, match=r"built with other data \(recheck\)"):
        ensure_base(tmp_path, 1, data=toy_data({"recheck": 0.3}))


def test_toy_data_overrides_the_default_and_names_what_it_cannot_use():
    from score_cli.toy_model import DEFAULT_DATA, toy_data

    data = toy_data({"second": {"slip": 0.15}, "copy": 0.3})
    assert data == replace(DEFAULT_DATA, second=replace(DEFAULT_DATA.second, slip=0.15), copy=0.3)
    with pytest.raises(ScoreError, match="unknown toy data field.*secnd: choose from copy"):
        toy_data({"secnd": {}})
    with pytest.raises(ScoreError, match="second must be an object"):
        toy_data({"second": 0.15})
    with pytest.raises(ScoreError, match="bad toy data .*slp"):
        toy_data({"second": {"slp": 0.15}})
