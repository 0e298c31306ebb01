"""Run under `accelerate launch` (see test_distributed.py): one SCoRe batch on N processes.

Each process holds its contiguous share of one prompt group of 4 rollouts, so the leave-one-out
baselines are only right if rewards are gathered across processes. Writes, from process 0, every
rollout's advantages per attempt (A1, A2, ...) and the logged metrics as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import PartialState  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from score_cli.tasks import Grade, Problem, Task  # noqa: E402
from score_cli.trainers import SCoReConfig, SCoReTrainer  # noqa: E402

# one question, 4 rollouts with different attempt texts (the first `turns` of each): gold is "7"
CHAINS = [["7", "7", "x"], ["x", "7", "7"], ["7", "y", "7"], ["x", "z", "z"]]
INSTR = "Check it."


class ExactTask(Task):
    name = "exact"
    instruction = INSTR

    def grade(self, problems, outputs):
        return [Grade(o, o == p.answer) for p, o in zip(problems, outputs, strict=True)]


def run(model_dir: str, out: str, stage: int, turns: int) -> None:
    state = PartialState(cpu=True)
    rank, world = state.process_index, state.num_processes
    local = len(CHAINS) // world
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    cfg = SCoReConfig(output_dir=str(Path(out).parent / "o"), stage=stage, ref_model=model_dir, num_generations=4,
                      per_device_train_batch_size=local, max_attempt_length=4, report_to="none",
                      save_strategy="no", use_cpu=True, turns=turns,
                      reuse_attempt_cache=False)  # attempts are scripted through _generate_single_turn
    trainer = SCoReTrainer(model_dir, cfg, ExactTask(), [Problem("0", "Q?", "7")], processing_class=tok)
    mine = CHAINS[rank * local : (rank + 1) * local]

    def generate(ids, images, mm, n, **_):
        text = [tok.decode(x) for x in ids]
        attempt = [t.count(INSTR) for t in text]
        outs = [tok(mine[i][a], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                for i, a in enumerate(attempt)]
        return outs, None

    trainer._generate_single_turn = generate
    trainer.model.train()
    batch = trainer._generate_and_score_completions([{"prompt": "Q?", "problem_id": "0"} for _ in mine])
    adv = []
    for b in range(len(mine)):
        turn = batch["turn"][b].tolist()
        adv.append([batch["advantages"][b, turn.index(k)].item() for k in range(turns)])
    everything = gather_object(adv)
    if state.is_main_process:
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()
                   if k.startswith(("reward/t", "i2c", "c2i", "delta", "answer_changed"))}
        Path(out).write_text(json.dumps({"advantages": everything, "metrics": metrics, "world": world}))
    state.wait_for_everyone()
    state.destroy_process_group()  # before exit: a process group torn down at interpreter exit can abort under load


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
