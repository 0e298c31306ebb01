"""GPU check: vLLM and transformers generation give the same attempt-2 inputs and metrics.

Builds a tiny Llama model itself (no weights can be downloaded on a lent GPU machine) or takes one
with --model (e.g. the toy base model), runs `score eval`'s rollout greedily with both engines on
the same problems, and reports: the share of problems whose attempt-2 input tokens are identical,
both engines' metrics, and generated tokens/s of each. Without vLLM it reports the transformers
half and says vLLM was skipped.

    python scripts/gpu_check.py [--model DIR] [--problems 256] [--max-new-tokens 128] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from score_cli.evaluate import metrics_from_rows, rollout_rows  # noqa: E402
from score_cli.rollout import Decoding, HFGenerator, first_attempt_ids, instruction_ids, run_attempts  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--problems", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from score_cli.tasks.registry import load_task
    from score_cli.toy_model import build_char_tokenizer, tiny_causal_lm

    tmp = tempfile.mkdtemp()
    model_dir = args.model
    if model_dir is None:
        tok = build_char_tokenizer()
        tiny_causal_lm(tok, hidden=512, layers=8, heads=8).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        model_dir = tmp
    task, problems = load_task("toy", split="test", limit=args.problems)
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    d = Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    report: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "model": args.model or "random Llama (512 hidden, 8 layers)", "problems": len(problems)}

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda").eval()
    instr = instruction_ids(tok, task.instruction)
    firsts = [first_attempt_ids(tok, task, p) for p in problems]

    def engine(name, gen):
        t0 = time.perf_counter()
        rollouts = run_attempts(gen, firsts, turns=2, instruction=instr, eos_id=tok.eos_token_id)
        seconds = time.perf_counter() - t0
        tokens = sum(len(o) for r in rollouts for o in r.outputs)
        rows = rollout_rows(task, problems, tok, lambda x, group_size=1: replay(rollouts, x), turns=2, samples=1)
        report[name] = {"tokens_per_s": round(tokens / seconds, 1), "generated_tokens": tokens,
                        "metrics": {k: round(v["value"], 4) for k, v in metrics_from_rows(rows).items()
                                    if k in ("accuracy@t1", "accuracy@t2", "delta(t1,t2)")}}
        return rollouts

    hf = engine("transformers_bf16", HFGenerator(model, tok, d))
    try:
        from score_cli.vllm_backend import VLLMGenerator

        del model
        torch.cuda.empty_cache()
        vl = engine("vllm_bf16", VLLMGenerator(model_dir, tok, d, dtype="bfloat16", gpu_memory_utilization=0.5))
        same = sum(a.inputs[1] == b.inputs[1] for a, b in zip(hf, vl, strict=True))
        report["attempt2_inputs_identical"] = f"{same}/{len(hf)}"
    except Exception as e:  # noqa: BLE001 - report why vLLM could not run, keep the transformers half
        report["vllm_bf16"] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def replay(rollouts, inputs):
    """A generator that returns recorded outputs, to grade a finished rollout through rollout_rows."""
    table = {}
    for r in rollouts:
        for x, y in zip(r.inputs, r.outputs, strict=True):
            table[tuple(x)] = y
    return [table[tuple(x)] for x in inputs], None


if __name__ == "__main__":
    main(sys.argv[1:])
