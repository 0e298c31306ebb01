"""The rollout builds attempt k+1's input by token concatenation, identically for eval and training."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from score_cli.rollout import (
    NOT_GENERATED,
    Decoding,
    HFGenerator,
    Rollout,
    first_attempt_ids,
    instruction_ids,
    next_attempt_input,
    run_attempts,
)
from score_cli.tasks import Problem, Task

INSTR = "There might be an error. Fix it."


def test_instruction_suffix_matches_the_chat_template(char_tokenizer):
    """Concatenating [prompt, y1, EOS, instruction turn] equals rendering the whole conversation."""
    tok = char_tokenizer
    task, problem = Task(), Problem("p", "What is 2+3?", "5")
    y1 = tok("It is 5.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    x2 = next_attempt_input(first_attempt_ids(tok, task, problem), y1, eos_id=tok.eos_token_id,
                            instruction=instruction_ids(tok, INSTR))
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": problem.question}, {"role": "assistant", "content": "It is 5."},
         {"role": "user", "content": INSTR}],
        add_generation_prompt=True, tokenize=True, return_dict=False,
    )
    assert x2 == list(rendered)


def test_cut_off_attempt_gets_eos_before_the_instruction(char_tokenizer):
    tok = char_tokenizer
    instr = instruction_ids(tok, INSTR)
    cut = tok("unfinished", add_special_tokens=False)["input_ids"]
    x2 = next_attempt_input([1, 2], cut, eos_id=tok.eos_token_id, instruction=instr)
    assert x2 == [1, 2, *cut, tok.eos_token_id, *instr]
    closed = [*cut, tok.eos_token_id]
    assert next_attempt_input([1, 2], closed, eos_id=tok.eos_token_id, instruction=instr) == x2


def test_plain_text_tokenizer_without_chat_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    ids = first_attempt_ids(tok, Task(), Problem("p", "Q?", "1"))
    assert tok.decode(ids) == "Q?\n\n"
    assert tok.decode(instruction_ids(tok, INSTR)) == f"\n\n{INSTR}\n\n"


def test_run_attempts_history_and_completion_turns(char_tokenizer, scripted):
    tok = char_tokenizer
    gen = scripted(tok, {"Q1": ["a", "bb", "ccc"]}, INSTR)
    instr = instruction_ids(tok, INSTR)
    first = first_attempt_ids(tok, Task(), Problem("1", "Q1", "x"))
    (r,) = run_attempts(gen, [first], turns=3, instruction=instr, eos_id=tok.eos_token_id)
    eos = tok.eos_token_id
    a, bb, ccc = ([*tok(s, add_special_tokens=False)["input_ids"], eos] for s in ("a", "bb", "ccc"))
    assert r.outputs == [a, bb, ccc]
    assert r.inputs[1] == first + a + instr
    assert r.inputs[2] == first + a + instr + bb + instr
    ids, turn, _ = r.completion(eos, instr)
    assert ids == a + instr + bb + instr + ccc
    assert turn == [0] * len(a) + [NOT_GENERATED] * len(instr) + [1] * len(bb) + [NOT_GENERATED] * len(instr) + [
        2
    ] * len(ccc)


def test_completion_marks_appended_eos_as_not_generated():
    r = Rollout(inputs=[[1]], outputs=[[5, 6], [7, 9]], logprobs=[[-0.1, -0.2], [-0.3, -0.4]])
    ids, turn, logps = r.completion(eos_id=9, instruction=[3, 4])
    assert ids == [5, 6, 9, 3, 4, 7, 9]
    assert turn == [0, 0, NOT_GENERATED, NOT_GENERATED, NOT_GENERATED, 1, 1]
    assert logps == [-0.1, -0.2, 0.0, 0.0, 0.0, -0.3, -0.4]


def test_batched_left_padded_greedy_matches_one_by_one(tiny_model_dir):
    """Left padding and length sorting must not change greedy outputs."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [first_attempt_ids(tok, Task(), Problem(str(i), q, "0")) for i, q in
               enumerate(["1+1?", "What is 12+30?", "x", "A much longer question about numbers?"])]
    batched, _ = HFGenerator(model, tok, Decoding(max_new_tokens=12, batch_size=4))(prompts)
    single = [HFGenerator(model, tok, Decoding(max_new_tokens=12, batch_size=1))([p])[0][0] for p in prompts]
    assert batched == single
    assert all(0 < len(o) <= 12 for o in batched)


def test_sampling_is_seeded(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = [first_attempt_ids(tok, Task(), Problem("0", "1+1?", "2"))] * 4
    gen = HFGenerator(model, tok, Decoding(max_new_tokens=16, temperature=1.0, batch_size=4))
    torch.manual_seed(3)
    a, _ = gen(prompt)
    torch.manual_seed(3)
    b, _ = gen(prompt)
    assert a == b and len({tuple(x) for x in a}) > 1


def test_attempt_two_continues_from_attempt_one_cache(tiny_model_dir):
    """Reusing attempt 1's KV cache gives attempt 2 what re-reading x + y1 + instruction gives,
    and the model reads only the new tokens (with padding left in the middle by early EOS)."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [first_attempt_ids(tok, Task(), Problem(str(i), q, "0")) for i, q in
               enumerate(["1+1?", "What is 12+30?", "x", "A much longer question about numbers?"])]
    d = Decoding(max_new_tokens=12, temperature=1.0, batch_size=8)  # sampled: the greedy tiny model repeats one token
    torch.manual_seed(1)
    probe, _ = HFGenerator(model, tok, d, reuse_cache=False)(prompts)
    model.generation_config.eos_token_id = [tok.eos_token_id, probe[0][3]]  # attempt 1 of row 0 now ends early
    instr = instruction_ids(tok, INSTR)

    def rollout(reuse: bool):
        widths: list[int] = []
        hook = model.register_forward_pre_hook(
            lambda m, args, kwargs: widths.append(kwargs["input_ids"].size(1)), with_kwargs=True
        )
        torch.manual_seed(1)
        try:
            rs = run_attempts(HFGenerator(model, tok, d, reuse_cache=reuse), prompts, turns=2, instruction=instr,
                              eos_id=tok.eos_token_id)
        finally:
            hook.remove()
        return rs, [w for w in widths if w > 1]  # the prefill of each attempt

    fresh, fresh_widths = rollout(False)
    cached, cached_widths = rollout(True)
    assert len({len(r.outputs[0]) for r in fresh}) > 1  # mid-sequence padding is exercised
    assert [r.outputs for r in cached] == [r.outputs for r in fresh]
    assert [r.inputs for r in cached] == [r.inputs for r in fresh]
    tail = max(len(r.inputs[1]) - len(r.inputs[0]) - len(r.outputs[0]) for r in fresh)
    assert fresh_widths[1] == max(len(r.inputs[1]) for r in fresh)  # re-reads everything
    assert cached_widths[1] == tail + 1  # the instruction (+ EOS where cut) and attempt 1's last token


def test_continued_attempt_sees_what_a_fresh_one_sees(tiny_model_dir):
    """The next-token scores of attempt 2 from attempt 1's cache equal those of a fresh call on
    x + y1 + instruction, at every step, rows that ended early (padding in the middle) included."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from score_cli.rollout import generate_batch

    class Record(LogitsProcessor):
        def __init__(self):
            self.scores: list[torch.Tensor] = []

        def __call__(self, input_ids, scores):
            self.scores.append(scores.clone())
            return scores

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [first_attempt_ids(tok, Task(), Problem(str(i), q, "0")) for i, q in
               enumerate(["1+1?", "What is 12+30?", "x", "A much longer question about numbers?"])]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    sample = dict(max_new_tokens=10, do_sample=True, top_k=0, pad_token_id=pad)
    torch.manual_seed(1)
    probe, _ = generate_batch(model, prompts, pad_id=pad, eos_ids=[eos], eos_token_id=[eos], **sample)
    ends = [eos, probe[0][3]]  # attempt 1 of row 0 ends early
    torch.manual_seed(1)
    first, cont = generate_batch(model, prompts, pad_id=pad, eos_ids=ends, keep=True, eos_token_id=ends, **sample)
    assert cont is not None and len({len(o) for o in first}) > 1
    instr = instruction_ids(tok, INSTR)
    second = [next_attempt_input(x, y, eos_id=eos, instruction=instr) for x, y in zip(prompts, first, strict=True)]
    greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=pad, eos_token_id=[eos])
    runs = {}
    for name, previous in (("fresh", None), ("continued", cont)):
        rec = Record()
        out, _ = generate_batch(model, second, pad_id=pad, eos_ids=[eos], previous=previous,
                                logits_processor=LogitsProcessorList([rec]), **greedy)
        runs[name] = (out, rec.scores)
    assert runs["continued"][0] == runs["fresh"][0]
    for a, b in zip(runs["continued"][1], runs["fresh"][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    # a continuation the inputs do not extend is released before a fresh call, not continued
    _, stale = generate_batch(model, prompts, pad_id=pad, eos_ids=[eos], keep=True, **greedy)
    out, _ = generate_batch(model, second, pad_id=pad, eos_ids=[eos], previous=stale, **greedy)
    assert stale.cache is None and out == runs["fresh"][0]
