"""Self-correction metrics (SCORE_PAPER.md, "Metrics"), each with a 95% confidence interval.

Inputs are per problem, per sampled chain, per attempt: `correct[p][k][t]`, the extracted final
`answers[p][k][t]` and the attempt `texts[p][k][t]`. Transition rates (i->c, c->i) are fractions
of ALL chains, as in the paper's tables; the conditional forms (share of wrong first attempts
fixed, share of right ones broken) are reported beside them.

Confidence intervals: Wilson for a proportion over independent problems (one chain each);
otherwise a paired percentile bootstrap that resamples problems (so chains of one problem and
both attempts of one chain stay together).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def wilson(successes: float, n: float, z: float = Z95) -> Estimate:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(
    numer: np.ndarray, denom: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """Ratio of sums over problems (sum numer / sum denom), with a percentile bootstrap CI.

    `numer` and `denom` hold one value per problem; resampling problems keeps paired data paired.
    """
    total = denom.sum()
    value = float(numer.sum() / total) if total else float("nan")
    if len(numer) == 0:
        return Estimate(value, value, value)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(numer), size=(n_boot, len(numer)))
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = numer[idx].sum(1) / denom[idx].sum(1)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return Estimate(value, float("nan"), float("nan"))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi))


def edit_ratio(a: str, b: str) -> float:
    """Word-level Levenshtein distance divided by the longer length (0 = identical attempts)."""
    x, y = a.split(), b.split()
    if not x and not y:
        return 0.0
    if len(x) < len(y):
        x, y = y, x
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, start=1):
        cur = [i]
        for j, wy in enumerate(y, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy)))
        prev = cur
    return prev[-1] / len(x)


def majority(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Majority vote over final answers (no answer never wins); ties go to the first seen."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return any(c for a, c in zip(answers, correct, strict=True) if a == winner)


def compute_metrics(
    correct: Sequence[Sequence[Sequence[bool]]],
    answers: Sequence[Sequence[Sequence[str | None]]],
    texts: Sequence[Sequence[Sequence[str]]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """All metrics as {name: {"value", "low", "high"}}; names are stable (used in logs and JSON).

    Names: `accuracy@tN`, and for each pair of consecutive attempts (tN,tM): `delta(tN,tM)`,
    `i->c(tN,tM)`, `c->i(tN,tM)`, `fixed|wrong(tN,tM)`, `broken|right(tN,tM)`, `answer_changed(tN,tM)`,
    `changed|wrong(tN,tM)`, `fixed|changed(tN,tM)`, `edit_ratio(tN,tM)`, `zero_edit(tN,tM)`; with several
    chains per problem also `maj@K@tN`; with more than two attempts also `delta(t1,tLAST)`.
    """
    c = np.asarray(correct, dtype=float)  # (P, K, T)
    if c.ndim != 3 or c.shape[0] == 0:
        raise ValueError("correct must be a non-empty (problems, samples, attempts) array")
    n_problems, n_samples, turns = c.shape
    chains = np.full(n_problems, float(n_samples))  # denominator per problem

    def proportion(per_chain: np.ndarray, per_problem_denom: np.ndarray | None = None) -> Estimate:
        numer = per_chain.reshape(n_problems, -1).sum(1) if per_chain.ndim > 1 else per_chain
        denom = chains if per_problem_denom is None else per_problem_denom
        if n_samples == 1 and per_problem_denom is None:
            return wilson(float(numer.sum()), float(n_problems))
        return bootstrap(numer, denom, n_boot=n_boot, seed=seed)

    out: dict[str, Estimate] = {}
    for t in range(turns):
        out[f"accuracy@t{t + 1}"] = proportion(c[:, :, t])
    pairs = [(t, t + 1) for t in range(turns - 1)]
    if turns > 2:
        pairs.append((0, turns - 1))
    for a, b in pairs:
        tag = f"(t{a + 1},t{b + 1})"
        wrong = 1 - c[:, :, a]
        i2c = wrong * c[:, :, b]
        c2i = c[:, :, a] * (1 - c[:, :, b])
        out[f"delta{tag}"] = bootstrap((c[:, :, b] - c[:, :, a]).sum(1), chains, n_boot=n_boot, seed=seed)
        if b != a + 1:
            continue  # for (t1, tLAST) the delta alone is reported
        out[f"i->c{tag}"] = proportion(i2c)
        out[f"c->i{tag}"] = proportion(c2i)
        out[f"fixed|wrong{tag}"] = bootstrap(i2c.sum(1), wrong.sum(1), n_boot=n_boot, seed=seed)
        out[f"broken|right{tag}"] = bootstrap(c2i.sum(1), c[:, :, a].sum(1), n_boot=n_boot, seed=seed)
        changed = np.array([[answers[p][k][a] != answers[p][k][b] for k in range(n_samples)]
                            for p in range(n_problems)], dtype=float)
        out[f"answer_changed{tag}"] = proportion(changed)
        changed_wrong = (wrong * changed).sum(1)  # per problem: wrong attempts whose answer changed
        # How selective attempt 2 is: the share of wrong attempts whose answer it changes (the share of
        # right ones it changes is broken|right wherever a changed right answer is a wrong one). A
        # retry blind to y1 changes both alike; RL's collapse drives this one to 0 (docs/experiments.md).
        out[f"changed|wrong{tag}"] = bootstrap(changed_wrong, wrong.sum(1), n_boot=n_boot, seed=seed)
        # The fix rate: right among the changed answers after a wrong attempt. An independent retry
        # has the solver's accuracy here; a copy-or-blend that keeps the mistake scores near 0.
        out[f"fixed|changed{tag}"] = bootstrap(i2c.sum(1), changed_wrong, n_boot=n_boot, seed=seed)
        ratios = np.array([[edit_ratio(texts[p][k][a], texts[p][k][b]) for k in range(n_samples)]
                           for p in range(n_problems)])
        out[f"edit_ratio{tag}"] = bootstrap(ratios.sum(1), chains, n_boot=n_boot, seed=seed)
        out[f"zero_edit{tag}"] = proportion((ratios == 0).astype(float))
    if n_samples > 1:
        for t in range(turns):
            votes = np.array([majority([answers[p][k][t] for k in range(n_samples)], list(c[p, :, t] > 0))
                              for p in range(n_problems)], dtype=float)
            out[f"maj@{n_samples}@t{t + 1}"] = wilson(float(votes.sum()), float(n_problems))
    return {k: v.as_dict() for k, v in out.items()}


def summary_row(metrics: dict[str, dict[str, float]], turns: int = 2) -> dict[str, float]:
    """The paper's table columns (t1, t2, Delta, i->c, c->i) as plain values, for tables and logs."""
    return {
        "t1": metrics["accuracy@t1"]["value"],
        "t2": metrics[f"accuracy@t{min(turns, 2)}"]["value"],
        "delta": metrics.get("delta(t1,t2)", {"value": 0.0})["value"],
        "i->c": metrics.get("i->c(t1,t2)", {"value": 0.0})["value"],
        "c->i": metrics.get("c->i(t1,t2)", {"value": 0.0})["value"],
    }



def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. (2021) from n samples of which c are correct:
    1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn without replacement hold one
    that is correct."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_metrics(
    correct: Sequence[Sequence[Sequence[bool]]], *, ks: Sequence[int] | None = None, n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """`pass@k@tN` for every attempt: the mean over problems of the unbiased pass@k, with a bootstrap
    interval over problems (Wilson with one sample per problem, where pass@1 is a proportion).

    `ks` defaults to 1, those of 5, 10, 100 that are below the samples per problem, and that count."""
    c = np.asarray(correct, dtype=float)  # (P, K, T)
    if c.ndim != 3 or c.shape[0] == 0:
        raise ValueError("correct must be a non-empty (problems, samples, attempts) array")
    n_problems, n, turns = c.shape
    ks = sorted(set(ks) if ks is not None else {1, n, *(k for k in (5, 10, 100) if k < n)})
    out: dict[str, Estimate] = {}
    for t in range(turns):
        right = c[:, :, t].sum(1).astype(int)
        for k in ks:
            if not 0 < k <= n:
                continue
            if n == 1:
                out[f"pass@{k}@t{t + 1}"] = wilson(float(right.sum()), float(n_problems))
                continue
            values = np.array([pass_at_k(n, int(r), k) for r in right])
            out[f"pass@{k}@t{t + 1}"] = bootstrap(values, np.ones(n_problems), n_boot=n_boot, seed=seed)
    return {k: v.as_dict() for k, v in out.items()}
