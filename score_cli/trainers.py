"""SCoRe's two training stages as a TRL `GRPOTrainer` subclass.

SCoRe (Kumar et al., 2024, arXiv 2409.12917; see SCORE_PAPER.md) trains on the policy's own
two-attempt rollouts x -> y1 -> p -> y2 (p = the self-correction instruction) with REINFORCE, a
leave-one-out baseline and a KL penalty to the *base* model, credited per attempt (gamma = 0):

    Stage I   attempt-1 tokens:  A = 0                               KL coefficient beta2
              attempt-2 tokens:  A = r(y2) - b                       KL coefficient beta1
    Stage II  attempt-1 tokens:  A = r(y1) - b                       KL coefficient beta1
              attempt-2 tokens:  A = r(y2) + alpha (r(y2) - r(y1)) - b   KL coefficient beta1

With gamma > 0, attempt 1's return also gets gamma times attempt 2's return. `beta_hold` (ours,
off by default) replaces beta1 on Stage II's attempt-1 tokens, to hold attempt 1 near the base.

N attempts (`turns` N > 2; x -> y1 -> p -> y2 -> p -> ... -> yN, each attempt after the same
instruction). The paper trains two and describes going further by training on each further
attempt; this generalisation of the credit is ours:

    Stage I   attempts 1..N-1:   A = 0                                   KL coefficient beta2
              attempt N:         A = r(yN) - b                           KL coefficient beta1
    Stage II  attempt 1:         A = r(y1) - b                           KL coefficient beta1
              attempt k >= 2:    A = r(yk) + alpha (r(yk) - r(y(k-1))) - b   KL coefficient beta1

Each attempt k is credited with its own reward and (k >= 2) its progress over the attempt before
it, as the two-attempt objective credits attempt 2; Stage I keeps every earlier attempt at the base
so that the last one learns to improve on what the base writes. gamma > 0 adds gamma times the
next attempt's return to each attempt's, from the last back. N = 2 is exactly the objective above.

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
  batch is reused, plain REINFORCE on-policy) plus the per-token KL term: the k3 value
  exp(ref - logp) - (ref - logp) - 1 multiplied by the ratio pi/pi_old (1 in value on-policy), so
  that its gradient is that of KL(pi || pi_ref), the paper's KL (as TRL's `use_bias_correction_kl`,
  on by default; without the ratio the gradient is the forward KL(pi_ref || pi)'s).
- reference: the base model in both stages (`ref_model`); Stage II never uses Stage I as its
  reference.

Two optional settings of the paper (the implementation choices are ours):

- base_attempt_share (Stage II): the paper allows taking attempt 1 from the base
  model for part of the data when data is limited. That share of the prompt groups (all
  `num_generations` rollouts of a prompt, so a group's baseline compares like with like; share *
  groups rounded stochastically; drawn by a generator seeded by seed and step, `_base_attempt_rows`)
  gets y1 from the base model (`ref_model`, or with LoRA the policy with its adapter disabled) and
  y2 (and any later attempt) from the policy after it. Those y1 are off-policy: their tokens get
  the turn id BASE_ATTEMPT, out of `env_mask` (no policy-gradient, no KL) but in the context; r(y1)
  still counts in attempt 2's return r2 + alpha (r2 - r1) and in the logged rewards. Logged:
  `base_attempts`. Not with vLLM (the base model is not loaded there).
- select_checkpoint (last | delta | reward) with heldout_problems: those training problems (by a
  seeded hash of their ids, `heldout_split`) are never trained on; at every checkpoint save
  (`_save_checkpoint`) the policy runs the same two-attempt rollout on them, one sample each at
  the training temperature (`evaluate_heldout`), logged as `heldout/reward_t1`, `heldout/reward_t2`,
  `heldout/delta`, `heldout/reward` (the stage's objective: r2 in Stage I, r1 + r2 in Stage II; with
  N attempts reward_tk for each, delta = r(yN) - r(y1), the last r or the sum over attempts)
  and written to checkpoint-N/heldout.json. The best by the criterion (ties: the later) is kept in
  transformers' TrainerState (best_metric, best_global_step, best_model_checkpoint: saved with
  each checkpoint, so it survives a resume, and never deleted by save_total_limit), and when
  training finishes the model is loaded from it (transformers' `_load_best_model`). TRL's eval
  loop with `load_best_model_at_end` is not used: it runs a loss and reference forward on every
  eval batch, needs num_generations_eval >= 2 for the RLOO baseline, evaluates on its own
  schedule (not at a Ctrl-C save), and keeps the earlier of tied checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object, is_peft_model
from transformers import Trainer
from trl import GRPOConfig, GRPOTrainer
from trl.extras.profiling import profiling_context
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import create_model_from_path, use_adapter

from score_cli.card import SCORE_PAPER
from score_cli.rollout import (
    NOT_GENERATED,
    Continuation,
    first_attempt_ids,
    generate_batch,
    instruction_ids,
    run_attempts,
)
from score_cli.tasks import Problem, PromptSpec, Task, apply_prompt

log = logging.getLogger(__name__)
TRUNCATION_WARNING = 0.5  # warn (once per attempt) when more than this share of a batch's attempts is cut off

BASELINES = ("rloo", "mean", "none")
SELECT_CHECKPOINT = ("last", "delta", "reward")
DEFAULT_HELDOUT = 64  # held-out problems when a checkpoint is selected by a measured criterion
# Turn index of attempt-1 tokens written by the base model (base_attempt_share): in the context, out of the loss.
BASE_ATTEMPT = -2
HELDOUT_FILE = "heldout.json"  # the held-out evaluation of a checkpoint, in its directory

# GRPOConfig options of TRL's GRPO objective that SCoRe's does not implement: name -> (default, what to do).
UNSUPPORTED_LOSS_OPTIONS = {
    "importance_sampling_level": ("token", "use 'token' (SCoRe's ratios are per token, per attempt)"),
    "top_entropy_quantile": (1.0, "use 1.0 (SCoRe trains every generated token)"),
    "entropy_coef": (0.0, "use 0.0 (SCoRe's objective has no entropy bonus)"),
    "use_adaptive_entropy": (False, "use False (SCoRe's objective has no entropy bonus)"),
    "off_policy_mask_threshold": (None, "leave it unset (no off-policy sequence masking in SCoRe's loss)"),
    "sync_ref_model": (False, "use False (SCoRe's KL reference is the base model in both stages)"),
}


@dataclass
class SCoReConfig(GRPOConfig):
    r"""Configuration for [`SCoReTrainer`]; every `GRPOConfig` parameter keeps its meaning, except:

    - `beta` is derived (max of beta1 and beta2) and only tells TRL to compute reference log-probs;
      the KL coefficient of each token is beta1 or beta2 by stage and attempt.
    - `max_completion_length` is set from `max_attempt_length`: TRL applies it to each generation
      call, that is, to each attempt.
    - `loss_type` may be "dapo" (token mean over the batch, the default) or "grpo" (sequence mean).
    - `scale_rewards`, `reward_weights` and `multi_objective_aggregation` are not used: SCoRe's
      advantage is reward minus a baseline, unscaled (the logged `reward` is the stage's return,
      r1 + r2 + bonus in Stage II).
    - `mask_truncated_completions` drops a rollout whose last attempt hit `max_attempt_length`
      (TRL checks the completion's last token; an earlier attempt ends with an EOS).
    - objective options SCoRe's loss does not implement are refused when set (`UNSUPPORTED_LOSS_OPTIONS`).
    - `bf16` and `activation_checkpointing` default to on with a CUDA GPU and off on CPU.
    """

    stage: int = field(default=1, metadata={"help": "1: Stage I (decouple the attempts), 2: Stage II (multi-turn RL)."})
    alpha: float = field(default=10.0, metadata={"help": "Stage II progress bonus: alpha * (r(y2) - r(y1))."})
    beta1: float = field(default=0.01, metadata={"help": "KL coefficient on attempt 2 (both attempts in Stage II)."})
    beta2: float = field(default=0.1, metadata={"help": "Stage I KL coefficient on attempt 1 (keeps it near base)."})
    beta_hold: float | None = field(
        default=None,
        metadata={"help": "Ours: Stage II KL coefficient on every attempt before the last (default: beta1, the "
                  "paper's); beta2's value holds attempt 1 near the base in Stage II as Stage I does."},
    )
    gamma: float = field(default=0.0, metadata={"help": "Share of attempt 2's return added to attempt 1's (paper: 0)."})
    turns: int = field(
        default=2,
        metadata={"help": "Attempts per rollout (the paper: 2). With N > 2, Stage I rewards the last attempt and holds "
                  "the others with beta2; Stage II credits attempt k with r(yk) + alpha (r(yk) - r(y(k-1)))."},
    )
    baseline: str = field(
        default="rloo", metadata={"help": "Reward baseline per prompt: rloo (leave-one-out), mean (group mean), none."}
    )
    condition_baseline: bool = field(
        default=False,
        metadata={"help": "Ours: attempt k >= 2's baseline averages only the prompt's rollouts whose attempt k-1 got "
                  "the same reward, so y1's luck (and the bonus's -alpha r(y1)) leaves attempt 2's advantage."},
    )
    instruction: str | None = field(
        default=None, metadata={"help": "Self-correction instruction; default: the task's (the paper's)."}
    )
    prompt: str = field(
        default="paper",
        metadata={"help": "Attempt-1 prompt: paper (the task's own), raw (the question alone), boxed (the question, "
                  "then 'Please reason step by step, and put your final answer within \\boxed{}.'), as in score eval."},
    )
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Attempt-1 user turn with {question} where the question goes (@FILE: read from FILE); "
                  "replaces prompt."},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "A system turn before the attempt-1 prompt (@FILE: read from FILE)."}
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
    base_attempt_share: float = field(
        default=0.0,
        metadata={"help": "Stage II: share of prompt groups whose attempt 1 comes from the base model (the paper's "
                  "option when data is limited); those y1 stay out of the loss. 0 to 1; not with vLLM."},
    )
    select_checkpoint: str = field(
        default="last",
        metadata={"help": "Model kept in the output directory: last, or the checkpoint with the best held-out delta "
                  "(r of the last attempt - r1) or reward (the stage's objective: the last attempt's r in Stage I, "
                  "the sum over attempts in Stage II)."},
    )
    heldout_problems: int | None = field(
        default=None,
        metadata={"help": "Training problems held out of training and evaluated at every checkpoint save "
                  "(default: 64 with select_checkpoint delta|reward, else 0)."},
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
        for name in ("alpha", "beta1", "beta2", "gamma", "beta_hold"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.turns < 2:
            raise ValueError(f"turns must be at least 2 (one attempt is single_turn), got {self.turns}")
        if self.single_turn and self.turns != 2:
            raise ValueError(f"single_turn trains one attempt: leave turns at its default (it is {self.turns})")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        if self.loss_type not in ("dapo", "grpo"):
            raise ValueError(f"SCoReTrainer supports loss_type 'dapo' or 'grpo', got {self.loss_type!r}")
        for name, (default, fix) in UNSUPPORTED_LOSS_OPTIONS.items():
            if getattr(self, name) != default:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported by SCoReTrainer: {fix}")
        self._check_training_options()
        problem = self.prompt_spec().problem()
        if problem:
            raise ValueError(problem)
        cuda = torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = cuda and torch.cuda.is_bf16_supported() and not self.fp16
        if self.activation_checkpointing is None:
            self.activation_checkpointing = cuda if self.gradient_checkpointing is None else self.gradient_checkpointing
        self.gradient_checkpointing = self.activation_checkpointing  # the name transformers < 5.2x reads
        if not cuda:
            self.use_cpu = True
        self.max_completion_length = self.max_attempt_length
        self.beta = max(self.beta1, self.beta2, self.beta_hold or 0.0)
        super().__post_init__()

    def prompt_spec(self) -> PromptSpec:
        """The prompt settings (prompt, prompt_template, system_prompt, instruction), as `score eval` takes them."""
        return PromptSpec(preset=self.prompt, template=self.prompt_template, system_prompt=self.system_prompt,
                          instruction=self.instruction)

    def _check_training_options(self) -> None:
        """Validate base_attempt_share, select_checkpoint and heldout_problems; resolve the latter's default."""
        share = self.base_attempt_share
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"base_attempt_share must be in [0, 1], got {share}")
        if share > 0 and (self.stage != 2 or self.single_turn):
            # Like alpha, a Stage II setting that one recipe can carry for both stages: Stage I holds
            # attempt 1 at the base by its KL anyway, and one attempt has no first attempt to take.
            log.warning("base_attempt_share %s is not used in %s (Stage II only, not single-turn)", share,
                        "Stage I" if self.stage != 2 else "single-turn training")
            self.base_attempt_share = share = 0.0
        if share > 0 and self.use_vllm:
            raise ValueError("base_attempt_share is not supported with use_vllm (the base model is not loaded in "
                             "vLLM): use transformers generation or base_attempt_share 0")
        if self.select_checkpoint not in SELECT_CHECKPOINT:
            raise ValueError(f"select_checkpoint must be one of {SELECT_CHECKPOINT}, got {self.select_checkpoint!r}")
        if self.heldout_problems is None:
            self.heldout_problems = DEFAULT_HELDOUT if self.select_checkpoint != "last" else 0
        if self.heldout_problems < 0:
            raise ValueError(f"heldout_problems must be >= 0, got {self.heldout_problems}")
        if self.select_checkpoint == "last":
            return
        if self.heldout_problems == 0:
            raise ValueError(f"select_checkpoint {self.select_checkpoint} needs held-out problems: set "
                             "heldout_problems > 0")
        if self.select_checkpoint == "delta" and self.single_turn:
            raise ValueError("select_checkpoint delta needs two attempts (single_turn has one): use reward or last")
        strategy = getattr(self.save_strategy, "value", self.save_strategy)
        if strategy not in ("steps", "epoch"):
            raise ValueError(f"select_checkpoint {self.select_checkpoint} chooses among checkpoints: set "
                             f"save_strategy to steps (it is {strategy!r})")


# ---------------------------------------------------------------------------------------------
# The SCoRe objective, per attempt (readable against SCORE_PAPER.md)
# ---------------------------------------------------------------------------------------------


def score_returns(*rewards: torch.Tensor, stage: int, alpha: float, gamma: float = 0.0) -> tuple[torch.Tensor, ...]:
    """Per-attempt returns (R1, ..., RN) from the binary rewards r(y1), ..., r(yN) (N >= 2).

    Stage I:  Rk = 0 for k < N (earlier attempts are held by the KL only), RN = r(yN).
    Stage II: R1 = r(y1), Rk = r(yk) + alpha * (r(yk) - r(y(k-1))) for k >= 2  (the progress bonus).
    gamma > 0: Rk += gamma * R(k+1), from the last attempt back (for N = 2: R1 += gamma * R2).
    """
    if len(rewards) < 2:
        raise ValueError("score_returns needs the rewards of at least two attempts")
    if stage == 1:
        returns = [torch.zeros_like(r) for r in rewards[:-1]] + [rewards[-1]]
    else:
        returns = [rewards[0]] + [r + alpha * (r - prev) for prev, r in zip(rewards, rewards[1:], strict=False)]
    for k in range(len(returns) - 2, -1, -1):
        returns[k] = returns[k] + gamma * returns[k + 1]
    return tuple(returns)


def kl_coefficients(turns: int, *, stage: int, beta1: float, beta2: float,
                    beta_hold: float | None = None) -> tuple[float, ...]:
    """The KL coefficient of each attempt's tokens: Stage I holds every attempt before the last at
    the base with beta2 and gives the last beta1; Stage II gives every attempt beta1 (the paper), or,
    with beta_hold (ours), the attempts before the last beta_hold."""
    if stage == 1:
        return (beta2,) * (turns - 1) + (beta1,)
    return (beta1 if beta_hold is None else beta_hold,) * (turns - 1) + (beta1,)


def reward_weights(turns: int, *, stage: int, alpha: float) -> list[float]:
    """Weights of r(y1), ..., r(yN) in the logged `reward`, the stage's objective: r(yN) in Stage I;
    sum_k Rk = sum_k r(yk) + alpha (r(yN) - r(y1)) in Stage II (the bonuses telescope)."""
    if stage == 1:
        return [0.0] * (turns - 1) + [1.0]
    weights = [1.0] * turns
    weights[0] -= alpha
    weights[-1] += alpha
    return weights


def baseline(
    returns: torch.Tensor, group_size: int, kind: str = "rloo", given: torch.Tensor | None = None
) -> torch.Tensor:
    """The baseline of each rollout, over the `group_size` rollouts of its prompt (which sit together).

    rloo: the mean of the *other* rollouts of the prompt (leave-one-out, Ahmadian et al. 2024);
    mean: the group mean (as GRPO, without its std scaling); none: zero.

    `given` (one label per rollout, e.g. r(y1) for attempt 2's baseline) restricts the average to
    the rollouts of the prompt with the same label. A baseline may depend on anything written before
    the action, so the gradient stays unbiased; what it removes is the part of attempt 2's return
    that y1 decided (whether y1 was right, and the bonus's -alpha r(y1)), so second attempts are
    compared with second attempts after equally good first ones. A rollout whose group has no other
    rollout with its label uses those of the whole batch (other prompts); with none, its own return.
    """
    if kind == "none":
        return torch.zeros_like(returns)
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}")
    if given is None:
        groups = returns.view(-1, group_size)  # (P, G)
        total = groups.sum(1, keepdim=True)  # (P, 1)
        if kind == "mean":
            return (total.expand_as(groups) / group_size).reshape(-1)
        if group_size < 2:
            raise ValueError("the rloo baseline needs at least 2 rollouts per prompt")
        return ((total - groups) / (group_size - 1)).reshape(-1)  # (N,)
    n = returns.numel()
    prompt = torch.arange(n, device=returns.device) // group_size  # (N,)
    itself = torch.eye(n, dtype=torch.bool, device=returns.device)
    others = (given.view(-1, 1) == given.view(1, -1)) & ~itself  # (N, N): other rollouts with the same label
    in_group = others & (prompt.view(-1, 1) == prompt.view(1, -1))  # (N, N)
    # Partners of each rollout: its group's other same-label rollouts, else the batch's, else none;
    # "mean" counts the rollout itself too.
    partners = torch.where(in_group.any(1, keepdim=True), in_group, others)
    if kind == "mean":
        partners = partners | itself
    partners = partners.to(returns.dtype)  # (N, N)
    count = partners.sum(1)  # (N,)
    mean = (partners @ returns) / count.clamp(min=1.0)  # (N,)
    return torch.where(count > 0, mean, returns)


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
    delta: float | None = None,
    normalizer: float | torch.Tensor | None = None,
    per_sequence: bool = False,
    importance_weight: torch.Tensor | None = None,
    use_bias_correction_kl: bool = True,
):
    """The SCoRe loss of one micro-batch; every argument is (B, T) over the completion tokens.

    per token:  L_t = -min(rho'_t A_t, clip(rho_t, 1-eps_low, 1+eps_high) A_t) + beta_t rho_t KL_t
      rho_t  = pi(y_t) / pi_old(y_t)  (= 1 on-policy, so the gradient is REINFORCE's A_t grad log pi)
      rho'_t = min(rho_t, delta) with `delta` (TRL's two-sided clipping), else rho_t
      KL_t   = exp(ref - logp) - (ref - logp) - 1  (k3, >= 0)
    The k3 value is multiplied by the ratio rho_t = pi/pi_old (differentiable, = 1 in value
    on-policy) so that its gradient is that of KL(pi || pi_ref), the paper's KL: over y_t ~ pi,
    E[grad(rho_t KL_t)] = E[(logp - ref) grad logp] = grad KL(pi || pi_ref). Without the ratio
    (`use_bias_correction_kl=False`) the gradient is the forward KL's, grad KL(pi_ref || pi).
    `importance_weight` (vLLM sampler / trainer mismatch, (B, T) or (B, 1)) scales the policy term.
    Masked tokens (instruction, padding) contribute nothing. The loss is the sum over unmasked
    tokens divided by `normalizer` (default: their number), or, with `per_sequence`, the mean over
    sequences of each sequence's token mean. Returns (loss, kl) with kl the per-token k3 value
    KL_t (B, T), without the ratio.
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)  # rho_t (B, T)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # (B, T)
    unclipped = ratio if delta is None else torch.clamp(ratio, max=delta)  # rho'_t (B, T)
    policy_term = -torch.min(unclipped * advantages, clipped * advantages)  # (B, T)
    if importance_weight is not None:  # vLLM sampler / trainer mismatch correction, from TRL
        policy_term = policy_term * importance_weight
    if ref_logps is not None:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1  # KL_t (B, T)
    else:
        kl = torch.zeros_like(logps)
    kl_term = ratio * kl if use_bias_correction_kl else kl  # (B, T), as TRL: unclipped, not detached
    loss_t = (policy_term + kl_coef * kl_term) * mask  # (B, T)
    if per_sequence:
        loss = (loss_t.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    else:
        loss = loss_t.sum() / (mask.sum().clamp(min=1.0) if normalizer is None else normalizer)
    return loss, kl


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def heldout_split(problems: Sequence[Problem], n: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(training problems, held-out problems): the `n` problems with the smallest sha256 of
    "seed:problem id" are held out, so the split depends only on the seed and the ids (not on the
    order or number of the other problems). Both keep the input order."""
    import hashlib

    if n <= 0:
        return list(problems), []
    if n >= len(problems):
        raise ValueError(f"heldout_problems={n} leaves no training problems (there are {len(problems)}): lower it")

    def key(p: Problem) -> bytes:
        return hashlib.sha256(f"{seed}:{p.id}".encode()).digest()

    held = {p.id for p in sorted(problems, key=key)[:n]}
    return [p for p in problems if p.id not in held], [p for p in problems if p.id in held]


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
    _paper = SCORE_PAPER  # TRL's default names GRPO's paper (DeepSeekMath)

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None, **kwargs):
        """SCoRe's model card (README.md in output_dir): the base model (the KL reference, also when it
        is a local directory), the stage, the recipe, SCoRe's citation (`score_cli.card`)."""
        if self.is_world_process_zero():
            from score_cli.card import write_model_card

            write_model_card(self, model_name=model_name, tags=tags)

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
        self.task = task = apply_prompt(task, args.prompt_spec())  # the prompt settings, as in score eval
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
        self._warned_cut: set[int] = set()  # attempts already warned about hitting max_attempt_length
        # The prompt column holds the question as plain text, so TRL treats it as text (it only logs
        # it); `_rollout` maps it back to the problem and builds attempt 1 with the task's prompt.
        self._by_question: dict[str, Problem] = {}
        for p in problems:
            self._by_question.setdefault(p.question, p)
        # Held-out problems (heldout_problems) are graded at every checkpoint save, never trained on.
        train_problems, self.heldout = heldout_split(problems, args.heldout_problems or 0, args.seed)
        dataset = Dataset.from_list([{"prompt": p.question, "problem_id": p.id} for p in train_problems])

        def attempt_reward(k: int):
            """TRL reward function `t{k+1}`: r(y_{k+1}) (single_turn: every one grades its one attempt)."""

            def reward(completions, problem_id, attempt_texts, **_):
                return self._grade(problem_id, [a[min(k, len(a) - 1)] for a in attempt_texts], attempt=k)

            reward.__name__ = f"t{k + 1}"
            return reward

        # The reference is the base model: TRL loads it from the policy's `_name_or_path`, so point
        # that at `ref_model` while TRL builds it (Stage II: the policy is Stage I, the ref is base).
        own_name = model.config._name_or_path
        if args.ref_model and args.beta > 0:
            model.config._name_or_path = args.ref_model
        try:
            super().__init__(
                model=model,
                reward_funcs=[attempt_reward(k) for k in range(args.turns)],
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
        # The logged `reward` is the stage's objective (`reward_weights`); single_turn: r(y1).
        self.attempts = 1 if args.single_turn else args.turns  # attempts per rollout
        weights = reward_weights(args.turns, stage=args.stage, alpha=args.alpha)
        if args.single_turn:
            weights = [1.0] + [0.0] * (args.turns - 1)
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        self._attempt_rewards: torch.Tensor | None = None
        self._last_answers: dict[int, list[str | None]] = {}
        if args.base_attempt_share > 0 and self.ref_model is None and not is_peft_model(unwrapped):
            raise ValueError("base_attempt_share needs the base model, loaded as the KL reference only when beta1 or "
                             "beta2 > 0: set one (or train with LoRA)")
        self._base_draw = (-1, 0)  # (global step, draws at it): seeds the choice of base-attempt groups

    # -- rewards ----------------------------------------------------------------------------------
    def _grade(self, problem_ids: Sequence[str], texts: Sequence[str], attempt: int | None = None) -> list[float]:
        grades = self.task.grade([self.problems[i] for i in problem_ids], list(texts))
        if attempt is not None:  # the extracted answers, for the answer-change rate (behaviour collapse)
            self._last_answers[attempt] = [g.answer for g in grades]
        return [float(g.correct) for g in grades]

    # -- generation: two attempts through the shared rollout ---------------------------------------
    def _rollout(self, prompts: list, trainer, group_size: int | None = None) -> dict:
        """TRL's `rollout_func`: y1, then each further attempt after the instruction, by `rollout.run_attempts`.

        In training with `base_attempt_share`, the rows of the groups `_base_attempt_rows` picks get
        y1 from the base model (`_generate_base`) and y2 from the policy; their y1 tokens get the
        turn id BASE_ATTEMPT, so `env_mask` keeps them out of the loss (they stay in the context)."""
        if group_size is None:
            group_size = self.num_generations if self.model.training else self.num_generations_eval
        base_rows = self._base_attempt_rows(len(prompts), group_size) if self.model.training else []
        continuation: Continuation | None = None
        attempt = 0

        def generate(inputs: list[list[int]], *, group_size: int = 1):
            nonlocal continuation, attempt
            attempt += 1
            if attempt == 1 and any(base_rows):
                return self._generate_mixed(inputs, base_rows, group_size), None  # attempt 2 re-reads x + y1
            if not self._continues_attempts():
                return self._generate_single_turn(inputs, None, {}, group_size)
            previous, continuation = continuation, None
            ids, continuation = self._generate_continuing(inputs, previous)
            return ids, None

        first = [first_attempt_ids(self.processing_class, self.task, self._by_question[q]) for q in prompts]
        rollouts = run_attempts(
            generate, first, turns=self.attempts,
            instruction=self._instruction_ids, eos_id=self._eos_id, group_size=group_size,
        )
        continuation = None  # free the last attempt's KV cache before training
        completion_ids, env_mask, turn_ids, logprobs = [], [], [], []
        for i, r in enumerate(rollouts):
            ids, turn, lps = r.completion(self._eos_id, self._instruction_ids)
            if base_rows and base_rows[i]:
                turn = [BASE_ATTEMPT if t == 0 else t for t in turn]
            completion_ids.append(ids)
            turn_ids.append(turn)
            env_mask.append([int(t >= 0) for t in turn])  # instruction, appended EOS and base y1 out
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
            "attempt_cut": [[int(not o or o[-1] != self._eos_id) for o in r.outputs] for r in rollouts],
            "base_attempt": [int(bool(base_rows) and base_rows[i]) for i in range(len(rollouts))],
        }

    def _base_attempt_rows(self, n: int, group_size: int) -> list[bool]:
        """Which of this process's `n` rollouts get attempt 1 from the base model (base_attempt_share).

        Whole groups (the `group_size` rollouts of a prompt, which sit together) are picked, so each
        group's baseline compares like with like. Of the G groups of the generation batch over all
        processes, share * G rounded stochastically (floor, plus one with probability equal to the
        fractional part) are drawn without replacement, by a `random.Random` seeded with the seed,
        the global step and the number of earlier draws at that step: the same on every process,
        and again after a resume."""
        share = self.args.base_attempt_share
        if share <= 0:
            return []
        step = self.state.global_step
        draws = self._base_draw[1] + 1 if self._base_draw[0] == step else 1
        self._base_draw = (step, draws)
        rng = random.Random(f"base-attempts:{self.args.seed}:{step}:{draws}")
        offset = self.accelerator.process_index * n  # this process's rows in the whole generation batch
        groups = -(-n * self.accelerator.num_processes // group_size)
        exact = share * groups
        k = min(groups, math.floor(exact) + int(rng.random() < exact - math.floor(exact)))
        chosen = set(rng.sample(range(groups), k))
        return [(offset + i) // group_size in chosen for i in range(n)]

    def _generate_mixed(self, inputs: list[list[int]], base_rows: list[bool], group_size: int) -> list[list[int]]:
        """Attempt 1 with some rows by the base model and the others by the policy (each in one call;
        both are called on every process, also with no rows, to keep distributed calls matched)."""
        policy = [i for i, b in enumerate(base_rows) if not b]
        base = [i for i, b in enumerate(base_rows) if b]
        outputs: list[list[int]] = [[] for _ in inputs]
        if self._continues_attempts():
            ids, kept = self._generate_continuing([inputs[i] for i in policy], None)
            if kept is not None:
                kept.release()
        else:
            ids = self._generate_single_turn([inputs[i] for i in policy], None, {}, group_size)[0] if policy else []
        for i, o in zip(policy, ids, strict=True):
            outputs[i] = list(o)
        for i, o in zip(base, self._generate_base([inputs[i] for i in base]), strict=True):
            outputs[i] = list(o)
        return outputs

    def _generate_base(self, inputs: list[list[int]]) -> list[list[int]]:
        """Generate with the base model, the KL reference: `ref_model`, or with LoRA the policy with
        its adapter disabled (as TRL computes reference log-probs); same generation settings as the policy."""
        if self.ref_model is not None:
            model, adapter = self.ref_model, contextlib.nullcontext
        else:
            model, adapter = self.model_wrapped, lambda m: use_adapter(m, adapter_name=None)
        with (
            profiling_context(self, "transformers.generate_base"),
            unwrap_model_for_generation(
                model, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
            self._dist.summon_full_params(model, recurse=False),
        ):
            if not inputs:
                return []
            with adapter(unwrapped):
                return generate_batch(
                    unwrapped, inputs, pad_id=self._tokenizer.pad_token_id, eos_ids=self.eos_token_ids,
                    generation_config=self.generation_config,
                )[0]

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
            if not inputs:  # no rows on this process (base_attempt_share); the context above still ran
                return [], None
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
        self._attempt_rewards = rewards  # (N_all, turns): r(y1), r(y2), ..., gathered across processes
        return rewards

    # -- advantages and KL coefficients per token ----------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        args: SCoReConfig = self.args
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        K = self.attempts
        r = [self._attempt_rewards[:, k] for k in range(K)]  # r(y_k), each (N_all,)
        if args.single_turn:  # one attempt, rewarded like Stage II's attempt 1
            returns = [r[0]]
        else:
            returns = list(score_returns(*r, stage=args.stage, alpha=args.alpha, gamma=args.gamma))
        # Attempt k's baseline; with condition_baseline, over rollouts whose attempt k-1 scored the same.
        advantages = [
            R - baseline(R, group, args.baseline, given=r[k - 1] if args.condition_baseline and k else None)
            for k, R in enumerate(returns)
        ]
        if args.stage == 1 and args.gamma == 0 and not args.single_turn:
            advantages[:-1] = [torch.zeros_like(A) for A in advantages[:-1]]  # only the last attempt is rewarded
        # A base model's y1 (base_attempt_share) is off-policy: no advantage (its tokens are also out of
        # the mask, turn BASE_ATTEMPT); its r(y1) still enters attempt 2's return above.
        from_base = self.accelerator.gather(
            torch.tensor([float(x.get("base_attempt", 0)) for x in inputs], device=r[0].device)
        ) > 0  # (N_all,)
        advantages[0] = torch.where(from_base, torch.zeros_like(advantages[0]), advantages[0])

        # Keep this process's rollouts, then spread per attempt over the completion tokens.
        n = len(inputs)
        local = slice(self.accelerator.process_index * n, (self.accelerator.process_index + 1) * n)
        width = out["completion_ids"].size(1)
        turn = torch.full((n, width), NOT_GENERATED, dtype=torch.long, device=out["completion_ids"].device)
        for i, x in enumerate(inputs):
            turn[i, : len(x["turn_ids"])] = torch.tensor(x["turn_ids"])
        betas = kl_coefficients(K, stage=1 if args.stage == 1 and not args.single_turn else 2, beta1=args.beta1,
                                beta2=args.beta2, beta_hold=args.beta_hold)
        out["advantages"] = per_token(turn, [A[local] for A in advantages])  # (B, T)
        out["kl_coef"] = per_token(turn, [torch.tensor(b) for b in betas])  # (B, T)
        out["turn"] = turn

        # Stable log names (SCORE_PAPER.md metrics), over all processes: per attempt k (reward/tk, ...)
        # and per consecutive pair; the first pair (t1, t2) keeps the plain names delta, i2c, c2i.
        m = self._metrics[mode]
        for k in range(self._attempt_rewards.size(1)):
            m[f"reward/t{k + 1}"].append(self._attempt_rewards[:, k].mean().item())
        for k, (R, A) in enumerate(zip(returns, advantages, strict=True)):
            m[f"return/t{k + 1}"].append(R.mean().item())
            m[f"advantage/t{k + 1}/mean"].append(A.mean().item())
            m[f"advantage/t{k + 1}/std"].append(A.std().item() if A.numel() > 1 else 0.0)
        have_answers = all(len(self._last_answers.get(k, ())) == n for k in range(K))
        for k in range(K - 1):
            pair = "" if k == 0 else f"/t{k + 1}t{k + 2}"
            a, b = r[k], r[k + 1]
            m[f"delta{pair}"].append((b - a).mean().item())
            m[f"i2c{pair}"].append(((a == 0) & (b == 1)).float().mean().item())
            m[f"c2i{pair}"].append(((a == 1) & (b == 0)).float().mean().item())
            if not have_answers:
                continue
            # Behaviour collapse (the paper's edit-distance histograms): how often attempt k+1 changes
            # the final answer, and how often it is a verbatim copy of attempt k ...
            changed = [float(x != y) for x, y in zip(self._last_answers[k], self._last_answers[k + 1], strict=True)]
            body = self.task.compared_part  # without an opening check of the attempt before
            copied = [float(body(x["attempt_texts"][k]) == body(x["attempt_texts"][k + 1])) for x in inputs]
            flags = self.accelerator.gather(torch.tensor([changed, copied], device=turn.device).T)  # (N_all, 2)
            m[f"answer_changed{pair}"].append(flags[:, 0].mean().item())
            m[f"zero_edit{pair}"].append(flags[:, 1].mean().item())
            # ... and whether it tells the two cases apart: learnt self-correction changes wrong
            # attempts and keeps right ones; collapse changes neither.
            for name, cases in (("changed_after_wrong", a == 0), ("changed_after_right", a == 1)):
                if cases.any():
                    m[f"{name}{pair}"].append(flags[cases, 0].mean().item())
        lengths = torch.tensor([x["attempt_lengths"] for x in inputs], dtype=torch.float32, device=turn.device)
        lengths = self.accelerator.gather(lengths)  # (N_all, attempts)
        for k in range(lengths.size(1)):
            m[f"length/t{k + 1}"].append(lengths[:, k].mean().item())
        # Attempts that hit max_attempt_length before ending: cut off, their answers usually score 0.
        cut = self.accelerator.gather(torch.tensor([x["attempt_cut"] for x in inputs], dtype=torch.float32,
                                                   device=turn.device)).mean(0)
        for k, share in enumerate(cut.tolist()):
            m[f"truncated/t{k + 1}"].append(share)
            if share > TRUNCATION_WARNING and k not in self._warned_cut:
                self._warned_cut.add(k)
                log.warning("%.0f%% of attempt %d's samples hit max_attempt_length %d before they ended and are "
                            "cut off: raise max_attempt_length (the recipe's key, or --max-attempt-length)",
                            100 * share, k + 1, args.max_attempt_length)
        if args.base_attempt_share > 0 and mode == "train":
            m["base_attempts"].append(from_base.float().mean().item())  # the share used in this batch
        return out

    # -- held-out evaluation and checkpoint selection ------------------------------------------------
    def evaluate_heldout(self) -> dict[str, float]:
        """The current policy on the held-out problems, over all processes: mean r(yk) of each attempt
        (reward_t1, reward_t2, ...), delta = r(last) - r(y1), and reward = the stage's objective (the
        last attempt's r in Stage I, the sum over attempts in Stage II, r1 single-turn). Same rollout
        as training (`_rollout`), one sample per problem at the training temperature, under a torch
        RNG seeded by seed + step and forked from training's."""
        n_proc, rank = self.accelerator.num_processes, self.accelerator.process_index
        per = -(-len(self.heldout) // n_proc)
        mine = self.heldout[rank * per : (rank + 1) * per]
        rows = mine + [self.heldout[-1]] * (per - len(mine))  # the same number of calls on every process
        chunk = max(1, self.args.per_device_train_batch_size * self.args.steps_per_generation)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        was_training = self.model.training
        graded: list[tuple[float, ...]] = []
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.args.seed + self.state.global_step)
                for start in range(0, per, chunk):
                    batch = rows[start : start + chunk]
                    texts = self._rollout([p.question for p in batch], self, group_size=1)["attempt_texts"]
                    ids = [p.id for p in batch]
                    graded += zip(*(self._grade(ids, [t[k] for t in texts]) for k in range(self.attempts)),
                                  strict=True)
        finally:
            self.model.train(was_training)
        graded = gather_object(graded[: len(mine)]) if n_proc > 1 else graded[: len(mine)]
        means = [sum(g[k] for g in graded) / len(graded) for k in range(self.attempts)]
        reward = means[-1] if self.args.stage == 1 else means[0] if self.args.single_turn else sum(means)
        return {**{f"reward_t{k + 1}": v for k, v in enumerate(means)}, "delta": means[-1] - means[0],
                "reward": reward}

    def _save_checkpoint(self, model, trial):
        """With held-out problems, before checkpoint-N is saved: evaluate them, log `heldout/*`, write
        checkpoint-N/heldout.json, and track the best checkpoint by `select_checkpoint` (ties: the
        later) in transformers' TrainerState (best_metric, best_global_step): it is saved in the
        checkpoint's trainer_state.json, so it survives a resume, and it sets best_model_checkpoint,
        which `save_total_limit` never deletes."""
        if not self.heldout:
            return super()._save_checkpoint(model, trial)
        from score_cli.files import atomic_write_json

        values = self.evaluate_heldout()
        step = self.state.global_step
        Trainer.log(self, {f"heldout/{k}": v for k, v in values.items()})  # not GRPO's: it flushes train metrics
        select = self.args.select_checkpoint
        if select != "last" and (self.state.best_metric is None or values[select] >= self.state.best_metric):
            self.state.best_metric, self.state.best_global_step = values[select], step
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{step}")
            atomic_write_json(os.path.join(folder, HELDOUT_FILE), {
                "step": step, **values, "heldout_problems": len(self.heldout), "select_checkpoint": select,
                "best_step": self.state.best_global_step if select != "last" else None,
            })
        return super()._save_checkpoint(model, trial)

    def train(self, *args, **kwargs):
        """transformers' `train`; when it finishes with select_checkpoint delta|reward, the model
        holds the best checkpoint's weights (transformers' `_load_best_model`), ready to be saved."""
        output = super().train(*args, **kwargs)
        if self.args.select_checkpoint != "last" and self.state.global_step >= self.state.max_steps:
            best = self.state.best_global_step
            if not best or self.state.best_model_checkpoint is None:
                log.warning("no held-out evaluation was recorded: keeping the last model")
            elif best != self.state.global_step:
                self._load_best_model()
        return output

    # -- the loss ---------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, _, aux_loss = self._get_per_token_logps_and_entropies(
            model, ids, attention, inputs["completion_ids"].size(1), compute_aux_loss=self.aux_loss_enabled
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
            delta=self.args.delta,
            normalizer=normalizer,
            per_sequence=self.loss_type == "grpo",
            importance_weight=inputs.get("importance_sampling_ratio"),
            use_bias_correction_kl=self.args.use_bias_correction_kl,
        )
        if self.loss_type == "grpo" and mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        if self.aux_loss_enabled:  # MoE load-balancing loss (router_aux_loss_coef), as TRL adds it
            loss = loss + self.router_aux_loss_coef * aux_loss / (
                self.current_gradient_accumulation_steps if mode == "train" else 1.0
            )
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        # KL per attempt, over all processes
        for k in range(self.attempts):
            sel = (inputs["turn"] == k).float() * mask
            totals = self.accelerator.reduce(torch.stack([(kl.detach() * sel).sum(), sel.sum()]), reduction="sum")
            self._metrics[mode][f"kl/t{k + 1}"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        return loss
