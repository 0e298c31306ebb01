"""Proof that SCoReTrainer optimises the SCoRe objective (SCORE_PAPER.md), per attempt's tokens.

The hand computations below use plain Python loops over tokens, not the trainer's tensor code.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from score_cli.rollout import NOT_GENERATED
from score_cli.tasks import Grade, Problem, Task
from score_cli.trainers import (
    UNSUPPORTED_LOSS_OPTIONS,
    SCoReConfig,
    SCoReTrainer,
    baseline,
    kl_coefficients,
    reward_weights,
    score_loss,
    score_returns,
)

INSTR = "Check it."


class ExactTask(Task):
    """Right iff the attempt's text equals the gold answer."""

    name = "exact"
    instruction = INSTR

    def grade(self, problems, outputs):
        return [Grade(o, o == p.answer) for p, o in zip(problems, outputs, strict=True)]


# ---------------------------------------------------------------------------------------------
# The objective's pieces against hand computation
# ---------------------------------------------------------------------------------------------
R1 = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]  # 2 prompts x 3 rollouts
R2 = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def rloo(values, group):
    out = []
    for i, v in enumerate(values):
        g = i // group
        others = [values[j] for j in range(g * group, (g + 1) * group) if j != i]
        out.append(v - sum(others) / len(others))
    return out


@pytest.mark.parametrize("stage", [1, 2])
def test_returns_and_rloo_advantages(stage):
    alpha = 10.0
    r1, r2 = torch.tensor(R1), torch.tensor(R2)
    ret1, ret2 = score_returns(r1, r2, stage=stage, alpha=alpha)
    A1 = (ret1 - baseline(ret1, 3, "rloo")).tolist()
    A2 = (ret2 - baseline(ret2, 3, "rloo")).tolist()
    if stage == 1:
        hand1, hand2 = [0.0] * 6, rloo(R2, 3)
    else:
        hand1 = rloo(R1, 3)
        hand2 = rloo([b + alpha * (b - a) for a, b in zip(R1, R2, strict=True)], 3)
    assert A1 == pytest.approx(hand1, abs=1e-6) and A2 == pytest.approx(hand2, abs=1e-6)
    # e.g. stage 2, prompt 0: (r1, r2) = (0,1), (1,1), (0,0) -> returns 11, 1, 0 -> A = 11 - (1 + 0) / 2
    if stage == 2:
        assert A2[0] == pytest.approx(10.5)


def test_gamma_adds_attempt_two_return_to_attempt_one():
    r1, r2 = torch.tensor(R1), torch.tensor(R2)
    ret1, ret2 = score_returns(r1, r2, stage=2, alpha=1.0, gamma=0.5)
    assert ret1.tolist() == pytest.approx([a + 0.5 * (b + (b - a)) for a, b in zip(R1, R2, strict=True)])
    s1, _ = score_returns(r1, r2, stage=1, alpha=1.0, gamma=0.5)
    assert s1.tolist() == pytest.approx([0.5 * b for b in R2])


R3 = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_three_attempt_returns_by_hand(gamma):
    alpha, g = 10.0, gamma
    r1, r2, r3 = (torch.tensor(x) for x in (R1, R2, R3))
    s2 = [t.tolist() for t in score_returns(r1, r2, r3, stage=2, alpha=alpha, gamma=gamma)]
    s1 = [t.tolist() for t in score_returns(r1, r2, r3, stage=1, alpha=alpha, gamma=gamma)]
    for i, (a, b, c) in enumerate(zip(R1, R2, R3, strict=True)):
        ret3 = c + alpha * (c - b)  # attempt 3: its reward plus its progress over attempt 2
        ret2 = b + alpha * (b - a) + g * ret3
        ret1 = a + g * ret2
        assert [s2[0][i], s2[1][i], s2[2][i]] == pytest.approx([ret1, ret2, ret3])
        # Stage I: only the last attempt is rewarded; gamma passes it back
        assert [s1[0][i], s1[1][i], s1[2][i]] == pytest.approx([g * g * c, g * c, c])
    # e.g. rollout 0: (r1, r2, r3) = (0, 1, 1) -> Stage II returns 0, 11, 1 (gamma 0)
    assert score_returns(r1, r2, r3, stage=2, alpha=alpha)[1][0].item() == 11.0
    with pytest.raises(ValueError, match="at least two"):
        score_returns(r1, stage=2, alpha=alpha)


def test_kl_coefficients_and_logged_reward_weights():
    assert kl_coefficients(2, stage=1, beta1=0.01, beta2=0.1) == (0.1, 0.01)
    assert kl_coefficients(3, stage=1, beta1=0.01, beta2=0.1) == (0.1, 0.1, 0.01)
    assert kl_coefficients(3, stage=2, beta1=0.01, beta2=0.1) == (0.01, 0.01, 0.01)
    assert kl_coefficients(2, stage=2, beta1=0.01, beta2=0.1, beta_hold=1.0) == (1.0, 0.01)  # ours: attempt 1 held
    assert kl_coefficients(3, stage=2, beta1=0.01, beta2=0.1, beta_hold=1.0) == (1.0, 1.0, 0.01)
    assert kl_coefficients(2, stage=1, beta1=0.01, beta2=0.1, beta_hold=1.0) == (0.1, 0.01)  # Stage I: beta2
    assert reward_weights(2, stage=2, alpha=10.0) == [-9.0, 11.0]  # r1 + r2 + 10 (r2 - r1)
    assert reward_weights(3, stage=2, alpha=10.0) == [-9.0, 1.0, 11.0]  # the bonuses telescope
    assert reward_weights(3, stage=1, alpha=10.0) == [0.0, 0.0, 1.0]


def test_baselines():
    x = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert baseline(x, 2, "rloo").tolist() == [0.0, 1.0, 1.0, 0.0]
    assert baseline(x, 2, "mean").tolist() == [0.5, 0.5, 0.5, 0.5]
    assert baseline(x, 2, "none").tolist() == [0.0] * 4


def test_baseline_given_the_previous_reward_by_hand():
    """condition_baseline: attempt 2's rollouts are compared only with those whose y1 scored the same
    (in the group, else in the batch), so the bonus's -alpha r(y1) cancels: A2 = (1 + alpha)(r2 - b(r2))."""
    r1, r2 = torch.tensor(R1), torch.tensor(R2)  # groups (0,1,0) and (1,1,0) of r1
    _, ret2 = score_returns(r1, r2, stage=2, alpha=10.0)
    assert ret2.tolist() == [11.0, 1.0, 0.0, -10.0, 1.0, 11.0]
    A2 = (ret2 - baseline(ret2, 3, "rloo", given=r1)).tolist()
    # rollout 0 (r1 0) against rollout 2; 2 against 0; 3 (r1 1) against 4; 4 against 3; rollout 1
    # (r1 1) has no such partner in its group: rollouts 3 and 4 of the batch, (-10 + 1) / 2; rollout
    # 5 (r1 0): rollouts 0 and 2, (11 + 0) / 2
    assert A2 == pytest.approx([11.0, 5.5, -11.0, -11.0, 11.0, 5.5])
    assert A2 == pytest.approx([11 * (b - c) for b, c in zip(R2, [0, 0.5, 1, 1, 0, 0.5], strict=True)])
    # mean: the rollout itself counts too
    assert baseline(ret2, 3, "mean", given=r1).tolist() == pytest.approx([5.5, -8 / 3, 5.5, -4.5, -4.5, 22 / 3])
    assert baseline(ret2, 3, "none", given=r1).tolist() == [0.0] * 6
    # a label no other rollout of the batch has: its own return (no advantage)
    lone = torch.tensor([3.0, 5.0])
    assert baseline(lone, 2, "rloo", given=torch.tensor([0.0, 1.0])).tolist() == [3.0, 5.0]
    # all labels equal: the plain baseline
    same = torch.zeros(6)
    assert baseline(ret2, 3, "rloo", given=same).tolist() == pytest.approx(baseline(ret2, 3, "rloo").tolist())


def test_score_loss_matches_hand_computation_and_masks_gradients():
    # 2 sequences x 5 tokens: turn ids (0 = attempt 1, 1 = attempt 2, -1 = instruction/padding)
    turn = [[0, 0, -1, 1, 1], [0, -1, 1, -1, -1]]
    mask = [[1, 1, 0, 1, 1], [1, 0, 1, 0, 0]]
    logp = [[-1.0, -0.5, -2.0, -0.2, -1.5], [-0.7, -3.0, -0.1, -1.0, -1.0]]
    old = [[-1.1, -0.5, -2.0, -0.3, -1.0], [-0.7, -3.0, -0.4, -1.0, -1.0]]
    ref = [[-1.2, -0.4, -9.0, -0.2, -1.0], [-0.9, -9.0, -0.3, -9.0, -9.0]]
    adv_per_turn = [(0.0, 2.0), (-1.0, 0.5)]  # (A1, A2) per sequence
    kl_per_turn = (0.1, 0.01)  # Stage I: beta2 on attempt 1, beta1 on attempt 2
    eps = 0.2
    total, count = 0.0, 0
    for b in range(2):
        for t in range(5):
            if not mask[b][t]:
                continue
            k = turn[b][t]
            a = adv_per_turn[b][k]
            ratio = math.exp(logp[b][t] - old[b][t])
            pg = -min(ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a)
            d = ref[b][t] - logp[b][t]
            kl = math.exp(d) - d - 1
            total += pg + kl_per_turn[k] * ratio * kl  # k3 times the ratio pi/pi_old (use_bias_correction_kl)
            count += 1
    hand = total / count

    T = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    logps = T(logp).requires_grad_(True)
    adv = T([[adv_per_turn[b][k] if k >= 0 else 0.0 for k in turn[b]] for b in range(2)])
    klc = T([[kl_per_turn[k] if k >= 0 else 0.0 for k in turn[b]] for b in range(2)])
    loss, _ = score_loss(logps, T(old), T(ref), adv, klc, T(mask), epsilon_low=eps, epsilon_high=eps)
    assert loss.item() == pytest.approx(hand, abs=1e-9)
    loss.backward()
    grad = logps.grad
    for b in range(2):
        for t in range(5):
            if not mask[b][t]:
                assert grad[b, t].item() == 0.0  # instruction and padding get no gradient
            else:
                assert grad[b, t].item() != 0.0


def expected_kl_gradient(logits, ref_logp, **kw):
    """sum_y pi(y) grad L(y): the exact expectation over y ~ pi of the gradient of score_loss's KL
    term for one token y (A = 0, beta = 1, on-policy old = logp.detach())."""
    total = torch.zeros_like(logits)
    pi = torch.softmax(logits, -1).detach()  # the sampling weights
    for y in range(logits.numel()):
        logp = torch.log_softmax(logits, -1)[y].view(1, 1)
        one = torch.ones(1, 1, dtype=logits.dtype)
        loss, _ = score_loss(logp, logp.detach(), ref_logp[y].view(1, 1), 0 * one, one, one, **kw)
        (g,) = torch.autograd.grad(loss, logits)
        total += pi[y] * g
    return total


def test_kl_term_gradient_is_that_of_kl_pi_to_ref():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.5, -0.4], dtype=torch.float64, requires_grad=True)
    ref_logp = torch.log_softmax(torch.tensor([1.0, 0.2, -0.5, 0.7, -1.5], dtype=torch.float64), -1)

    def exact(kl):
        (g,) = torch.autograd.grad(kl(torch.log_softmax(logits, -1)), logits)
        return g

    reverse = exact(lambda lp: (lp.exp() * (lp - ref_logp)).sum())  # grad KL(pi || pi_ref), the paper's
    forward = exact(lambda lp: (ref_logp.exp() * (ref_logp - lp)).sum())  # grad KL(pi_ref || pi)
    assert (reverse - forward).abs().max() > 1e-2  # the two differ here, so the test can fail

    default = expected_kl_gradient(logits, ref_logp)  # use_bias_correction_kl=True
    assert torch.allclose(default, reverse, atol=1e-6, rtol=0)
    without = expected_kl_gradient(logits, ref_logp, use_bias_correction_kl=False)
    assert torch.allclose(without, forward, atol=1e-6, rtol=0)
    assert not torch.allclose(without, reverse, atol=1e-3, rtol=0)


def test_kl_value_is_k3_and_delta_caps_the_unclipped_ratio():
    T = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    logp, old, ref = T([-1.0]), T([-1.0 - math.log(5.0)]), T([-0.5])  # ratio 5
    one = T([1.0])
    for bias in (True, False):  # the returned (logged) kl is k3 either way
        _, kl = score_loss(logp, old, ref, 0 * one, one, one, use_bias_correction_kl=bias)
        assert kl.item() == pytest.approx(math.exp(0.5) - 0.5 - 1, abs=1e-12)
    # A < 0 and ratio 5: -min(5 A, 1.2 A) = 5; with delta = 2 (TRL's two-sided clipping): -min(2 A, 1.2 A) = 2
    assert score_loss(logp, old, None, -one, 0 * one, one)[0].item() == pytest.approx(5.0)
    assert score_loss(logp, old, None, -one, 0 * one, one, delta=2.0)[0].item() == pytest.approx(2.0)


def small_config(tmp_path, **overrides):
    return SCoReConfig(output_dir=str(tmp_path / "o"), num_generations=2, per_device_train_batch_size=2,
                       report_to="none", **overrides)


@pytest.mark.parametrize(
    "name,value",
    [
        ("importance_sampling_level", "sequence"),
        ("top_entropy_quantile", 0.2),
        ("entropy_coef", 0.01),
        ("use_adaptive_entropy", True),
        ("off_policy_mask_threshold", 0.5),
        ("sync_ref_model", True),
        ("loss_type", "bnpo"),
        ("loss_type", "sapo"),
    ],
)
def test_config_refuses_objective_options_score_does_not_implement(tmp_path, name, value):
    with pytest.raises(ValueError, match=name) as err:
        small_config(tmp_path, **{name: value})
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_config_accepts_defaults_and_the_implemented_options(tmp_path):
    small_config(tmp_path)
    defaults = {name: default for name, (default, _) in UNSUPPORTED_LOSS_OPTIONS.items()}
    cfg = small_config(tmp_path, delta=3.0, use_bias_correction_kl=False, mask_truncated_completions=True, **defaults)
    assert cfg.delta == 3.0 and cfg.use_bias_correction_kl is False


# ---------------------------------------------------------------------------------------------
# The trainer end to end on one batch: scripted attempts, real model log-probs
# ---------------------------------------------------------------------------------------------
QUESTIONS = {"Q0?": ["ab", "7"], "Q1?": ["7", "zz"], "Q2?": ["7", "7"], "Q3?": ["x", "y"]}


def perturbed_copy(src, dst, scale=0.05, seed=1):
    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def make_trainer(policy_dir, ref_dir, stage, tmp_path, scripted, script=QUESTIONS, **overrides):
    tok = AutoTokenizer.from_pretrained(policy_dir, padding_side="left")
    problems = [Problem(str(i), q, "7") for i, q in enumerate(script)]
    settings = dict(num_generations=2, per_device_train_batch_size=8, max_attempt_length=4, report_to="none",
                    save_strategy="no", shuffle_dataset=False, seed=0,
                    reuse_attempt_cache=False)  # attempts are scripted, below
    cfg = SCoReConfig(output_dir=str(tmp_path / "out"), stage=stage, ref_model=str(ref_dir),
                      **{**settings, **overrides})
    trainer = SCoReTrainer(str(policy_dir), cfg, ExactTask(), problems, processing_class=tok)
    gen = scripted(tok, script, INSTR)
    trainer._generate_single_turn = lambda ids, images, mm, n, **_: gen(ids)
    return trainer, tok


def test_trainer_logs_and_warns_once_when_attempts_are_cut_off(tiny_model_dir, tmp_path, scripted, caplog):
    """An attempt that ends without EOS hit max_attempt_length: truncated/tk is the share of them, and
    more than half cut off in a batch warns once per attempt, naming the setting to raise."""
    trainer, tok = make_trainer(tiny_model_dir, tiny_model_dir, 2, tmp_path, scripted)
    gen = scripted(tok, QUESTIONS, INSTR)

    def second_attempts_cut(ids):  # attempt 2 of Q0, Q1, Q2 comes back without its EOS
        outs, cache = gen(ids)
        texts = [tok.decode(x) for x in ids]
        return [o[:-1] if INSTR in t and "Q3?" not in t else o for o, t in zip(outs, texts, strict=True)], cache

    trainer._generate_single_turn = lambda ids, images, mm, n, **_: second_attempts_cut(ids)
    trainer.model.train()
    rows = [{"prompt": q, "problem_id": str(i)} for i, q in enumerate(QUESTIONS) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="score_cli.trainers"):
        trainer._generate_and_score_completions(rows)
        trainer._generate_and_score_completions(rows)
    logged = trainer._metrics["train"]
    assert logged["truncated/t1"] == [0.0, 0.0] and logged["truncated/t2"] == [0.75, 0.75]
    warnings = [r.getMessage() for r in caplog.records if "max_attempt_length" in r.getMessage()]
    assert len(warnings) == 1 and "75% of attempt 2's samples" in warnings[0]


def test_trainer_conditions_attempt_two_baseline_on_r1(tiny_model_dir, tmp_path, scripted):
    """With condition_baseline, attempt 2's advantage compares rollouts of a group whose y1 scored
    the same; attempt 1's stays the plain leave-one-out."""
    trainer, _ = make_trainer(tiny_model_dir, tiny_model_dir, 2, tmp_path, scripted, alpha=10.0, num_generations=4,
                              condition_baseline=True)
    trainer.model.train()
    rows = [{"prompt": q, "problem_id": str(i)} for _ in range(2) for i, q in enumerate(QUESTIONS)]
    batch = trainer._generate_and_score_completions(rows)
    r1 = [float(QUESTIONS[r["prompt"]][0] == "7") for r in rows]  # Q0..Q3: 0, 1, 1, 0 in each group of 4
    r2 = [float(QUESTIONS[r["prompt"]][1] == "7") for r in rows]  # 1, 0, 1, 0
    ret2 = [b + 10 * (b - a) for a, b in zip(r1, r2, strict=True)]  # 11, -10, 1, 0
    A2 = []
    for i in range(8):
        partners = [ret2[j] for j in range(i // 4 * 4, i // 4 * 4 + 4) if j != i and r1[j] == r1[i]]
        A2.append(ret2[i] - sum(partners) / len(partners))
    assert A2 == pytest.approx([11.0, -11.0, 11.0, -11.0] * 2)  # Q0 vs Q3, Q1 vs Q2
    A1 = rloo(r1, 4)
    turn = batch["turn"].tolist()
    for b in range(8):
        for t, k in enumerate(turn[b]):
            assert batch["advantages"][b, t].item() == pytest.approx({0: A1[b], 1: A2[b]}.get(k, 0.0), abs=1e-5)


def manual_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
    ids = torch.cat([prompt_ids, completion_ids], 1)
    att = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att).logits.float()
    P = prompt_ids.size(1)
    lp = torch.log_softmax(logits[:, P - 1 : -1], -1)
    return lp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def hand_loss(turn, mask, ref, policy_lp, A, betas) -> float:
    """The on-policy SCoRe loss by hand: the mean over unmasked tokens of -A_k + beta_k * KL_t, with
    k the token's attempt, A[k][b] rollout b's advantage for it and KL_t the k3 value."""
    total, count = 0.0, 0
    for b, turns in enumerate(turn):
        for t, k in enumerate(turns):
            if mask[b][t]:
                d = ref[b, t].item() - policy_lp[b, t].item()
                total += -A[k][b] + betas[k] * (math.exp(d) - d - 1)
                count += 1
    return total / count


@pytest.mark.parametrize(("stage", "beta_hold"), [(1, None), (2, None), (2, 0.5)])
def test_trainer_batch_advantages_kl_and_loss(stage, beta_hold, tiny_model_dir, tmp_path, scripted):
    policy = perturbed_copy(tiny_model_dir, tmp_path / "policy")
    trainer, tok = make_trainer(policy, tiny_model_dir, stage, tmp_path, scripted, alpha=10.0, beta1=0.01, beta2=0.1,
                                beta_hold=beta_hold)
    trainer.model.train()
    rows = [{"prompt": q, "problem_id": str(i)} for i, q in enumerate(QUESTIONS) for _ in range(2)]
    batch = trainer._generate_and_score_completions(rows)

    # rewards: attempt texts per question are scripted; gold is "7"
    r1 = [float(QUESTIONS[r["prompt"]][0] == "7") for r in rows]
    r2 = [float(QUESTIONS[r["prompt"]][1] == "7") for r in rows]
    assert trainer._attempt_rewards[:, 0].tolist() == r1 and trainer._attempt_rewards[:, 1].tolist() == r2
    # behaviour collapse: Q0, Q1, Q3 change their answer, Q2 repeats attempt 1 word for word
    logged = trainer._metrics["train"]
    assert logged["answer_changed"][-1] == pytest.approx(3 / 4) and logged["zero_edit"][-1] == pytest.approx(1 / 4)
    # ... by attempt 1: both wrong first attempts (Q0, Q3) change, one of the two right ones (Q1)
    assert logged["changed_after_wrong"][-1] == 1.0 and logged["changed_after_right"][-1] == 0.5
    if stage == 1:
        A1, A2 = [0.0] * 8, rloo(r2, 2)
        kl1 = 0.1
    else:
        A1, A2 = rloo(r1, 2), rloo([b + 10 * (b - a) for a, b in zip(r1, r2, strict=True)], 2)
        kl1 = 0.01 if beta_hold is None else beta_hold  # the paper's beta1, or ours holding attempt 1

    turn = batch["turn"].tolist()
    mask = (batch["completion_mask"] * batch["tool_mask"]).tolist()
    instr_len = len(tok(f"<|user|>{INSTR}</s><|assistant|>", add_special_tokens=False)["input_ids"])
    for b, row in enumerate(rows):
        y1, y2 = (len(QUESTIONS[row["prompt"]][k]) + 1 for k in (0, 1))  # text + EOS
        assert turn[b][: y1 + instr_len + y2] == [0] * y1 + [NOT_GENERATED] * instr_len + [1] * y2
        for t, k in enumerate(turn[b]):
            want_a = {0: A1[b], 1: A2[b]}.get(k, 0.0)
            want_kl = {0: kl1, 1: 0.01}.get(k, 0.0)
            assert batch["advantages"][b, t].item() == pytest.approx(want_a, abs=1e-6)
            assert batch["kl_coef"][b, t].item() == pytest.approx(want_kl, abs=1e-7)  # float32
            assert mask[b][t] == (1 if k != NOT_GENERATED else 0)

    # reference log-probs are the base model's (not the policy's)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    args = (batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])
    ref = manual_logps(base, *args)
    m = torch.tensor(mask, dtype=torch.bool)
    assert torch.allclose(batch["ref_per_token_logps"][m], ref[m], atol=1e-5)

    # the loss equals the hand computation: mean over unmasked tokens of -A + beta_t * KL_t
    trainer.model.eval()  # no dropout in the tiny model either way; eval keeps the normaliser simple
    policy_lp = manual_logps(trainer.model, *args)
    assert not torch.allclose(policy_lp[m], ref[m], atol=1e-3)  # the KL term is exercised
    loss = trainer._compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(hand_loss(turn, mask, ref, policy_lp, [A1, A2], [kl1, 0.01]), abs=1e-5)
    logged = trainer._metrics["eval"]
    assert logged["kl/t1"][-1] > 0 and logged["kl/t2"][-1] > 0


# Three attempts; the two rollouts of a prompt differ, so the leave-one-out advantages are not zero.
QUESTIONS3 = {
    "Q0?": [["ab", "7", "7"], ["7", "7", "zz"]],
    "Q1?": [["7", "zz", "7"], ["x", "x", "x"]],
    "Q2?": [["7", "7", "7"], ["7", "y", "y"]],
    "Q3?": [["x", "y", "7"], ["q", "7", "7"]],
}


@pytest.mark.parametrize("stage", [1, 2])
def test_three_attempt_batch_advantages_kl_masks_and_loss(stage, tiny_model_dir, tmp_path, scripted):
    policy = perturbed_copy(tiny_model_dir, tmp_path / "policy")
    trainer, tok = make_trainer(policy, tiny_model_dir, stage, tmp_path, scripted, script=QUESTIONS3, turns=3,
                                alpha=10.0, beta1=0.01, beta2=0.1)
    trainer.model.train()
    rows = [{"prompt": q, "problem_id": str(i)} for i, q in enumerate(QUESTIONS3) for _ in range(2)]
    batch = trainer._generate_and_score_completions(rows)
    chains = [QUESTIONS3[r["prompt"]][b % 2] for b, r in enumerate(rows)]  # rollout b's three texts
    r = [[float(c[k] == "7") for c in chains] for k in range(3)]  # r[k][b]
    assert trainer._attempt_rewards.T.tolist() == r

    # hand: per-attempt returns, leave-one-out advantages within each prompt's 2 rollouts, KL coefficients
    if stage == 1:
        A = [[0.0] * 8, [0.0] * 8, rloo(r[2], 2)]
        betas = [0.1, 0.1, 0.01]
    else:
        ret = [r[0]] + [[b + 10 * (b - a) for a, b in zip(r[k - 1], r[k], strict=True)] for k in (1, 2)]
        A = [rloo(x, 2) for x in ret]
        betas = [0.01, 0.01, 0.01]
        # Q3: chains (x, y, 7) and (q, 7, 7): attempt 3 returns 11 and 1 -> A3 = +10 and -10;
        # attempt 2 returns 0 and 11 -> A2 = -11 and +11
        assert (A[2][6], A[2][7], A[1][6], A[1][7]) == (10.0, -10.0, -11.0, 11.0)
    assert any(a != 0.0 for a in A[2])

    turn = batch["turn"].tolist()
    mask = (batch["completion_mask"] * batch["tool_mask"]).tolist()
    instr_len = len(tok(f"<|user|>{INSTR}</s><|assistant|>", add_special_tokens=False)["input_ids"])
    for b, chain in enumerate(chains):
        y = [len(t) + 1 for t in chain]  # text + EOS
        # y1, instruction, y2, instruction, y3: both instructions are out of the loss
        want = [0] * y[0] + [NOT_GENERATED] * instr_len + [1] * y[1] + [NOT_GENERATED] * instr_len + [2] * y[2]
        assert turn[b][: len(want)] == want and all(t == NOT_GENERATED for t in turn[b][len(want) :])
        for t, k in enumerate(turn[b]):
            assert batch["advantages"][b, t].item() == pytest.approx(A[k][b] if k >= 0 else 0.0, abs=1e-6)
            assert batch["kl_coef"][b, t].item() == pytest.approx(betas[k] if k >= 0 else 0.0, abs=1e-7)
            assert mask[b][t] == (1 if k != NOT_GENERATED else 0)

    # per-attempt and per-pair logs
    logged = trainer._metrics["train"]
    for k in range(3):
        assert logged[f"reward/t{k + 1}"][-1] == pytest.approx(sum(r[k]) / 8)
    assert logged["delta"][-1] == pytest.approx((sum(r[1]) - sum(r[0])) / 8)
    assert logged["delta/t2t3"][-1] == pytest.approx((sum(r[2]) - sum(r[1])) / 8)
    i2c23 = sum(a == 0 and b == 1 for a, b in zip(r[1], r[2], strict=True)) / 8
    c2i23 = sum(a == 1 and b == 0 for a, b in zip(r[1], r[2], strict=True)) / 8
    assert (logged["i2c/t2t3"][-1], logged["c2i/t2t3"][-1]) == pytest.approx((i2c23, c2i23))
    changed23 = sum(c[1] != c[2] for c in chains) / 8
    assert logged["answer_changed/t2t3"][-1] == pytest.approx(changed23)

    # the loss equals the hand computation: mean over unmasked tokens of -A + beta_t * KL_t
    trainer.model.eval()
    args = (batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ref, policy_lp = manual_logps(base, *args), manual_logps(trainer.model, *args)
    loss = trainer._compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(hand_loss(turn, mask, ref, policy_lp, A, betas), abs=1e-5)
    assert all(trainer._metrics["eval"][f"kl/t{k}"][-1] > 0 for k in (1, 2, 3))


def test_stage2_reference_is_the_base_model_not_stage1(tiny_model_dir, tmp_path, scripted):
    stage1 = perturbed_copy(tiny_model_dir, tmp_path / "stage1", scale=0.2)
    trainer, _ = make_trainer(stage1, tiny_model_dir, 2, tmp_path, scripted)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    s1 = AutoModelForCausalLM.from_pretrained(stage1)
    ref_state = trainer.accelerator.unwrap_model(trainer.ref_model).state_dict()
    for name, p in base.state_dict().items():
        assert torch.equal(ref_state[name], p), name
    pol_state = trainer.model.state_dict()
    assert any(not torch.equal(pol_state[n], p) for n, p in base.state_dict().items())
    assert all(torch.equal(pol_state[n], p) for n, p in s1.state_dict().items())
    assert trainer.model.config._name_or_path == str(stage1)


@pytest.mark.parametrize("turns", [2, 3])
def test_training_attempt_two_continues_attempt_one_cache(turns, tiny_model_dir, tmp_path):
    """With transformers generation, attempt k+1 reads only the instruction turn (attempt k's KV cache
    holds x + y1 + ... + yk), and samples what re-reading everything samples."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    problems = [Problem(str(i), q, "7") for i, q in enumerate(QUESTIONS)]
    runs = {}
    for reuse in (False, True):
        cfg = SCoReConfig(output_dir=str(tmp_path / f"o{reuse}"), ref_model=str(tiny_model_dir), num_generations=2,
                          per_device_train_batch_size=8, max_attempt_length=6, report_to="none", save_strategy="no",
                          seed=0, reuse_attempt_cache=reuse, turns=turns)
        trainer = SCoReTrainer(str(tiny_model_dir), cfg, ExactTask(), problems, processing_class=tok)
        widths: list[int] = []
        hook = trainer.model.register_forward_pre_hook(
            lambda m, args, kwargs, widths=widths: widths.append(kwargs["input_ids"].size(1)), with_kwargs=True
        )
        torch.manual_seed(0)
        try:
            out = trainer._rollout([q for q in QUESTIONS for _ in range(2)], trainer)
        finally:
            hook.remove()
        runs[reuse] = out, [w for w in widths if w > 1]  # the prefill of each attempt
    (fresh, fresh_widths), (cached, cached_widths) = runs[False], runs[True]
    assert cached["completion_ids"] == fresh["completion_ids"]
    assert len(fresh_widths) == len(cached_widths) == turns
    for k in range(1, turns):
        starts = [t.index(k) for t in fresh["turn_ids"]]
        inputs = [len(p) + i for p, i in zip(fresh["prompt_ids"], starts, strict=True)]
        assert fresh_widths[k] == max(inputs)  # x + y1 + ... + instruction, read again
        # cached: only the instruction (+ an EOS where attempt k was cut off) and attempt k's last token
        last = [max(j for j in range(i) if t[j] != NOT_GENERATED)
                for t, i in zip(fresh["turn_ids"], starts, strict=True)]
        assert cached_widths[k] == max(i - j for i, j in zip(starts, last, strict=True))
