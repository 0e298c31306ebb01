"""Experiments on the toy world's base model (docs/experiments.md records every run of this script).

    python scripts/toy_lab.py build OUT --seed 0 --data '{"retry_marker": "Redo:"}' --training '{"steps": 1500}'
    python scripts/toy_lab.py probe OUT [OUT ...] [--validation 300 [--rl-seed S]]  # held-out training problems
    python scripts/toy_lab.py anatomy OUT/probe-eval/samples.jsonl   # where a changed y2 leaves a wrong y1
    python scripts/toy_lab.py modes OUT/probe-eval/samples.jsonl     # keeps, copies, redos, rewrites by y1 right/wrong
    python scripts/toy_lab.py fresh OUT/probe-eval/samples.jsonl     # a retry against a fresh first attempt
    python scripts/toy_lab.py build OUT --snapshots 2400,2800 ...; probe OUT/step-2400 --select 300  # choose before RL
    python scripts/toy_lab.py extend OUT OUT2 --steps 600 --lr 1e-4 --data JSON  # more conversation steps
    python scripts/toy_lab.py imitator '{"short_copy": true}'         # what a perfect imitator of the data scores
    python scripts/toy_lab.py verify OUT [OUT ...]          # the base's judging skill (AUC)
    python scripts/toy_lab.py verify-drill OUT --steps 800  # can more verification data teach it?
    python scripts/toy_lab.py check-drill OUT|fresh --task conversation --labels verdict  # can it learn a check?
    python scripts/toy_lab.py nines-drill OUT|fresh --steps 600 [--temperature 1.0]  # can it learn casting out nines?
    python scripts/toy_lab.py decisions OUT/probe-eval/samples.jsonl  # does attempt 2 act on its check?
    python scripts/toy_lab.py baseline-snr --t1 0.75 --redo 0.85     # Stage II's keep/redo signal under four baselines
    python scripts/toy_lab.py rl BASE OUT --steps 40 --seed 0 --methods SCoRe,"Stage II only" --set beta1=0.05
    python scripts/toy_lab.py rl BASE OUT --validation 300 ...   # probe on held-out training problems

`rl` trains methods of `make repro` (its names, or "Stage I" alone) from BASE with recipes/toy.yaml
changed by `--set`, and probes each (Stage I too).
`build` trains a toy base model with the given `ToyData` / `ToyTraining` fields (JSON; solver fields
as {"first": {"drop": 0.2, "slip": 0.05}}). `probe` evaluates models like `make demo` does (300
held-out test problems x 4 samples at temperature 1, two attempts) and prints the columns that say
whether self-correction is learnable from them: t1, t2, Delta, i->c, c->i, the answer-change rate
and the fix rate f (right among changed answers after a wrong first attempt). Results also go to
OUT/probe.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from score_cli.tasks.toy_task import CHECKS
from score_cli.toy_selection import is_keep as _is_keep
from score_cli.toy_selection import retry_quality as fresh  # the name the log's commands use
from score_cli.toy_selection import selection_problems
from score_cli.toy_selection import write_problems as _write_problems

COLUMNS = (("t1", "accuracy@t1"), ("t2", "accuracy@t2"), ("delta", "delta(t1,t2)"), ("i->c", "i->c(t1,t2)"),
           ("c->i", "c->i(t1,t2)"), ("changed", "answer_changed(t1,t2)"), ("fixed|wrong", "fixed|wrong(t1,t2)"),
           ("broken|right", "broken|right(t1,t2)"), ("f", "fixed|changed(t1,t2)"))


def retry_accuracy(samples: Path, review_kind: str = "lines") -> dict[str, float]:
    """How good a *changed* second attempt is after a right and after a wrong first attempt. For an
    independent retry the two are equal (the solver's accuracy); a retry that leans on y1 is right
    far more often after a right y1 than after a wrong one. With a review in attempt 2 (`ToyData.review`),
    also how right its check of y1 is: "rev" the share of checks equal to the true one, "rev|R" of
    right first attempts checked all "ok", "rev|W" of wrong ones given at least one "no"."""
    from score_cli.tasks.toy_task import REVIEW_HEAD, solution_part, split_review

    check = CHECKS[review_kind]

    right, wrong = [0, 0], [0, 0]
    seen = {True: [0, 0], False: [0, 0]}  # first attempt right/wrong -> [answer changed, all]
    checks = {"rev": [0, 0], "rev|R": [0, 0], "rev|W": [0, 0]}
    for line in samples.read_text().splitlines():
        row = json.loads(line)
        for a, b in row["chains"]:
            seen[a["correct"]][0] += a["answer"] != b["answer"]
            seen[a["correct"]][1] += 1
            if b["text"].startswith(REVIEW_HEAD):
                x, op, y = _operands(row["question"])
                said = split_review(b["text"])[0]
                checks["rev"][0] += said == check(a["text"], x, op, y)
                checks["rev"][1] += 1
                key, hit = ("rev|R", " no" not in said) if a["correct"] else ("rev|W", " no" in said)
                checks[key][0] += hit
                checks[key][1] += 1
            if solution_part(a["text"]) != solution_part(b["text"]):
                counts = right if a["correct"] else wrong
                counts[0] += b["correct"]
                counts[1] += 1
    out = {"new|R": right[0] / max(right[1], 1), "new|W": wrong[0] / max(wrong[1], 1),
           "chg|R": seen[True][0] / max(seen[True][1], 1), "chg|W": seen[False][0] / max(seen[False][1], 1)}
    return out | ({k: v[0] / max(v[1], 1) for k, v in checks.items()} if checks["rev"][1] else {})


def _operands(question: str) -> tuple[int, str, int]:
    """(a, op, b) of a toy question "482+397=?"."""
    body = question.removesuffix("=?")
    op = "+" if "+" in body else "-"
    a, b = body.split(op)
    return int(a), op, int(b)


def toy_settings(data: dict, training: dict):
    """(ToyData, ToyTraining) from their JSON fields; solvers as {"first": {"drop": 0.2, ...}}."""
    from score_cli.tasks.toy_task import NoisySolver
    from score_cli.toy_model import ToyData, ToyTraining

    solvers = {k: NoisySolver(**data[k]) for k in ("first", "second", "noisy") if k in data}
    return ToyData(**{**data, **solvers}), ToyTraining(**training)


def build(out: str, seed: int, data: dict, training: dict, threads: int = 1, snapshots: tuple[int, ...] = ()) -> None:
    """Train a base; with `snapshots`, also save the model at those steps into OUT/step-N (each a
    loadable toy model with the final record plus its step), to probe a base along its training."""
    from score_cli.toy_model import RECORD_FILE, build_char_tokenizer, train_toy_model

    toy_data, toy_training = toy_settings(data, training)
    tok = build_char_tokenizer()

    def on_step(step, model) -> None:
        if step in snapshots:
            model.save_pretrained(Path(out) / f"step-{step}")
            tok.save_pretrained(Path(out) / f"step-{step}")

    train_toy_model(out, seed=seed, data=toy_data, training=toy_training, threads=threads,
                    on_step=on_step if snapshots else None)
    for step in snapshots:
        record = json.loads((Path(out) / RECORD_FILE).read_text()) | {"snapshot_step": step}
        (Path(out) / f"step-{step}" / RECORD_FILE).write_text(json.dumps(record, indent=1))


def extend(base: str, out: str, steps: int, lr: float, data: dict, snapshots: tuple[int, ...], seed: int = 0,
           batch_size: int = 16) -> None:
    """Train a built base further on conversations of `data` at a constant `lr` for `steps` steps,
    saving OUT/step-N at `snapshots` (and OUT itself at the end): does more of the conversation
    phase, or other data after it, move the base's retry toward a fresh first attempt?"""
    import random

    from transformers import AutoModelForCausalLM

    from score_cli.toy_model import RECORD_FILE, build_char_tokenizer, train_on

    toy_data = toy_settings(data, {})[0]
    tok = build_char_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(base)
    model.set_attn_implementation("eager")
    record = json.loads((Path(base) / RECORD_FILE).read_text())

    def after(step: int, loss: float, _tokens: int) -> None:
        if step % 50 == 0:
            print(f"step {step} loss {loss:.4f}", flush=True)
        if step in snapshots or step == steps:
            target = Path(out) / f"step-{step}" if step in snapshots else Path(out)
            model.save_pretrained(target)
            tok.save_pretrained(target)
            (target / RECORD_FILE).write_text(json.dumps(
                record | {"extended": {"from": base, "steps": step, "lr": lr, "data": data}}, indent=1))

    train_on(model, tok, toy_data, random.Random(f"toy-extend/{seed}"), steps=steps, lr=lr, batch_size=batch_size,
             on_step=after)


def probe(model: str, seed: int = 0, validation: int = 0, select: int = 0, limit: int = 300,
          rl_seed: int = 0) -> dict[str, float]:
    """The probe on the test split, or with `validation` > 0 on that many training problems: those
    an RL run with seed `rl_seed` and `heldout_problems` = `validation` holds out (`rl --validation`),
    so a base is judged on the same problems as the runs from it, and the test split is kept for tables.
    (The base itself trains on problems drawn at random from the training split: it has seen about
    1% of them.) `limit`: problems evaluated, 4 samples each (300, like `make demo`'s evaluations;
    more pin a base's Delta down better: its standard error is about 1.5 points at 300)."""
    from score_cli.demo import ensure_eval

    kind, data = "probe", None
    if select:
        kind, data = "select-probe", str(_write_problems(Path(model) / "select.jsonl", selection_problems(select)))
    elif validation:
        held = validation_problems(validation, rl_seed)
        suffix = str(rl_seed) if rl_seed else ""  # seed 0 keeps the names of the log's earlier runs
        kind, data = f"val{suffix}-probe", str(_write_problems(Path(model) / f"validation{suffix}.jsonl", held))
    if limit != 300:
        kind = f"{kind}{limit}"
    metrics = ensure_eval(Path(model), Path(model) / f"{kind}-eval", seed=seed, data=data, limit=limit)
    row = {name: metrics[key]["value"] for name, key in COLUMNS}
    row.update(retry_accuracy(Path(model) / f"{kind}-eval" / "samples.jsonl", recorded_review_kind(Path(model))))
    if select:
        row.update(fresh(Path(model) / f"{kind}-eval" / "samples.jsonl"))
    (Path(model) / f"{kind}.json").write_text(json.dumps(row, indent=1))
    return row


def validation_problems(n: int, rl_seed: int) -> list:
    """The `n` training problems that an RL run on the toy task with seed `rl_seed` and
    `heldout_problems` = n holds out of its training (the trainer's `heldout_split`)."""
    from score_cli.tasks.toy_task import toy_problems
    from score_cli.trainers import heldout_split

    return heldout_split(toy_problems("train", seed=rl_seed), n, rl_seed)[1]


def anatomy(samples: Path) -> dict[str, float]:
    """Where a changed second attempt departs from a wrong first one, as shares of the wrong first
    attempts: y2's first line that differs from y1's is before y1's first wrong line ("early": a right
    line redone wrong), at it ("at", right or wrong once redone) or after it ("late": the wrong line
    kept). A model that slips more in attempt 2 than its data shows up in "early" and "at/W"."""
    from collections import Counter

    from score_cli.tasks.toy_task import GOLD, first_different_line

    counts, n = Counter(), 0
    for line in samples.read_text().splitlines():
        row = json.loads(line)
        gold = GOLD.solve(*_operands(row["question"]))
        for a, b in row["chains"]:
            if a["correct"]:
                continue
            n += 1
            if a["answer"] == b["answer"]:
                continue
            e, d = first_different_line(a["text"], gold), first_different_line(a["text"], b["text"])
            where = "early" if d < e else ("at" if d == e else "late")
            counts[f"{where}/{'R' if b['correct'] else 'W'}"] += 1
    return {k: counts[k] / max(n, 1) for k in ("early/R", "early/W", "at/R", "at/W", "late/R", "late/W")}


def modes(samples: Path, marker: str = "Redo:") -> dict[str, tuple[float, float]]:
    """What each second attempt is, split by y1 right (R) or wrong (W): "keep" (only a final-answer
    line, `ToyData.short_copy`'s keep), "copy" (y1 word for word: a copy, or a retry that came out
    the same), "redo" (opens with `marker`) or "new" (any other rewrite: a retry, or a copy that
    went astray). Each as (share of the chains with
    that y1, how often attempt 2 is then right). Where the data's copies and new tries are 50/50, a
    model whose "new" share is far above the data's rewrites what it was meant to keep."""
    cells: dict[str, list[int]] = {}
    total = {"R": 0, "W": 0}
    for line in samples.read_text().splitlines():
        for a, b in json.loads(line)["chains"]:
            y1 = "R" if a["correct"] else "W"
            text = b["text"].strip()
            kind = ("keep" if _is_keep(text) else "copy" if text == a["text"].strip()
                    else "redo" if text.startswith(marker) else "new")
            cell = cells.setdefault(f"{y1}/{kind}", [0, 0])
            cell[0] += 1
            cell[1] += bool(b["correct"])
            total[y1] += 1
    return {k: (v[0] / total[k[0]], v[1] / v[0]) for k, v in sorted(cells.items())}


def rechecks(samples: Path) -> dict[str, str]:
    """How a base with `ToyData.recheck` uses its comparison, split by y1 right (R) or wrong (W):
    the share of second attempts that compare ("cmp"), of those the share whose verdict is the true
    one for the answers written ("ok": "same" exactly when the new answer is y1's), and how often
    attempt 2 is right after "same" and after "differ", and by kind of second attempt (a one-line
    keep, a recheck, a plain retry), with the counts. The "step:" cells follow the comparison one
    step at a time (`_recheck_steps`), to say where it goes wrong."""
    from score_cli.math_grader import extract_answer
    from score_cli.toy_model import stated_answer

    cells: dict[str, list[int]] = {}

    def add(key: str, hit: bool) -> None:
        cells.setdefault(key, [0, 0])
        cells[key][0] += hit
        cells[key][1] += 1
    for line in samples.read_text().splitlines():
        for a, b in json.loads(line)["chains"]:
            side = "R" if a["correct"] else "W"
            head, found, rest = b["text"].partition("\nCompare:\n")
            add(f"cmp|{side}", bool(found))
            kind = "recheck" if found else "keep" if len(b["text"].splitlines()) == 1 else "retry"
            add(f"by kind|{side},{kind}", b["correct"])
            if not found:
                continue
            verdict = next((x for x in rest.splitlines() if x in ("same", "differ")), None)
            y1_answer = extract_answer(a["text"])
            try:
                new_answer = stated_answer(head)
            except ValueError:  # the new try ended without a final-answer line
                new_answer = None
            truth = None if new_answer is None else "same" if new_answer == y1_answer else "differ"
            add(f"ok|{side}", verdict == truth)
            add(f"right|{side},{verdict}", b["correct"])
            _recheck_steps(rest.splitlines(), new_answer, y1_answer, verdict, add)
    return {k: f"{100 * h / n:.1f}% ({n})" for k, (h, n) in sorted(cells.items())}


def _recheck_steps(lines: list[str], new_answer: str | None, y1_answer: str | None, verdict: str | None,
                   add) -> None:
    """Each step of a sampled comparison (`lines`, after "Compare:") against what it should be given
    the steps before it: the pair line restating the new answer and y1's, the digit lines given the
    pair as written, and the verdict given the digit lines as written (any nonzero result: "differ")."""
    from score_cli.toy_model import compare_answers

    pair = lines[0].split(" ") if lines else []
    if len(pair) != 2:
        return
    if new_answer is not None:
        add("step: pair, new answer", pair[0] == new_answer)
    add("step: pair, y1's answer", pair[1] == y1_answer)
    if not (pair[0].isdigit() and pair[1].isdigit()):
        return
    digits = compare_answers(pair[0], pair[1]).splitlines()[2:-1]
    add("step: digit lines given the pair", lines[1:len(digits) + 1] == digits)
    written = [x for x in lines[1:] if "=" in x][:len(digits)]
    if written:
        follows = "same" if all(x.endswith("=0") for x in written) else "differ"
        add("step: verdict given the digit lines", verdict == follows)


def imitator(data: dict, n: int = 20000, seed: int = 0) -> dict[str, float]:
    """What a perfect imitator of `data` (ToyData fields, as `build --data`) would score: `n` of its
    conversations with a second attempt, graded by the toy task like a probe (t1, t2, delta, chg|R,
    chg|W, f). The bar a base built on that data is measured against."""
    import random

    from score_cli.tasks import Problem
    from score_cli.tasks.toy_task import ToyTask

    toy_data = toy_settings({**data, "two_turn": 1.0, "verify": 0.0, "noisy_first": 0.0}, {})[0]
    rng = random.Random(f"imitator/{seed}")
    rows = [toy_data.conversation(rng) for _ in range(n)]
    problems = [Problem(id="", question=r["question"], answer=r["answer"]) for r in rows]
    first, second = (ToyTask().grade(problems, [r[k] for r in rows]) for k in ("y1", "y2"))
    chains = {True: [], False: []}  # y1 right/wrong -> [(answer changed, y2 right)]
    for g1, g2 in zip(first, second, strict=True):
        chains[g1.correct].append((g1.answer != g2.answer, g2.correct))
    changed_after_wrong = [right for changed, right in chains[False] if changed]
    t1, t2 = len(chains[True]) / n, sum(g.correct for g in second) / n
    return {"t1": t1, "t2": t2, "delta": t2 - t1,
            "chg|R": sum(c for c, _ in chains[True]) / max(len(chains[True]), 1),
            "chg|W": len(changed_after_wrong) / max(len(chains[False]), 1),
            "f": sum(changed_after_wrong) / max(len(changed_after_wrong), 1)}


def _verify_question(tok, problem, y1: str) -> list[int]:
    """[x, y1, EOS, verification question]: the ids after which the verdict's first token comes."""
    from score_cli.rollout import end_of_turn_id, first_attempt_ids, instruction_ids
    from score_cli.tasks.toy_task import ToyTask
    from score_cli.toy_model import VERIFY_INSTRUCTION

    y1_ids = tok(y1, add_special_tokens=False)["input_ids"]
    return [*first_attempt_ids(tok, ToyTask(), problem), *y1_ids, end_of_turn_id(tok),
            *instruction_ids(tok, VERIFY_INSTRUCTION)]


def _p_yes(lm, tok, inputs: list[list[int]], batch: int = 128) -> list[float]:
    """P("y"), the verdict's first token being "yes", after each of `inputs` (left-padded batches)."""
    import torch

    from score_cli.rollout import left_pad

    y_id, out = tok("y", add_special_tokens=False)["input_ids"][0], []
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            ids, mask = left_pad(inputs[start : start + batch], tok.pad_token_id)
            out += torch.softmax(lm(input_ids=ids, attention_mask=mask).logits[:, -1].float(), -1)[:, y_id].tolist()
    return out


def _auc(scores: list[float], right: list[bool]) -> float:
    """How often a right first attempt scores above a wrong one (ties count half); 0.5 is chance."""
    pr = [q for q, r in zip(scores, right, strict=True) if r]
    pw = [q for q, r in zip(scores, right, strict=True) if not r]
    return sum((x > y) + 0.5 * (x == y) for x in pr for y in pw) / max(len(pr) * len(pw), 1)


def verify(model: str) -> dict[str, float]:
    """The base's latent judging skill: on the first attempts of `probe`'s samples, ask the toy's
    verification question and read the greedy verdict. P(yes | y1 right) and P(yes | y1 wrong); a
    model that can tell them apart holds the signal Stage II needs to learn *when* to change."""
    import torch
    from transformers import AutoModelForCausalLM

    from score_cli.rollout import Decoding, HFGenerator
    from score_cli.tasks import Problem
    from score_cli.toy_model import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(model).eval()
    inputs, right = [], []
    for line in (Path(model) / "probe-eval" / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        problem = Problem(id="", question=row["question"], answer="")
        for a, _ in row["chains"]:
            inputs.append(_verify_question(tok, problem, a["text"]))
            right.append(a["correct"])
    torch.manual_seed(0)
    gen = HFGenerator(lm, tok, Decoding(max_new_tokens=4, temperature=0.0, batch_size=128), reuse_cache=False)
    says_yes = [tok.decode(o, skip_special_tokens=True).startswith("yes") for o in gen(inputs)[0]]
    p_yes = _p_yes(lm, tok, inputs)  # does it rank right first attempts above wrong ones (AUC)?

    def mean_when(values: list, is_right: bool) -> float:
        picked = [v for v, r in zip(values, right, strict=True) if r == is_right]
        return sum(picked) / max(len(picked), 1)

    row = {"yes|R": mean_when(says_yes, True), "yes|W": mean_when(says_yes, False),
           "accuracy": sum(y == r for y, r in zip(says_yes, right, strict=True)) / len(right),
           "P(yes)|R": mean_when(p_yes, True), "P(yes)|W": mean_when(p_yes, False), "AUC": _auc(p_yes, right)}
    print(f"{model} | " + " | ".join(f"{k} {100 * v:.1f}" for k, v in row.items()), flush=True)
    return row


def verify_drill(model: str, steps: int, lr: float, every: int = 100, n: int = 300) -> None:
    """Can the judging skill be taught at all? Train `model` further on verification conversations
    only (the solver's first attempts, drop 0.1 / slip 0.15) and print the verdict's AUC on `n`
    fresh solver attempts at test problems every `every` steps. Nothing is saved."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    from score_cli.tasks.toy_task import GOLD, NoisySolver, toy_problems
    from score_cli.toy_model import ToyData, _batches, build_char_tokenizer, verdict

    torch.set_num_threads(1)
    tok, solver = build_char_tokenizer(), NoisySolver(drop=0.1, slip=0.15)
    lm = AutoModelForCausalLM.from_pretrained(model)
    rng, inputs, right = random.Random(0), [], []
    for p in toy_problems("test", n=n):
        a, op, b = p.meta["a"], p.meta["op"], p.meta["b"]
        y1 = solver.solve(a, op, b, rng)
        inputs.append(_verify_question(tok, p, y1))
        right.append(verdict(y1, GOLD.solve(a, op, b)) == "yes")

    def auc() -> float:
        lm.eval()
        score = _auc(_p_yes(lm, tok, inputs), right)
        lm.train()
        return score

    batches = _batches(tok, ToyData(first=solver, second=solver, verify=1.0), random.Random(1), 16)
    _drill(lm, batches, torch.optim.AdamW(lm.parameters(), lr=lr), steps, every, lambda: f"AUC {auc():.3f}")


def _drill(lm, batches, opt, steps: int, every: int, report) -> None:
    """The drills' loop: `steps` optimizer steps on `batches` ((ids, mask, labels) tensors),
    printing report() at step 0 and, with the batch loss, every `every` steps."""
    import torch

    print(f"step 0: {report()}", flush=True)
    lm.train()
    for step in range(1, steps + 1):
        ids, mask, labels = next(batches)
        loss = lm(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        if step % every == 0:
            print(f"step {step}: loss {loss.item():.4f}  {report()}", flush=True)


def _check_rows(task: str, rng, labels: str, tok, wrong: float = 0.2,
                data: dict | None = None) -> tuple[list[int], list[int]]:
    """One training or test row of `check-drill`: token ids and labels (`tok`: the character
    tokenizer).

    task "conversation": a reviewed two-attempt conversation, labelled on its check (labels
    "check"), on the check's verdicts only ("verdict") or like the base's training ("all"); "block",
    "A", "B": y1 and its check lines alone ("block": as `review` writes them, "8+9=16 8+9=17 7-6=1
    no"; "A": without the subtraction, "8+9=16 8+9=17 no"; "B": the step worked again, then the
    result y1 wrote, "8+9=17 16 no": the two numbers side by side); "digits": four lines "x+y=a b
    ok|no" of random digits, "no" when a != b, a `wrong` share of the time (equality alone).
    `data`: ToyData fields over review on and two_turn 1.0; with labels "all" a row without a
    second attempt (two_turn below 1) is kept, so that a drill can mix in one-attempt rows."""
    from score_cli.toy_model import ToyData, conversation_ids

    if task == "digits":
        lines = []
        for _ in range(4):
            a = rng.randrange(10)
            b = a if rng.random() >= wrong else (a + rng.randrange(1, 10)) % 10
            lines.append(f"{rng.randrange(10)}+{rng.randrange(10)}={a} {b} {'ok' if a == b else 'no'}")
        text, start = "\n".join(lines), 0
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        toy = ToyData(**{"review": True, "two_turn": 1.0, **(data or {})})
        row = toy.conversation(rng)
        while not row["y2"] and not (task == "conversation" and labels == "all"):
            row = toy.conversation(rng)
        if task == "conversation":
            ids, assistant = conversation_ids(tok, row)
            if labels == "all":  # the base's own training labels: every assistant token
                return ids, assistant
            text = tok.decode(ids)
            start = text.index("Check:")
        else:
            check = row["y2"].split("Solution:")[0].splitlines()[1:]
            parts = [c.split(" ") for c in check]
            if task == "A":
                check = [f"{p[0]} {p[1]} {p[-1]}" for p in parts]
            if task == "B":
                check = [f"{p[1]} {p[0].partition('=')[2]} {p[-1]}" for p in parts]
            text = row["y1"] + "\n" + "\n".join(check)
            start = text.index("The final")
            ids = tok(text, add_special_tokens=False)["input_ids"]
    end = text.find("Solution:", start) if task == "conversation" else len(text)
    chars = [tok.decode([i]) for i in ids]
    assert "".join(chars) == text, "check-drill needs the character tokenizer"
    out, offset = [], 0
    for k, (i, c) in enumerate(zip(ids, chars, strict=True)):
        is_verdict = c in "on" and chars[k - 1] == " " and k + 1 < len(chars) and chars[k + 1] in "ko"
        keep = start <= offset < end and (labels == "check" or is_verdict)
        out.append(i if keep else -100)
        offset += len(c)
    return ids, out


def _drill_model(model: str, shape: dict):
    """(the character tokenizer, the model a drill trains): `model` loaded, or with "fresh" a random
    toy model of `shape` (ToyTraining fields); one thread, so that a drill can run beside a build."""
    import torch
    from transformers import AutoModelForCausalLM

    from score_cli.toy_model import ToyTraining, build_char_tokenizer, tiny_causal_lm

    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    if model == "fresh":
        t = ToyTraining(**shape)
        return tok, tiny_causal_lm(tok, hidden=t.hidden, layers=t.layers, heads=t.heads)
    return tok, AutoModelForCausalLM.from_pretrained(model)


def check_drill(model: str, task: str, labels: str, steps: int, lr: float, batch: int, every: int,
                shape: dict, wrong: float = 0.2, save: str | None = None, n: int = 200,
                data: dict | None = None) -> None:
    """Can the toy model learn the check's verdict? Train `model` (a path, or "fresh": a random toy
    model of `shape`) on `task` rows (see `_check_rows`) and print, at step 0 and every `every`
    steps, the teacher-forced verdict accuracy on `n` held-out rows: how often "ok" is the likelier
    of ok/no on lines that are right, and "no" on lines that are wrong. With `save`, the drilled
    model is saved there (with the base's toy_model.json), ready for `probe`."""
    import random

    import torch

    from score_cli.toy_model import _padded

    tok, lm = _drill_model(model, shape)
    test = [_check_rows(task, random.Random(10_000 + j), "verdict", tok, data=data) for j in range(n)]
    ok_id, no_id = tok.convert_tokens_to_ids("o"), tok.convert_tokens_to_ids("n")

    def accuracy() -> str:
        lm.eval()
        hits = {ok_id: [0, 0], no_id: [0, 0]}
        with torch.no_grad():
            for ids, marks in test:
                logits = lm(input_ids=torch.tensor([ids])).logits[0]
                for k, label in enumerate(marks):
                    if label != -100:
                        said = ok_id if logits[k - 1, ok_id] > logits[k - 1, no_id] else no_id
                        hits[label][0] += said == label
                        hits[label][1] += 1
        lm.train()
        return (f"ok|right {100 * hits[ok_id][0] / max(hits[ok_id][1], 1):.1f}  "
                f"no|wrong {100 * hits[no_id][0] / max(hits[no_id][1], 1):.1f}  ({hits[no_id][1]} wrong lines)")

    rng = random.Random(1)
    batches = iter(lambda: _padded(tok, [_check_rows(task, rng, labels, tok, wrong, data) for _ in range(batch)]), None)
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    _drill(lm, batches, opt, steps, every, accuracy)
    if save:
        import shutil

        lm.save_pretrained(save)
        tok.save_pretrained(save)
        if model != "fresh":  # the base's tokenizer, chat template and toy_model.json
            for f in Path(model).iterdir():
                if f.is_file() and f.name not in ("model.safetensors", "config.json", "generation_config.json",
                                                  "probe.json"):
                    shutil.copy(f, Path(save) / f.name)


def _nines_row(problem, solver, rng) -> tuple[str, str, bool]:
    """(context, check, y1 right) for one problem: the question, the solver's y1 and "Check:"; the
    check is `toy_task.nines`'s lines, without its head and end."""
    from score_cli.tasks.toy_task import nines
    from score_cli.toy_model import stated_answer

    a, op, b = problem.meta["a"], problem.meta["op"], problem.meta["b"]
    y1 = solver.solve(a, op, b, rng)
    check = nines(y1, a, op, b).split("\n")[1:-1]
    return f"{problem.question}\n{y1}\nCheck:\n", "\n".join(check), stated_answer(y1) == problem.answer


def nines_drill(model: str, steps: int, lr: float, batch: int, every: int, shape: dict, n: int = 200,
                temperature: float = 0.0) -> None:
    """Can the toy model learn casting out nines? Train `model` ("fresh": a random toy model of
    `shape`) on rows question, solver y1, "Check:", check lines (labels on the check only) and print
    every `every` steps, on `n` test problems with fresh solver attempts, the check written greedily
    (or sampled at `temperature`): exactly right, its verdict "no" after a wrong y1 and after a right one."""
    import random

    import torch
    from transformers import GenerationConfig

    from score_cli.rollout import generate_batch
    from score_cli.tasks.toy_task import NoisySolver, toy_problems
    from score_cli.toy_model import _padded

    tok, lm = _drill_model(model, shape)
    solver = NoisySolver(drop=0.1, slip=0.15)
    rng = random.Random(0)
    test = [_nines_row(p, solver, rng) for p in toy_problems("test", n=n)]
    inputs = [tok(c, add_special_tokens=False)["input_ids"] for c, _, _ in test]
    train_problems = toy_problems("train")
    sampled = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature else {"do_sample": False}
    gen = GenerationConfig(max_new_tokens=110, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **sampled)

    def report() -> str:
        lm.eval()
        with torch.no_grad():
            outs = generate_batch(lm, inputs, pad_id=tok.pad_token_id, eos_ids=[tok.eos_token_id],
                                  generation_config=gen)[0]
        lm.train()
        exact = no_w = no_r = w = r = lines_ok = lines = 0
        for (_, check, right), o in zip(test, outs, strict=True):
            text = tok.decode(o, skip_special_tokens=True).split("\n\n")[0].strip()
            said = text.splitlines()[:5]
            exact += text.startswith(check)
            for got, want in zip(said, check.splitlines(), strict=False):
                lines += 1
                lines_ok += got == want
            verdict_no = len(said) >= 5 and said[4].endswith(" no")
            if right:
                r += 1
                no_r += verdict_no
            else:
                w += 1
                no_w += verdict_no
        return (f"exact {100 * exact / len(test):.1f}  lines {100 * lines_ok / max(lines, 1):.1f}  "
                f"no|wrong {100 * no_w / max(w, 1):.1f}  no|right {100 * no_r / max(r, 1):.1f}  ({w} wrong)")

    def rows():
        while True:
            picked = []
            while len(picked) < batch:
                c, check, _ = _nines_row(rng.choice(train_problems), solver, rng)
                ci = tok(c, add_special_tokens=False)["input_ids"]
                ki = tok(check + "\n\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                picked.append((ci + ki, [-100] * len(ci) + ki))
            yield _padded(tok, picked)

    _drill(lm, rows(), torch.optim.AdamW(lm.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01),
           steps, every, report)


def baseline_snr(t1: float, redo_right: float, keep_slip: float, a: float, b: float, d: float, alpha: float = 10.0,
                 prompts: int = 16, steps: int = 4000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """A one-step model of Stage II's keep-or-redo decision, to compare baselines before any RL run.

    Each first attempt is right with probability `t1` and carries a latent signal s ~ N(d * wrong, 1)
    (what the model can read in y1). Attempt 2 redoes with probability sigmoid(a + b s), a redo is
    right with probability `redo_right`, a keep restates y1 and slips with probability `keep_slip`; its
    return is r2 + alpha (r2 - r1). For each way of drawing a group of 4 second attempts per prompt
    ("rloo" 4 first attempts x 1, the recipe; "cond" the same with the baseline over the rollouts whose
    r(y1) is equal, as `condition_baseline`, the batch's when none in the group; "pair" 2 x 2 and
    "tree" 1 x 4, the baseline over the second attempts of the same y1), the mean and standard
    deviation over `steps` simulated steps of the policy gradient along a ("redo more") and along b
    ("redo when y1 looks wrong"): their ratio is the signal-to-noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for mode, g1, g2 in (("rloo", 4, 1), ("cond", 4, 1), ("pair", 2, 2), ("tree", 1, 4)):
        grads = []
        for _ in range(steps):
            right1 = rng.random((prompts, g1)) < t1
            sig = rng.normal(0.0, 1.0, (prompts, g1)) + d * ~right1
            right1, sig = np.repeat(right1, g2, 1), np.repeat(sig, g2, 1)
            p_redo = 1.0 / (1.0 + np.exp(-(a + b * sig)))
            redo = rng.random(p_redo.shape) < p_redo
            r2 = np.where(redo, rng.random(p_redo.shape) < redo_right, right1 & (rng.random(p_redo.shape) >= keep_slip))
            r1 = right1.astype(float)
            ret = r2.astype(float) + alpha * (r2 - r1)
            n = ret.shape[1]
            if mode == "rloo":
                adv = ret - (ret.sum(1, keepdims=True) - ret) / (n - 1)
            elif mode == "cond":
                adv = np.zeros_like(ret)
                for v in (0.0, 1.0):
                    same = r1 == v
                    count, total = same.sum(1, keepdims=True), (ret * same).sum(1, keepdims=True)
                    batch = ((ret * same).sum() - ret) / max(same.sum() - 1, 1)  # alone in its group: the batch's
                    others = np.where(count > 1, (total - ret) / np.maximum(count - 1, 1), batch)
                    adv = np.where(same, ret - others, adv)
            else:
                grouped = ret.reshape(prompts, g1, g2)
                adv = (grouped - (grouped.sum(2, keepdims=True) - grouped) / (g2 - 1)).reshape(prompts, -1)
            score = redo - p_redo  # d log pi(decision) / d logit
            grads.append(((adv * score).mean(), (adv * score * sig).mean()))
        g = np.array(grads)
        out[mode] = (float(g[:, 0].mean() / g[:, 0].std()), float(g[:, 1].mean() / g[:, 1].std()))
    return out


def decisions(paths: list[str]) -> None:
    """Does a reviewed second attempt act on its check? For each evaluation's samples (two
    attempts, `ToyData.review` with `retry_marker` "Redo:", or `review_kind` "nines" with short
    copies), the chains split by y1 right/wrong, by whether the sampled check says "no" anywhere,
    and by whether the new attempt opens with "Redo:" (else it keeps y1; without the marker, whether
    it is a short copy): how many, and how often attempt 2 is right. A model that acts on its
    check redoes after "no" and keeps after "ok"; the base does neither more than the other."""
    from score_cli.files import read_jsonl
    from score_cli.tasks.toy_task import split_review

    for path in paths:
        cells: dict[tuple[str, str, str], list[int]] = {}
        chains = [(y1, y2, *split_review(y2["text"])) for row in read_jsonl(path) for y1, y2 in row["chains"]]
        # With the retry marker a new try opens with "Redo:" and anything else keeps y1; without it
        # (`review_kind` "nines" on the default data) a keep is a short copy, y1's final-answer line.
        marker = any(solution.lstrip().startswith("Redo:") for *_, solution in chains)
        for y1, y2, check, solution in chains:
            opening = solution.lstrip()
            keep = not opening.startswith("Redo:") if marker else opening.startswith("The final answer")
            key = ("right" if y1["correct"] else "wrong", "no" if " no" in check else "ok",
                   "keep" if keep else "redo")
            cell = cells.setdefault(key, [0, 0])
            cell[0] += 1
            cell[1] += bool(y2["correct"])
        print(path)
        print("y1 | check | attempt 2 | chains | attempt 2 right %")
        for key in sorted(cells):
            n, right = cells[key]
            print(f"{key[0]} | {key[1]} | {key[2]} | {n} | {100 * right / n:.1f}")


def curve(out: str, seed: int, data: dict, training: dict, every: int, n: int = 100) -> None:
    """Train like `build` and print attempt 1's accuracy (greedy and sampled) on `n` test problems
    every `every` steps: how fast the model learns the arithmetic itself."""
    import torch

    from score_cli.rollout import Decoding, HFGenerator, first_attempt_ids, run_attempts
    from score_cli.tasks.toy_task import ToyTask, toy_problems
    from score_cli.toy_model import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.padding_side = "left"
    task, problems = ToyTask(), toy_problems("test", n=n)
    first = [first_attempt_ids(tok, task, p) for p in problems]

    def on_step(step, model) -> None:
        if step % every:
            return
        accs = []
        for temperature in (0.0, 1.0):
            torch.manual_seed(0)
            gen = HFGenerator(model, tok, Decoding(max_new_tokens=100, temperature=temperature, batch_size=n))
            rollouts = run_attempts(gen, first, turns=1, instruction=[], eos_id=tok.eos_token_id)
            texts = [tok.decode(r.outputs[0], skip_special_tokens=True) for r in rollouts]
            accs.append(sum(g.correct for g in task.grade(problems, texts)) / n)
        print(f"step {step}: greedy {100 * accs[0]:.0f}%  sampled {100 * accs[1]:.0f}%", flush=True)

    from score_cli.toy_model import train_toy_model

    toy_data, toy_training = toy_settings(data, training)
    train_toy_model(out, seed=seed, data=toy_data, training=toy_training, on_step=on_step, log_every=0)


def recorded_review_kind(model: Path) -> str:
    """The check a model's second attempts open with ("lines" unless its toy data says otherwise):
    from its own toy record (a base), else from that of the base its run record names (a stage's
    output), so that a probe of a trained model reads its second attempts as its base wrote them."""
    from score_cli.models import read_run_record
    from score_cli.toy_model import RECORD_FILE

    record = model / RECORD_FILE
    if not record.exists():
        run = read_run_record(model) or {}
        base = run.get("base_model")
        record = Path(run.get("cwd", ".")) / base / RECORD_FILE if base else record
    built = json.loads(record.read_text()).get("data", {}) if record.exists() else {}
    return built.get("review_kind", "lines")


def validation_probe(model: Path, stage_dir: Path, seed: int, out: Path | None = None,
                     review_kind: str | None = None) -> dict[str, float]:
    """`probe`'s columns on the validation split: the training problems the RL run in `stage_dir`
    held out (`heldout_problems`, never trained on), 4 samples each like the test probe, evaluated
    into `out` (default MODEL/val-eval). Settings are chosen on these; the test split is kept for
    the final table. `review_kind`: the check the second attempts open with, if any (`ToyData`;
    default: the one the model's base was built with, `recorded_review_kind`)."""
    from score_cli.demo import ensure_eval
    from score_cli.models import read_run_record
    from score_cli.tasks.toy_task import toy_problems

    out = out or model / "val-eval"
    problems = out.parent / "validation.jsonl"
    if not problems.exists():
        ids = set(read_run_record(stage_dir)["heldout"]["ids"])
        _write_problems(problems, [p for p in toy_problems("train", seed=seed) if p.id in ids])
    metrics = ensure_eval(model, out, seed=seed, data=str(problems))
    row = {name: metrics[key]["value"] for name, key in COLUMNS}
    row.update(retry_accuracy(out / "samples.jsonl", review_kind or recorded_review_kind(model)))
    (out / "validation.json").write_text(json.dumps(row, indent=1))
    return row


def rl(base: str, out: str, steps: int, seed: int, methods: list[str], sets: list[str], validation: int = 0) -> None:
    """Train `methods` from `base` and probe each model: on the test split, or with `validation` > 0
    on that many training problems held out of every run (the split for choosing settings)."""
    import yaml

    from score_cli.demo import recipe_path
    from score_cli.repro import run_method

    recipe = yaml.safe_load(Path(recipe_path("toy.yaml")).read_text())
    for item in sets:
        key, value = item.split("=", 1)
        recipe[key] = yaml.safe_load(value)
    if validation:
        recipe["heldout_problems"] = validation

    def report(model: Path, stage_dir: Path, out: Path | None = None, name: str | None = None) -> None:
        if validation:
            row = validation_probe(model, stage_dir, seed, out)
        else:
            row = probe(str(model), seed)
        print(f"{name or model} | " + " | ".join(f"{100 * v:.1f}" for v in row.values()), flush=True)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    print("model | " + " | ".join(name for name, _ in COLUMNS) + " | new|R | new|W | chg|R | chg|W")
    for method in methods:
        if method == "Stage I":  # Stage I alone (e.g. the literal reading: --set gamma=1.0)
            from score_cli.repro import ensure_stage

            model = ensure_stage(1, root / f"seed{seed}" / "stage1", model=base, recipe=str(root / "recipe.yaml"),
                                 overrides={"seed": seed, "max_steps": steps}, callbacks=None)
            report(model, model)
            continue
        model = run_method(method, Path(base), root, seed, str(root / "recipe.yaml"), steps)
        if validation and method == "SCoRe":  # the base on the same validation problems
            report(Path(base), model, out=root / f"seed{seed}" / "base-val-eval", name=f"{root / f'seed{seed}'}/base")
        for m in ([model.parent / "stage1"] if method in ("SCoRe", "SCoRe (alpha=0)") else []) + [model]:
            report(m, model)


def _steps(text: str) -> tuple[int, ...]:
    """Training steps given as "2000,2400" (empty: none)."""
    return tuple(int(x) for x in text.split(",") if x)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-tokens", type=int, default=0,
                    help="new tokens per attempt in probes and evaluations (default: make demo's); a base "
                         "whose second attempts are longer, e.g. with recheck, needs about 192")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("out")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--data", default="{}")
    b.add_argument("--training", default="{}")
    b.add_argument("--probe", action="store_true", help="probe the model once built")
    b.add_argument("--threads", type=int, default=1, help="torch threads while training (1: two builds side by side)")
    b.add_argument("--validation", type=int, default=0,
                   help="probe on this many held-out training problems (rl --validation's), not the test split")
    b.add_argument("--snapshots", type=_steps, default=(), help="comma-separated steps at which to save OUT/step-N too")
    e = sub.add_parser("extend")
    e.add_argument("base")
    e.add_argument("out")
    e.add_argument("--steps", type=int, default=600)
    e.add_argument("--lr", type=float, default=1e-4)
    e.add_argument("--data", default="{}")
    e.add_argument("--snapshots", type=_steps, default=())
    e.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("probe")
    p.add_argument("models", nargs="+")
    p.add_argument("--select", type=int, default=0,
                   help="probe on this many selection problems (training split, outside RL seeds 0-9's pools), "
                        "with fresh's columns: for choosing a base before any RL")
    p.add_argument("--validation", type=int, default=0,
                   help="probe on this many held-out training problems (rl --validation's), not the test split")
    p.add_argument("--limit", type=int, default=300, help="evaluate this many of the problems (4 samples each)")
    p.add_argument("--rl-seed", type=int, default=0,
                   help="with --validation: the problems that an RL run with this seed holds out (rl --seed)")
    an = sub.add_parser("anatomy")
    an.add_argument("samples", nargs="+", help="samples.jsonl files of two-attempt evaluations")
    mo = sub.add_parser("modes")
    mo.add_argument("samples", nargs="+", help="samples.jsonl files of two-attempt evaluations")
    mo.add_argument("--marker", default="Redo:")
    fr = sub.add_parser("fresh")
    fr.add_argument("samples", nargs="+", help="samples.jsonl of two-attempt evaluations")
    im = sub.add_parser("imitator")
    im.add_argument("data", nargs="+", help='ToyData fields as JSON, e.g. \'{"short_copy": true}\'')
    im.add_argument("-n", type=int, default=20000)
    c = sub.add_parser("curve")
    c.add_argument("out")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--data", default="{}")
    c.add_argument("--training", default="{}")
    c.add_argument("--every", type=int, default=200)
    rc = sub.add_parser("rechecks")
    rc.add_argument("samples", nargs="+", help="samples.jsonl files of two-attempt evaluations")
    dc = sub.add_parser("decisions")
    dc.add_argument("samples", nargs="+", help="samples.jsonl files of reviewed two-attempt evaluations")
    v = sub.add_parser("verify")
    v.add_argument("models", nargs="+")
    d = sub.add_parser("verify-drill")
    d.add_argument("model")
    d.add_argument("--steps", type=int, default=800)
    d.add_argument("--lr", type=float, default=3e-4)
    k = sub.add_parser("check-drill")
    k.add_argument("model", help='a model directory, or "fresh" for a random toy model')
    k.add_argument("--task", choices=["conversation", "block", "A", "B", "digits"], default="conversation")
    k.add_argument("--labels", choices=["check", "verdict", "all"], default="verdict")
    k.add_argument("--steps", type=int, default=600)
    k.add_argument("--lr", type=float, default=1e-3)
    k.add_argument("--batch", type=int, default=32)
    k.add_argument("--every", type=int, default=100)
    k.add_argument("--wrong", type=float, default=0.2, help='share of "no" lines in the training rows of --task digits')
    k.add_argument("--save", help="save the drilled model here")
    k.add_argument("--shape", default="{}", help='ToyTraining fields of a fresh model, e.g. {"hidden": 256}')
    k.add_argument("--data", default="{}", help='ToyData fields of the rows (over review on, two_turn 1.0), '
                   'e.g. {"two_turn": 0.5, "retry_marker": "Redo:"}')
    nd = sub.add_parser("nines-drill", help="can the toy model learn casting out nines (a check of y1's answer)?")
    nd.add_argument("model", help='a model directory, or "fresh" for a random toy model')
    nd.add_argument("--steps", type=int, default=1000)
    nd.add_argument("--lr", type=float, default=1e-3)
    nd.add_argument("--batch", type=int, default=64)
    nd.add_argument("--every", type=int, default=100)
    nd.add_argument("--shape", default="{}", help='ToyTraining fields of a fresh model, e.g. {"hidden": 256}')
    nd.add_argument("--temperature", type=float, default=0.0, help="sample the checks at this temperature (0: greedy)")
    bs = sub.add_parser("baseline-snr", help="signal-to-noise of Stage II's keep/redo gradient under four baselines")
    for name, default in (("t1", 0.75), ("redo", 0.85), ("keep-slip", 0.05), ("a", 1.0), ("b", 0.3), ("d", 1.0)):
        bs.add_argument(f"--{name}", type=float, default=default)
    r = sub.add_parser("rl")
    r.add_argument("base")
    r.add_argument("out")
    r.add_argument("--steps", type=int, default=40)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--methods", default="SCoRe")
    r.add_argument("--set", action="append", default=[])
    r.add_argument("--validation", type=int, default=0,
                   help="hold out this many training problems from every run and probe on them, not on the test split")
    vp = sub.add_parser("val-probe", help="probe a score stage1/stage2 output on the problems its run held out")
    vp.add_argument("models", nargs="+", help="output directories of runs with heldout_problems > 0")
    vp.add_argument("--seed", type=int, default=0, help="sampling seed (the log uses the run's seed)")
    vp.add_argument("--run", help="probe the models on the problems this run held out (e.g. its base, into "
                    "RUN/../base-val-eval) instead of each model's own run")
    vp.add_argument("--review-kind", choices=sorted(CHECKS),
                    help="the check the second attempts open with, for the rev columns (default: the one the "
                         "model's base was built with, read through its run record)")
    args = ap.parse_args(argv)
    if args.eval_tokens:
        from dataclasses import replace

        from score_cli import demo

        demo.TOY_EVAL["decoding"] = replace(demo.TOY_EVAL["decoding"], max_new_tokens=args.eval_tokens)
    if args.cmd == "rechecks":
        for path in args.samples:
            print(path, " ".join(f"{k} {v}" for k, v in rechecks(Path(path)).items()))
        return None
    if args.cmd == "curve":
        return curve(args.out, args.seed, json.loads(args.data), json.loads(args.training), args.every)
    if args.cmd == "decisions":
        return decisions(args.samples)
    if args.cmd == "anatomy":
        for path in args.samples:
            print(path, " ".join(f"{k} {100 * v:.1f}" for k, v in anatomy(Path(path)).items()))
        return None
    if args.cmd == "modes":
        for path in args.samples:
            print(path, " ".join(f"{k} {100 * share:.1f}% (right {100 * acc:.0f})"
                                 for k, (share, acc) in modes(Path(path), args.marker).items()))
        return None
    if args.cmd == "fresh":
        for path in args.samples:
            print(path, " ".join(f"{k} {100 * v:.1f}" for k, v in fresh(Path(path)).items()))
        return None
    if args.cmd == "imitator":
        for spec in args.data:
            print(spec, " ".join(f"{k} {100 * v:.1f}" for k, v in imitator(json.loads(spec), args.n).items()))
        return None
    if args.cmd == "verify":
        return [verify(m) for m in args.models] and None
    if args.cmd == "verify-drill":
        return verify_drill(args.model, args.steps, args.lr)
    if args.cmd == "check-drill":
        return check_drill(args.model, args.task, args.labels, args.steps, args.lr, args.batch, args.every,
                           json.loads(args.shape), args.wrong, args.save, data=json.loads(args.data))
    if args.cmd == "baseline-snr":
        for mode, (snr_a, snr_b) in baseline_snr(args.t1, args.redo, args.keep_slip, args.a, args.b, args.d).items():
            print(f"{mode}: redo more {snr_a:+.2f}  redo when y1 looks wrong {snr_b:+.2f}")
        return None
    if args.cmd == "nines-drill":
        return nines_drill(args.model, args.steps, args.lr, args.batch, args.every, json.loads(args.shape),
                           temperature=args.temperature)
    if args.cmd == "extend":
        return extend(args.base, args.out, args.steps, args.lr, json.loads(args.data), args.snapshots, args.seed)
    if args.cmd == "val-probe":
        for m in args.models:
            run = Path(args.run or m)
            out = run.parent / "base-val-eval" if args.run else None
            print(m, validation_probe(Path(m), run, args.seed, out, review_kind=args.review_kind))
        return None
    if args.cmd == "rl":
        logging.basicConfig(level=logging.WARNING)
        return rl(args.base, args.out, args.steps, args.seed, args.methods.split(","), args.set, args.validation)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    models = [args.out] if args.cmd == "build" else args.models
    if args.cmd == "build":
        build(args.out, args.seed, json.loads(args.data), json.loads(args.training), args.threads, args.snapshots)
        if not args.probe:
            return
    for m in models:
        row = probe(m, validation=args.validation, select=getattr(args, "select", 0), limit=getattr(args, "limit", 300),
                    rl_seed=getattr(args, "rl_seed", 0))
        print("model | " + " | ".join(row), flush=True)
        print(f"{m} | " + " | ".join(f"{100 * v:.1f}" for v in row.values()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
