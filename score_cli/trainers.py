"""SCoRe's two training stages as a TRL `GRPOTrainer` subclass.

SCoRe (Kumar et al., 2024, arXiv 2409.12917; see SCORE_PAPER.md) trains on the policy's own
two-attempt rollouts x -> y1 -> p -> y2 (p = the self-correction instruction) with REINFORCE, a
leave-one-out baseline and a KL penalty to the *base* model, credited per attempt (gamma = 0):

    Stage I   attempt-1 tokens:  A = 0                               KL coefficient beta2
              attempt-2 tokens:  A = r(y2) - b                       KL coefficient beta1
    Stage II  attempt-1 tokens:  A = r(y1) - b                       KL coefficient beta1
              attempt-2 tokens:  A = r(y2) + alpha (r(y2) - r(y1)) - b   KL coefficient beta1

With gamma > 0, attempt 1's return also gets gamma times attempt 2's return.

What changes w.r.t. `GRPOTrainer` (everything else - batching, weight syncing, vLLM, gathering
across processes, checkpointing, logging - is inherited unchanged):

- generation: TRL's `rollout_func` hook runs `rollout.run_attempts`, the code `score eval` uses.
  With transformers generation, `rollout.generate_batch` (inside TRL's unwrap context) lets attempt
  2 continue attempt 1's KV cache; vLLM and continuous batching go through TRL's own
  `_generate_single_turn`. The completion TRL sees is y1 (+EOS) + p + y2; `env_mask` keeps p (and
  an appended EOS) out of the loss.
- rewards: two reward functions, r(y1) and r(y2), graded by the task; `_calculate_rewards` keeps
  the gathered (N, 2) matrix.
- advantages: `_generate_and_score_completions` replaces GRPO's one scalar per sequence by the
  per-token advantages and per-token KL coefficients above (`score_returns`, `baseline`).
- loss: `_compute_loss` is `score_loss`: the policy-gradient term per token (PPO-clipped when a
  batch is reused, plain REINFORCE on-policy) plus the per-token KL term.
- reference: the base model in both stages (`ref_model`); Stage II never uses Stage I as its
  reference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from accelerate.utils import is_peft_model
from trl import GRPOConfig, GRPOTrainer
from trl.extras.profiling import profiling_context
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import create_model_from_path

from score_cli.rollout import (
    NOT_GENERATED,
    Continuation,
    first_attempt_ids,
    generate_batch,
    instruction_ids,
    run_attempts,
)
from score_cli.tasks import Problem, Task

log = logging.getLogger(__name__)

BASELINES = ("rloo", "mean", "none")


@dataclass
class SCoReConfig(GRPOConfig):
    r"""Configuration for [`SCoReTrainer`]; every `GRPOConfig` parameter keeps its meaning, except:

    - `beta` is derived (max of beta1 and beta2) and only tells TRL to compute reference log-probs;
      the KL coefficient of each token is beta1 or beta2 by stage and attempt.
    - `max_completion_length` is set from `max_attempt_length`: TRL applies it to each generation
      call, that is, to each attempt.
    - `loss_type` may be "dapo" (token mean over the batch, the default) or "grpo" (sequence mean).
    - `scale_rewards` and `reward_weights` are not used: SCoRe's advantage is reward minus a
      baseline, unscaled (the logged `reward` is the stage's return, r1 + r2 + bonus in Stage II).
    - `bf16` and `activation_checkpointing` default to on with a CUDA GPU and off on CPU.
    """

    stage: int = field(default=1, metadata={"help": "1: Stage I (decouple the attempts), 2: Stage II (multi-turn RL)."})
    alpha: float = field(default=10.0, metadata={"help": "Stage II progress bonus: alpha * (r(y2) - r(y1))."})
    beta1: float = field(default=0.01, metadata={"help": "KL coefficient on attempt 2 (both attempts in Stage II)."})
    beta2: float = field(default=0.1, metadata={"help": "Stage I KL coefficient on attempt 1 (keeps it near base)."})
    gamma: float = field(default=0.0, metadata={"help": "Share of attempt 2's return added to attempt 1's (paper: 0)."})
    baseline: str = field(
        default="rloo", metadata={"help": "Reward baseline per prompt: rloo (leave-one-out), mean (group mean), none."}
    )
    instruction: str | None = field(
        default=None, metadata={"help": "Self-correction instruction; default: the task's (the paper's)."}
    )
    ref_model: str | None = field(
        default=None,
        metadata={"help": "Reference model of the KL; score sets it to the base model in both stages."},
    )
    max_attempt_length: int = field(default=512, metadata={"help": "Maximum new tokens per attempt."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains all weights."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get LoRA adapters; default: all linear layers."}
    )
    single_turn: bool = field(
        default=False,
        metadata={"help": "Ablation: one attempt, A = r(y1) - b, KL beta1 (the paper's single-turn RL baseline)."},
    )
    reuse_attempt_cache: bool = field(
        default=True,
        metadata={"help": "With transformers generation, continue attempt 1's KV cache for attempt 2 instead of "
                  "re-reading x + y1 (vLLM caches prefixes on its own)."},
    )
    beta: float = field(default=0.0, metadata={"help": "Derived from beta1/beta2; do not set."})
    report_to: str | list[str] | None = field(
        default="tensorboard", metadata={"help": "Where metrics go: tensorboard, wandb, none (or a list)."}
    )
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: on with CUDA."})
    activation_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations to save memory; default: on with CUDA, off on CPU."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Old name of activation_checkpointing (transformers < 5)."}
    )

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        for name in ("alpha", "beta1", "beta2", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        if self.loss_type not in ("dapo", "grpo"):
            raise ValueError(f"SCoReTrainer supports loss_type 'dapo' or 'grpo', got {self.loss_type!r}")
        cuda = torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = cuda and torch.cuda.is_bf16_supported() and not self.fp16
        if self.activation_checkpointing is None:
            self.activation_checkpointing = cuda if self.gradient_checkpointing is None else self.gradient_checkpointing
        self.gradient_checkpointing = self.activation_checkpointing  # the name transformers < 5.2x reads
        if not cuda:
            self.use_cpu = True
        self.max_completion_length = self.max_attempt_length
        self.beta = max(self.beta1, self.beta2)
        super().__post_init__()


# ---------------------------------------------------------------------------------------------
# The SCoRe objective, per attempt (readable against SCORE_PAPER.md)
# ---------------------------------------------------------------------------------------------


def score_returns(r1: torch.Tensor, r2: torch.Tensor, *, stage: int, alpha: float, gamma: float = 0.0):
    """Per-attempt returns (R1, R2) from the binary rewards r(y1), r(y2).

    Stage I:  R1 = 0 (attempt 1 is held by the KL only), R2 = r(y2).
    Stage II: R1 = r(y1), R2 = r(y2) + alpha * (r(y2) - r(y1))  (the progress bonus).
    gamma > 0: R1 += gamma * R2.
    """
    if stage == 1:
        R1, R2 = torch.zeros_like(r1), r2
    else:
        R1, R2 = r1, r2 + alpha * (r2 - r1)
    return R1 + gamma * R2, R2


def baseline(returns: torch.Tensor, group_size: int, kind: str = "rloo") -> torch.Tensor:
    """The baseline of each rollout, over the `group_size` rollouts of its prompt (which sit together).

    rloo: the mean of the *other* rollouts of the prompt (leave-one-out, Ahmadian et al. 2024);
    mean: the group mean (as GRPO, without its std scaling); none: zero.
    """
    if kind == "none":
        return torch.zeros_like(returns)
    groups = returns.view(-1, group_size)  # (P, G)
    total = groups.sum(1, keepdim=True)  # (P, 1)
    if kind == "mean":
        b = total.expand_as(groups) / group_size
    elif kind == "rloo":
        if group_size < 2:
            raise ValueError("the rloo baseline needs at least 2 rollouts per prompt")
        b = (total - groups) / (group_size - 1)
    else:
        raise ValueError(f"unknown baseline {kind!r}")
    return b.reshape(-1)  # (N,)


def per_token(turn: torch.Tensor, values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Spread per-rollout values over tokens: token of attempt k gets values[k]; others get 0."""
    out = torch.zeros(turn.shape, dtype=torch.float32, device=turn.device)  # (B, T)
    for k, v in enumerate(values):
        v = v.to(turn.device, torch.float32)
        out = torch.where(turn == k, v.view(-1, 1) if v.dim() else v, out)
    return out


def score_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    kl_coef: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    normalizer: float | torch.Tensor | None = None,
    per_sequence: bool = False,
    importance_weight: torch.Tensor | None = None,
):
    """The SCoRe loss of one micro-batch; every argument is (B, T) over the completion tokens.

    per token:  L_t = -min(rho_t A_t, clip(rho_t, 1-eps_low, 1+eps_high) A_t) + beta_t KL_t
      rho_t = pi(y_t) / pi_old(y_t)  (= 1 on-policy, so the gradient is REINFORCE's A_t grad log pi)
      KL_t  = exp(ref - logp) - (ref - logp) - 1  (k3 estimator of KL(pi || pi_ref), >= 0)
    Masked tokens (instruction, padding) contribute nothing. The loss is the sum over unmasked
    tokens divided by `normalizer` (default: their number), or, with `per_sequence`, the mean over
    sequences of each sequence's token mean. Returns (loss, kl) with kl the per-token KL (B, T).
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)  # (B, T)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    policy_term = -torch.min(ratio * advantages, clipped * advantages)  # (B, T)
    if importance_weight is not None:  # vLLM sampler / trainer mismatch correction, from TRL
        policy_term = policy_term * importance_weight
    if ref_logps is not None:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1  # (B, T)
    else:
        kl = torch.zeros_like(logps)
    loss_t = (policy_term + kl_coef * kl) * mask  # (B, T)
    if per_sequence:
        loss = (loss_t.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    else:
        loss = loss_t.sum() / (mask.sum().clamp(min=1.0) if normalizer is None else normalizer)
    return loss, kl


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def load_policy(name: str, args: SCoReConfig):
    """The policy to train: a full model, or a saved LoRA adapter on its base (kept trainable)."""
    import json
    from pathlib import Path

    adapter = Path(name) / "adapter_config.json"
    if not adapter.exists():
        return create_model_from_path(name, **(args.model_init_kwargs or {}))
    from peft import PeftModel

    base_name = json.loads(adapter.read_text())["base_model_name_or_path"]
    base = create_model_from_path(base_name, **(args.model_init_kwargs or {}))
    return PeftModel.from_pretrained(base, name, is_trainable=True)


class SCoReTrainer(GRPOTrainer):
    """SCoRe on top of TRL's GRPOTrainer; see the module docstring for the hooks it overrides."""

    _tag_names = ["trl", "score", "self-correction"]
    _name = "SCoRe"

    def __init__(
        self,
        model,
        args: SCoReConfig,
        task: Task,
        problems: Sequence[Problem],
        processing_class=None,
        callbacks=None,
        peft_config=None,
    ):
        from datasets import Dataset

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL's multi-turn hook
        self.task = task
        self.problems = {p.id: p for p in problems}
        if len(self.problems) != len(problems):
            raise ValueError("problem ids must be unique")
        if isinstance(model, str):
            model = load_policy(model, args)
        if peft_config is None and args.lora_r > 0 and not is_peft_model(model):
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, task_type="CAUSAL_LM",
                target_modules=args.lora_target_modules or "all-linear",
            )
        if processing_class is None:
            from transformers import AutoTokenizer

            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path, padding_side="left")
        tokenizer = processing_class
        self._instruction_ids = instruction_ids(tokenizer, args.instruction or task.instruction)
        self._eos_id = tokenizer.eos_token_id
        # The prompt column holds the question as plain text, so TRL treats it as text (it only logs
        # it); `_rollout` maps it back to the problem and builds attempt 1 with the task's prompt.
        self._by_question: dict[str, Problem] = {}
        for p in problems:
            self._by_question.setdefault(p.question, p)
        dataset = Dataset.from_list([{"prompt": p.question, "problem_id": p.id} for p in problems])

        def t1(completions, problem_id, attempt_texts, **_):
            return self._grade(problem_id, [a[0] for a in attempt_texts])

        def t2(completions, problem_id, attempt_texts, **_):
            return self._grade(problem_id, [a[-1] for a in attempt_texts])  # = t1 with single_turn

        # The reference is the base model: TRL loads it from the policy's `_name_or_path`, so point
        # that at `ref_model` while TRL builds it (Stage II: the policy is Stage I, the ref is base).
        own_name = model.config._name_or_path
        if args.ref_model and args.beta > 0:
            model.config._name_or_path = args.ref_model
        try:
            super().__init__(
                model=model,
                reward_funcs=[t1, t2],
                args=args,
                train_dataset=dataset,
                processing_class=processing_class,
                callbacks=callbacks,
                peft_config=peft_config,
                rollout_func=self._rollout,
            )
        finally:
            model.config._name_or_path = own_name
            self.model.config._name_or_path = own_name
        # With LoRA the reference is the policy with its adapter disabled, i.e. the base model. When
        # Stage II re-trains Stage I's adapter, TRL keeps a frozen copy of it as "ref"; SCoRe's
        # reference is the base, so drop that copy.
        unwrapped = self.accelerator.unwrap_model(self.model)
        if is_peft_model(unwrapped) and "ref" in unwrapped.peft_config:
            unwrapped.delete_adapter("ref")
            unwrapped.set_adapter("default")
        # The logged `reward` is the stage's objective: r(y2) in Stage I; r1 + r2 + alpha (r2 - r1) in Stage II.
        weights = [0.0, 1.0] if args.stage == 1 else [1.0 - args.alpha, 1.0 + args.alpha]
        if args.single_turn:
            weights = [1.0, 0.0]
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        self._attempt_rewards: torch.Tensor | None = None

    # -- rewards ----------------------------------------------------------------------------------
    def _grade(self, problem_ids: Sequence[str], texts: Sequence[str]) -> list[float]:
        grades = self.task.grade([self.problems[i] for i in problem_ids], list(texts))
        return [float(g.correct) for g in grades]

    # -- generation: two attempts through the shared rollout ---------------------------------------
    def _rollout(self, prompts: list, trainer) -> dict:
        """TRL's `rollout_func`: y1, then y2 after the instruction, by `rollout.run_attempts`."""

        continuation: Continuation | None = None

        def generate(inputs: list[list[int]], *, group_size: int = 1):
            nonlocal continuation
            if not self._continues_attempts():
                return self._generate_single_turn(inputs, None, {}, group_size)
            previous, continuation = continuation, None
            ids, continuation = self._generate_continuing(inputs, previous)
            return ids, None

        first = [first_attempt_ids(self.processing_class, self.task, self._by_question[q]) for q in prompts]
        rollouts = run_attempts(
            generate, first, turns=1 if self.args.single_turn else 2,
            instruction=self._instruction_ids, eos_id=self._eos_id,
            group_size=self.num_generations if self.model.training else self.num_generations_eval,
        )
        continuation = None  # free the last attempt's KV cache before training
        completion_ids, env_mask, turn_ids, logprobs = [], [], [], []
        for r in rollouts:
            ids, turn, lps = r.completion(self._eos_id, self._instruction_ids)
            completion_ids.append(ids)
            turn_ids.append(turn)
            env_mask.append([int(t != NOT_GENERATED) for t in turn])
            logprobs.append(lps)
        texts = [[self.processing_class.decode(o, skip_special_tokens=True) for o in r.outputs] for r in rollouts]
        return {
            "prompt_ids": first,
            "completion_ids": completion_ids,
            "logprobs": logprobs if rollouts and rollouts[0].logprobs is not None else None,
            "env_mask": env_mask,
            "turn_ids": turn_ids,
            "attempt_texts": texts,
            "attempt_lengths": [[len(o) for o in r.outputs] for r in rollouts],
        }

    def _generate_continuing(
        self, inputs: list[list[int]], previous: Continuation | None
    ) -> tuple[list[list[int]], Continuation | None]:
        """TRL's transformers generation (same model unwrapping, generation config and profiling),
        through `rollout.generate_batch` so that an attempt can continue the previous one's KV cache."""
        with (
            profiling_context(self, "transformers.generate"),
            unwrap_model_for_generation(
                self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            return generate_batch(
                unwrapped, inputs, pad_id=self._tokenizer.pad_token_id, eos_ids=self.eos_token_ids,
                previous=previous, keep=True, generation_config=self.generation_config,
            )

    def _continues_attempts(self) -> bool:
        """Whether generation is the plain transformers path, where `rollout.generate_batch` lets
        attempt 2 continue attempt 1's KV cache; vLLM, continuous batching and VLMs keep TRL's."""
        return (
            self.args.reuse_attempt_cache and not self.use_vllm and not self.use_transformers_continuous_batching
            and not self._is_vlm
        )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._attempt_rewards = rewards  # (N_all, 2): r(y1), r(y2), gathered across processes
        return rewards

    # -- advantages and KL coefficients per token ----------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        args: SCoReConfig = self.args
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        r1, r2 = self._attempt_rewards[:, 0], self._attempt_rewards[:, 1]  # (N_all,)
        if args.single_turn:  # one attempt, rewarded like Stage II's attempt 1
            R1, R2 = r1, torch.zeros_like(r1)
        else:
            R1, R2 = score_returns(r1, r2, stage=args.stage, alpha=args.alpha, gamma=args.gamma)
        A1 = R1 - baseline(R1, group, args.baseline)
        A2 = R2 - baseline(R2, group, args.baseline)
        if args.stage == 1 and args.gamma == 0 and not args.single_turn:
            A1 = torch.zeros_like(A1)  # attempt 1 gets no reward gradient in Stage I

        # Keep this process's rollouts, then spread per attempt over the completion tokens.
        n = len(inputs)
        local = slice(self.accelerator.process_index * n, (self.accelerator.process_index + 1) * n)
        width = out["completion_ids"].size(1)
        turn = torch.full((n, width), NOT_GENERATED, dtype=torch.long, device=out["completion_ids"].device)
        for i, x in enumerate(inputs):
            turn[i, : len(x["turn_ids"])] = torch.tensor(x["turn_ids"])
        kl1 = args.beta2 if args.stage == 1 and not args.single_turn else args.beta1
        out["advantages"] = per_token(turn, [A1[local], A2[local]])  # (B, T)
        out["kl_coef"] = per_token(turn, [torch.tensor(kl1), torch.tensor(args.beta1)])  # (B, T)
        out["turn"] = turn

        # Stable log names (SCORE_PAPER.md metrics), over all processes.
        m = self._metrics[mode]
        m["reward/t1"].append(r1.mean().item())
        m["reward/t2"].append(r2.mean().item())
        m["delta"].append((r2 - r1).mean().item())
        m["i2c"].append(((r1 == 0) & (r2 == 1)).float().mean().item())
        m["c2i"].append(((r1 == 1) & (r2 == 0)).float().mean().item())
        m["return/t1"].append(R1.mean().item())
        m["return/t2"].append(R2.mean().item())
        for k, A in (("t1", A1), ("t2", A2)):
            m[f"advantage/{k}/mean"].append(A.mean().item())
            m[f"advantage/{k}/std"].append(A.std().item() if A.numel() > 1 else 0.0)
        lengths = torch.tensor([x["attempt_lengths"] for x in inputs], dtype=torch.float32, device=turn.device)
        lengths = self.accelerator.gather(lengths)  # (N_all, attempts)
        for k in range(lengths.size(1)):
            m[f"length/t{k + 1}"].append(lengths[:, k].mean().item())
        return out

    # -- the loss ---------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model, ids, attention, inputs["completion_ids"].size(1)
        )  # (B, T)
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)  # instruction and padding out
        old = inputs.get("old_per_token_logps")
        mode = "train" if self.model.training else "eval"
        normalizer = None
        if self.loss_type == "dapo":  # tokens of the whole generation batch, as TRL's "dapo"
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss, kl = score_loss(
            logps,
            logps.detach() if old is None else old,
            inputs.get("ref_per_token_logps"),
            inputs["advantages"],
            inputs["kl_coef"],
            mask,
            epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
            normalizer=normalizer,
            per_sequence=self.loss_type == "grpo",
            importance_weight=inputs.get("importance_sampling_ratio"),
        )
        if self.loss_type == "grpo" and mode == "train":
            loss = loss / self.current_gradient_accumulation_steps

        # KL per attempt, over all processes
        for k in (0, 1):
            sel = (inputs["turn"] == k).float() * mask
            totals = self.accelerator.reduce(torch.stack([(kl.detach() * sel).sum(), sel.sum()]), reduction="sum")
            self._metrics[mode][f"kl/t{k + 1}"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        return loss
