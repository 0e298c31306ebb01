"""Choosing a toy base model before any RL: probe it on selection problems, keep it if it is in a band.

The same base recipe lands on different sides of the paper's stand-in constraint from one seed to the
next (docs/experiments.md, sections 21-22: Delta +0.4 to -2.6 at one slip, -2.4 to -6.7 at the next,
and the weakest retry collapses under every two-attempt RL method). So `make repro` can keep a seed's
base only when a probe on *selection problems* lands in a band, and build the next seed otherwise.

Selection problems are training-split problems outside every RL seed's problem pool (seeds 0-9) and
outside the test split, so choosing a base on them touches neither an RL run's data nor the metric
the tables report. The band (ours; the paper's base models sit well inside it) asks for:

- t1 between 30% and 70% (a base that is neither helpless nor done);
- Delta(t1,t2) between -5 and -1 points: attempt 2 weaker than attempt 1, as the paper's base models,
  but not so weak that keeping y1 is all RL can learn;
- retry-delta above -5 points: the Delta of a second attempt that always retries (below about -5 RL
  drifts to keeping y1, sections 15 and 22);
- the fix rate f (right among changed answers after a wrong y1) within 8 points of t1: the base's
  retry is a real new attempt, not a copy of y1's mistake.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from score_cli.errors import ScoreError
from score_cli.files import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

RL_POOL_SEEDS = range(10)  # selection problems avoid these RL seeds' problem pools


def selection_problems(n: int) -> list:
    """`n` training-split problems for choosing a base: drawn from the distribution the base trains on,
    none of them in the problem pools of RL seeds 0-9 (so no RL run's validation or training problem
    chooses the base it starts from). The same `n` always gives the same problems."""
    from score_cli.tasks import Problem
    from score_cli.tasks.toy_task import answer_of, draw_problem, question_text, toy_problems

    taken = {p.question for s in RL_POOL_SEEDS for p in toy_problems("train", seed=s)}
    rng, out = random.Random("toy/select"), {}
    while len(out) < n:
        a, op, b = draw_problem(rng, "train")
        q = question_text(a, op, b)
        if q not in taken and q not in out:
            out[q] = Problem(id=f"toy/select/{q[:-2]}", question=q, answer=answer_of(a, op, b))
    return list(out.values())


def write_problems(path: Path, problems) -> Path:
    """`problems` as the JSONL (question, answer) that `ensure_eval(data=...)` reads, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n"
                                    for p in problems))
    return path


def is_keep(second: str) -> bool:
    """Whether a second attempt is a one-line keep (only y1's final-answer line, `ToyData.short_copy`)."""
    text = second.strip()
    return len(text.splitlines()) == 1 and text.startswith("The final answer")


def retry_quality(samples: Path) -> dict[str, float]:
    """A retry's accuracy against a fresh first attempt on the same problems, from eval samples.

    "retry|R" / "retry|W": how often a second attempt that is not a one-line keep is right after a
    right / wrong y1; "fresh|R" / "fresh|W": how often *another* first attempt at the same problem is
    right, given this one was right / wrong (over ordered pairs of distinct chains of a problem). Wrong
    first attempts fall on the harder problems, so an independent retry as good as attempt 1 scores
    fresh|W there, not t1: retry|W well under fresh|W is a retry weaker than attempt 1.
    "retry-delta" is the Delta of a second attempt that always retries, t1 * (retry|R - 1) + (1 - t1) *
    retry|W: 0 for a retry as good as attempt 1, and the sign of the gradient between "keep" and
    "retry" for a policy that cannot tell a right y1 from a wrong one (a faithful keep's Delta is 0)."""
    pairs = {True: [0, 0], False: [0, 0]}  # y1 right/wrong -> [other first attempt right, pairs]
    retries = {True: [0, 0], False: [0, 0]}  # y1 right/wrong -> [retry right, retries]
    firsts_right, chains_seen = 0, 0
    for line in samples.read_text().splitlines():
        chains = json.loads(line)["chains"]
        firsts = [bool(a["correct"]) for a, _ in chains]
        firsts_right, chains_seen = firsts_right + sum(firsts), chains_seen + len(firsts)
        for j, right in enumerate(firsts):
            others = firsts[:j] + firsts[j + 1:]
            pairs[right][0] += sum(others)
            pairs[right][1] += len(others)
        for a, b in chains:
            if not is_keep(b["text"]):
                retries[bool(a["correct"])][0] += bool(b["correct"])
                retries[bool(a["correct"])][1] += 1
    out = {f"{kind}|{'R' if y1 else 'W'}": counts[y1][0] / max(counts[y1][1], 1)
           for kind, counts in (("retry", retries), ("fresh", pairs)) for y1 in (True, False)}
    t1 = firsts_right / max(chains_seen, 1)
    return out | {"t1": t1, "retry-delta": t1 * (out["retry|R"] - 1) + (1 - t1) * out["retry|W"]}


@dataclass(frozen=True)
class BaseBand:
    """Where a base must land on the selection problems to be kept (percentage points; see above)."""

    t1: tuple[float, float] = (30.0, 70.0)
    delta: tuple[float, float] = (-5.0, -1.0)
    min_retry_delta: float = -5.0
    max_fix_gap: float = 8.0
    problems: int = 2000
    tries_per_seed: int = 3  # bases built for one requested seed before giving up

    def misses(self, probe: dict[str, float]) -> list[str]:
        """Why a probed base (values in %) is outside the band; empty when it is inside."""
        why = []
        if not self.t1[0] <= probe["t1"] <= self.t1[1]:
            why.append(f"t1 {probe['t1']:.1f} outside {self.t1[0]:g}..{self.t1[1]:g}")
        if not self.delta[0] <= probe["delta"] <= self.delta[1]:
            why.append(f"Delta {probe['delta']:+.1f} outside {self.delta[0]:g}..{self.delta[1]:g}")
        if probe["retry-delta"] < self.min_retry_delta:
            why.append(f"retry-delta {probe['retry-delta']:+.1f} below {self.min_retry_delta:g}")
        if abs(probe["f"] - probe["t1"]) > self.max_fix_gap:
            why.append(f"fix rate {probe['f']:.1f} more than {self.max_fix_gap:g} from t1 {probe['t1']:.1f}")
        return why


def probe_base(base: Path, out: Path, problems: int = 2000) -> dict[str, float]:
    """The base's two-attempt eval on `problems` selection problems (4 samples each, `make demo`'s
    decoding), in %: t1, t2, delta, i->c, c->i, f, changed and retry-delta. Reused when `out` has it."""
    from score_cli.demo import ensure_eval

    done = out / "probe.json"
    if done.exists():
        return json.loads(done.read_text())
    data = write_problems(out / "select.jsonl", selection_problems(problems))
    metrics = ensure_eval(base, out / "eval", data=str(data), limit=problems)
    keys = {"t1": "accuracy@t1", "t2": "accuracy@t2", "delta": "delta(t1,t2)", "i->c": "i->c(t1,t2)",
            "c->i": "c->i(t1,t2)", "f": "fixed|changed(t1,t2)", "changed": "answer_changed(t1,t2)"}
    row = {name: 100 * metrics[key]["value"] for name, key in keys.items()}
    row["retry-delta"] = 100 * retry_quality(out / "eval" / "samples.jsonl")["retry-delta"]
    row = {k: round(v, 2) for k, v in row.items()}
    atomic_write_json(done, row)
    return row


def choose_bases(root: Path, seeds: Sequence[int], band: BaseBand, build: Callable[[Path, int], Path],
                 on_step: Callable[[str], None] = log.info) -> tuple[dict[int, Path], dict[str, Any]]:
    """One base in the band for each of `seeds`: seed s's base (ROOT/seedS/base, built by `build(dir,
    s)`) when its probe is in the band, else the next seed no one has used (one past the largest seen),
    up to `band.tries_per_seed` bases per requested seed. Returns {kept seed: base} in order and the
    record of every try (also written to ROOT/base_selection.json), so a reader sees what was rejected."""
    kept: dict[int, Path] = {}
    tries: list[dict[str, Any]] = []
    record = {"band": asdict(band), "requested": list(seeds), "tries": tries}
    used = set(seeds)
    for requested in seeds:
        seed = requested
        for attempt in range(band.tries_per_seed):
            base = build(root / f"seed{seed}" / "base", seed)
            on_step(f"base seed {seed}: probing on {band.problems} selection problems")
            probe = probe_base(base, root / f"seed{seed}" / "base-selection", band.problems)
            why = band.misses(probe)
            tries.append({"seed": seed, "for": requested, "probe": probe, "kept": not why, "why": why})
            if not why:
                kept[seed] = base
            atomic_write_json(root / "base_selection.json", record | {"kept": list(kept)})
            if not why:
                on_step(f"base seed {seed} kept: {_summary(probe)}")
                break
            on_step(f"base seed {seed} rejected ({'; '.join(why)}): {_summary(probe)}")
            if attempt + 1 < band.tries_per_seed:
                seed = max(used) + 1  # every seed requested or tried is in `used`
                used.add(seed)
        else:
            raise ScoreError(f"no base in the band for seed {requested} after {band.tries_per_seed} tries (see "
                             f"{root / 'base_selection.json'}): widen the band, allow more tries, or change the "
                             "base data")
    return kept, record | {"kept": list(kept)}


def _summary(probe: dict[str, float]) -> str:
    return (f"t1 {probe['t1']:.1f}, Delta {probe['delta']:+.1f}, f {probe['f']:.1f}, "
            f"retry-delta {probe['retry-delta']:+.1f}")
