"""Every metric checked against values computed by hand from known transitions."""

from __future__ import annotations

import math

import pytest

from score_cli.metrics import compute_metrics, edit_ratio, majority, wilson

# Ten problems, one chain each: (correct t1, correct t2, answer t1, answer t2, text t1, text t2)
CASES = [
    (1, 1, "5", "5", "a b c", "a b c"),  # c->c, no edit
    (1, 1, "5", "5", "a b c", "a b c"),
    (1, 1, "5", "5", "a b c", "a b c"),
    (1, 1, "5", "5", "a b c d", "a b c e"),  # c->c, 1 of 4 words edited
    (1, 0, "5", "6", "a b", "a c"),  # c->i, 1 of 2
    (0, 1, "4", "5", "x", "y"),  # i->c, 1 of 1
    (0, 1, None, "5", "x y", "x y z w"),  # i->c, 2 of 4
    (0, 0, "7", "7", "q", "q"),  # i->i, same wrong answer
    (0, 0, "7", "8", "q r", "q s"),  # i->i, answer changed, 1 of 2
    (0, 0, None, None, "", ""),  # i->i, no answer either time
]


def metrics_of(cases):
    return compute_metrics(
        [[[c[0], c[1]]] for c in cases], [[[c[2], c[3]]] for c in cases], [[[c[4], c[5]]] for c in cases]
    )


def test_hand_computed_transition_metrics():
    m = metrics_of(CASES)
    v = {k: x["value"] for k, x in m.items()}
    assert v["accuracy@t1"] == pytest.approx(5 / 10)
    assert v["accuracy@t2"] == pytest.approx(6 / 10)
    assert v["delta(t1,t2)"] == pytest.approx(0.1)
    assert v["i->c(t1,t2)"] == pytest.approx(2 / 10)  # fractions of ALL problems, as in the paper
    assert v["c->i(t1,t2)"] == pytest.approx(1 / 10)
    assert v["fixed|wrong(t1,t2)"] == pytest.approx(2 / 5)  # conditional forms
    assert v["broken|right(t1,t2)"] == pytest.approx(1 / 5)
    assert v["answer_changed(t1,t2)"] == pytest.approx(4 / 10)
    assert v["fixed|changed(t1,t2)"] == pytest.approx(2 / 3)  # of 5 wrong t1, 3 change answer, 2 of them right
    assert v["changed|wrong(t1,t2)"] == pytest.approx(3 / 5)  # the same 3 of the 5 wrong first attempts
    assert v["edit_ratio(t1,t2)"] == pytest.approx((1 / 4 + 1 / 2 + 1 + 2 / 4 + 1 / 2) / 10)
    assert v["zero_edit(t1,t2)"] == pytest.approx(5 / 10)


def test_wilson_interval_known_values():
    e = wilson(5, 10)
    assert (e.low, e.high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    e = wilson(0, 20)
    assert e.value == 0 and e.low == 0 and e.high == pytest.approx(0.1611, abs=1e-4)
    m = metrics_of(CASES)
    assert m["accuracy@t1"]["low"] == pytest.approx(0.2366, abs=1e-4)


def test_bootstrap_interval_brackets_the_delta_and_collapses_when_all_equal():
    m = metrics_of(CASES)
    d = m["delta(t1,t2)"]
    assert -1 <= d["low"] <= d["value"] <= d["high"] <= 1 and d["low"] < d["high"]
    same = metrics_of([CASES[5]] * 8)  # every problem goes i->c
    assert same["delta(t1,t2)"] == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_collapse_shows_as_zero_edits():
    m = metrics_of([CASES[0]] * 6)
    assert m["edit_ratio(t1,t2)"]["value"] == 0 and m["zero_edit(t1,t2)"]["value"] == 1
    assert m["answer_changed(t1,t2)"]["value"] == 0


def test_edit_ratio_is_word_level_levenshtein():
    assert edit_ratio("a b c", "a b c") == 0
    assert edit_ratio("a b c", "a x c") == pytest.approx(1 / 3)
    assert edit_ratio("a b", "a b c d") == pytest.approx(2 / 4)
    assert edit_ratio("", "a") == 1
    assert edit_ratio("kitten sat", "sitting sat on") == pytest.approx(2 / 3)


def test_majority_vote():
    assert majority(["1", "2", "1"], [True, False, True])
    assert not majority(["2", "2", "1"], [False, False, True])
    assert majority([None, None, "3"], [False, False, True])  # no answer never wins
    assert not majority([None, None], [False, False])
    assert majority(["1", "2"], [True, False]) and not majority(["2", "1"], [False, True])  # ties: first seen


def test_several_samples_and_turns():
    # 2 problems x 3 chains x 3 attempts
    correct = [
        [[0, 1, 1], [0, 0, 1], [1, 1, 1]],
        [[0, 0, 0], [1, 0, 0], [0, 0, 1]],
    ]
    answers = [
        [["1", "2", "2"], ["1", "1", "2"], ["2", "2", "2"]],
        [["a", "a", "a"], ["b", "a", "a"], ["a", "a", "b"]],
    ]
    texts = [[["t"] * 3] * 3] * 2
    m = compute_metrics(correct, answers, texts)
    v = {k: x["value"] for k, x in m.items()}
    assert v["accuracy@t1"] == pytest.approx(2 / 6)
    assert v["accuracy@t2"] == pytest.approx(2 / 6)
    assert v["accuracy@t3"] == pytest.approx(4 / 6)
    assert v["i->c(t1,t2)"] == pytest.approx(1 / 6) and v["c->i(t1,t2)"] == pytest.approx(1 / 6)
    assert v["i->c(t2,t3)"] == pytest.approx(2 / 6) and v["c->i(t2,t3)"] == 0
    assert v["delta(t1,t3)"] == pytest.approx(2 / 6)
    # majority: p0 t1 votes "1" (wrong), t3 votes "2" (right); p1 t1 "a" (wrong), t3 "a" (wrong)
    assert v["maj@3@t1"] == 0 and v["maj@3@t2"] == pytest.approx(1 / 2) and v["maj@3@t3"] == pytest.approx(1 / 2)
    assert not math.isnan(m["accuracy@t1"]["low"])


def test_pass_at_k_unbiased_estimator_by_hand():
    from score_cli.metrics import pass_at_k

    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share correct
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(3, 1, 3) == 1.0  # fewer wrong samples than k: some correct one is always drawn
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_k_metrics_per_attempt():
    from score_cli.metrics import pass_at_k_metrics

    # 2 problems x 5 samples x 2 attempts: problem A 2 of 5 right at t1, 5 at t2; problem B 0, then 1
    a = [[1, 1], [1, 1], [0, 1], [0, 1], [0, 1]]
    b = [[0, 0], [0, 0], [0, 1], [0, 0], [0, 0]]
    m = pass_at_k_metrics([a, b])
    assert sorted(m) == ["pass@1@t1", "pass@1@t2", "pass@5@t1", "pass@5@t2"]
    assert m["pass@1@t1"]["value"] == pytest.approx((2 / 5 + 0) / 2)
    assert m["pass@5@t1"]["value"] == pytest.approx(0.5) and m["pass@5@t2"]["value"] == pytest.approx(1.0)
    assert m["pass@1@t2"]["value"] == pytest.approx((1 + 1 / 5) / 2)
    k2 = pass_at_k_metrics([a, b], ks=[2])["pass@2@t1"]
    assert k2["value"] == pytest.approx((1 - 3 / 10 + 0) / 2) and k2["low"] <= k2["value"] <= k2["high"]
    one = pass_at_k_metrics([[[1]], [[0]], [[1]]])  # one sample: pass@1 is accuracy, with Wilson's interval
    assert list(one) == ["pass@1@t1"] and one["pass@1@t1"] == wilson(2, 3).as_dict()
