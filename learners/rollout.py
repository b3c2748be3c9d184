"""RolloutBatch: what generators produce and the learner consumes (plain lists, cheap to pickle)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class RolloutBatch:
    """B = prompts × group size samples.

    prompt_ids[i]: prompt tokens (with BOS); response_ids[i]: generated tokens (EOS included
    when the sample finished); behaviour_logprobs[i][t]: log-prob of response_ids[i][t] under
    the policy that generated it (version `policy_version`); group_ids[i]: index of its prompt.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    behaviour_logprobs: list[list[float]]
    group_ids: list[int]
    texts: list[str]
    metadata: list[dict[str, Any]]
    policy_version: int
    rewards: list[float] | None = None
    statuses: list[str] | None = None
    reward_detail: list[dict] | None = None  # per sample: {source name: {"score", "status"}}
    generate_seconds: float = 0.0  # the generator's wall time for this batch (shards: their own)
    sample_ids: list[tuple[int, int]] | None = None  # per sample: (draw, j), the j-th sample of the run's draw-th prompt

    def __len__(self) -> int:
        return len(self.response_ids)

    @staticmethod
    def concat(parts: list["RolloutBatch"]) -> "RolloutBatch":
        """Join shards from several generators (or sampling rounds); group ids are shifted to stay
        unique; rewards and statuses are kept when every part has them."""
        out = RolloutBatch([], [], [], [], [], [], min(p.policy_version for p in parts))
        scored = all(p.rewards is not None for p in parts)
        out.rewards, out.statuses = ([], []) if scored else (None, None)
        out.reward_detail = [] if scored and all(p.reward_detail is not None for p in parts) else None
        out.sample_ids = [] if all(p.sample_ids is not None for p in parts) else None
        offset = 0
        for p in parts:
            out.prompt_ids += p.prompt_ids
            out.response_ids += p.response_ids
            out.behaviour_logprobs += p.behaviour_logprobs
            out.group_ids += [g + offset for g in p.group_ids]
            out.texts += p.texts
            out.metadata += p.metadata
            if out.sample_ids is not None:
                out.sample_ids += p.sample_ids
            if scored:
                out.rewards += p.rewards
                out.statuses += p.statuses or [""] * len(p)
                if out.reward_detail is not None:
                    out.reward_detail += p.reward_detail
            offset += (max(p.group_ids) + 1) if p.group_ids else 0
        return out

    def select(self, idx: list[int], group_ids: list[int] | None = None) -> "RolloutBatch":
        """The samples at `idx`, in that order (with new group ids if given)."""
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return RolloutBatch(pick(self.prompt_ids), pick(self.response_ids), pick(self.behaviour_logprobs),
                            group_ids if group_ids is not None else pick(self.group_ids), pick(self.texts),
                            pick(self.metadata), self.policy_version, pick(self.rewards), pick(self.statuses),
                            pick(self.reward_detail), self.generate_seconds, pick(self.sample_ids))

    def select_groups(self, groups: list[int]) -> "RolloutBatch":
        """The samples of `groups`, in that order, renumbered 0..len(groups)-1."""
        rank = {g: i for i, g in enumerate(groups)}
        idx = sorted((i for i, g in enumerate(self.group_ids) if g in rank), key=lambda i: rank[self.group_ids[i]])
        return self.select(idx, [rank[self.group_ids[i]] for i in idx])


SEED_STRIDE = 4096  # vLLM seeds sample j of a prompt with seed + j: room for that many samples per prompt


def row_seed(seed: int, draw: int) -> int:
    """The sampling seed of the `draw`-th prompt handed out in a run seeded `seed` (fits in 62 bits)."""
    return (seed * 1_000_003 * SEED_STRIDE + draw * SEED_STRIDE) % (1 << 62)


@dataclass
class PackedBatch:
    """The learner's tensors. The samples of a group share their prompt, so each distinct prompt is
    packed once and every response points at it (`owner`): the forward pass runs each prompt once
    (see learners/policy.py). Per-token values cover response positions only.
    U distinct prompts, B samples, P = longest prompt, T = longest response; right-padded."""

    prompt_ids: torch.Tensor  # [U, P]
    prompt_len: torch.Tensor  # [U]
    owner: torch.Tensor  # [B], index into the prompts
    response_ids: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] float, 1.0 on response tokens
    old_logp: torch.Tensor  # [B, T], behaviour log-probs, 0 on padding
    rewards: torch.Tensor  # [B]
    group_ids: torch.Tensor  # [B]

    def to(self, device: torch.device) -> "PackedBatch":
        """The same batch on `device` (the learner's GPU); itself when it is there already."""
        if self.prompt_ids.device == torch.device(device):
            return self
        return PackedBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def rows(self, idx: torch.Tensor) -> "PackedBatch":
        """The samples `idx` with only the prompts they use."""
        used, owner = torch.unique(self.owner[idx], return_inverse=True)
        return PackedBatch(self.prompt_ids[used], self.prompt_len[used], owner, self.response_ids[idx],
                           self.response_mask[idx], self.old_logp[idx], self.rewards[idx], self.group_ids[idx])


def _right_padded(rows: list[list], pad, dtype) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=dtype)


def pack(batch: RolloutBatch, pad_id: int) -> PackedBatch:
    if batch.rewards is None:
        raise ValueError("RolloutBatch has no rewards; score it before learning")
    index: dict[tuple, int] = {}
    owner = [index.setdefault(tuple(p), len(index)) for p in batch.prompt_ids]
    prompts = [list(p) for p in index]
    lens = [len(r) for r in batch.response_ids]
    width = max(1, max(lens))
    return PackedBatch(
        prompt_ids=_right_padded(prompts, pad_id, torch.long),
        prompt_len=torch.tensor([len(p) for p in prompts]),
        owner=torch.tensor(owner),
        response_ids=_right_padded(batch.response_ids, pad_id, torch.long),
        response_mask=(torch.arange(width)[None, :] < torch.tensor(lens)[:, None]).float(),
        old_logp=_right_padded(batch.behaviour_logprobs, 0.0, torch.float32),
        rewards=torch.tensor(batch.rewards, dtype=torch.float32),
        group_ids=torch.tensor(batch.group_ids),
    )
