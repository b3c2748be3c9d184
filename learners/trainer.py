"""The policy update step: critic-free estimators (GRPO, RLOO) with a clipped loss and a KL penalty."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learners.algos import advantage_estimators, clipped_policy_loss, kl_estimators, masked_mean
from learners.policy import export_weights, sequence_logprobs, token_logprobs
from learners.rollout import PackedBatch, RolloutBatch, pack


@dataclass(frozen=True)
class UpdateSettings:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2
    kl_coef: float = 0.01
    kl_estimator: str = "k3"
    advantage_estimator: str = "grpo"
    epochs: int = 1
    micro_batch_size: int = 256
    seed: int = 0


class PolicyTrainer:
    """Holds the policy, a frozen reference copy and AdamW; one `update` per RolloutBatch."""

    def __init__(self, model_dir: str | Path, settings: UpdateSettings):
        torch.manual_seed(settings.seed)
        self.settings = settings
        self.advantage_fn = advantage_estimators.get(settings.advantage_estimator)
        self.kl_fn = kl_estimators.get(settings.kl_estimator)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.config.use_cache = False
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, betas=settings.betas
        )
        self.version = 0

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """One optimizer step per epoch over the whole batch (micro-batches accumulate)."""
        packed = pack(batch, self.tokenizer.pad_token_id)
        advantages = self.advantage_fn(packed.rewards, packed.group_ids)
        self.model.train()
        stats: dict[str, float] = {}
        for _ in range(self.settings.epochs):
            self.optimizer.zero_grad(set_to_none=True)
            stats = self._accumulate(packed, advantages)
            stats["grad_norm"] = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
            )
            self.optimizer.step()
        self.model.eval()
        self.version += 1
        stats["advantage_abs_mean"] = float(advantages.abs().mean())
        return stats

    def _accumulate(self, packed: PackedBatch, advantages: torch.Tensor) -> dict[str, float]:
        s = self.settings
        n = packed.input_ids.shape[0]
        total_tokens = packed.response_mask.sum().clamp(min=1.0)
        sums = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_frac": 0.0}
        for lo in range(0, n, s.micro_batch_size):
            sl = slice(lo, lo + s.micro_batch_size)
            ids, attn, mask = packed.input_ids[sl], packed.attention_mask[sl], packed.response_mask[sl]
            logp, entropy = token_logprobs(self.model, ids, attn, with_entropy=True)
            with torch.no_grad():
                ref_logp, _ = token_logprobs(self.reference, ids, attn)
            pg_loss, info = clipped_policy_loss(logp, packed.old_logp[sl], advantages[sl], mask, s.clip_eps)
            kl = masked_mean(self.kl_fn(logp, ref_logp), mask)
            loss = pg_loss + s.kl_coef * kl
            # Token-level mean over the whole batch: weight each micro-batch by its token share.
            share = mask.sum() / total_tokens
            (loss * share).backward()
            for key, value in (("loss", loss), ("policy_loss", pg_loss), ("kl", kl),
                               ("entropy", masked_mean(entropy, mask)), ("clip_frac", info["clip_frac"])):
                sums[key] += float(value.detach()) * float(share)
        return sums

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        return sequence_logprobs(self.model, token_ids)

    def export(self) -> bytes:
        return export_weights(self.model)

    def save(self, out_dir: str | Path) -> None:
        self.model.save_pretrained(str(out_dir), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out_dir))
