"""vLLM generation for `score eval --backend vllm` (optional: `pip install 'score[vllm]'`).

Imported only when asked for, so the CPU install never needs vLLM. The rollout gives it token
ids, exactly as it gives them to transformers, so attempt k+1's input is built the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from score_cli.errors import ScoreError
from score_cli.rollout import Decoding


class VLLMGenerator:
    """One completion per input through `vllm.LLM.generate` on token-id prompts.

    Sampling is seeded once, by the engine (`LLM(seed=...)`): a per-request seed would give the K
    samples of one problem identical completions.
    """

    def __init__(self, model: str, tokenizer, decoding: Decoding, on_batch: Callable[[int, int], None] | None = None,
                 gpu_memory_utilization: float = 0.85, dtype: str = "auto"):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ScoreError("--backend vllm needs vLLM: pip install 'score[vllm]' (on a CUDA machine)") from None
        self._sampling = SamplingParams
        self.decoding = decoding
        self.on_batch = on_batch
        self.eos_id = tokenizer.eos_token_id
        self.llm = LLM(model=model, tokenizer=model, dtype=dtype, seed=decoding.seed,
                       gpu_memory_utilization=gpu_memory_utilization)
        self.generated_tokens = 0
        self.generate_seconds = 0.0

    def __call__(self, inputs: list[list[int]], *, group_size: int = 1):
        d = self.decoding
        params = self._sampling(
            max_tokens=d.max_new_tokens,
            temperature=0.0 if d.greedy else d.temperature,
            top_p=1.0 if d.greedy else d.top_p,
            skip_special_tokens=False,
        )
        t0 = time.perf_counter()
        results = self.llm.generate([{"prompt_token_ids": list(x)} for x in inputs], params, use_tqdm=False)
        self.generate_seconds += time.perf_counter() - t0
        outputs = [list(r.outputs[0].token_ids) for r in results]
        n = sum(len(o) for o in outputs)
        self.generated_tokens += n
        if self.on_batch is not None:
            self.on_batch(len(inputs), n)
        return outputs, None
