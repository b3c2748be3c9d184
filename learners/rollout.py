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
        offset = 0
        for p in parts:
            out.prompt_ids += p.prompt_ids
            out.response_ids += p.response_ids
            out.behaviour_logprobs += p.behaviour_logprobs
            out.group_ids += [g + offset for g in p.group_ids]
            out.texts += p.texts
            out.metadata += p.metadata
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
                            pick(self.reward_detail))

    def select_groups(self, groups: list[int]) -> "RolloutBatch":
        """The samples of `groups`, in that order, renumbered 0..len(groups)-1."""
        rank = {g: i for i, g in enumerate(groups)}
        idx = sorted((i for i, g in enumerate(self.group_ids) if g in rank), key=lambda i: rank[self.group_ids[i]])
        return self.select(idx, [rank[self.group_ids[i]] for i in idx])


@dataclass
class PackedBatch:
    """Right-padded tensors. L = longest prompt+response; values are per predicted token [B, L-1]."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    response_mask: torch.Tensor  # [B, L-1], 1.0 where token t+1 is a response token
    old_logp: torch.Tensor  # [B, L-1], behaviour log-probs on response positions, 0 elsewhere
    rewards: torch.Tensor  # [B]
    group_ids: torch.Tensor  # [B]


def pack(batch: RolloutBatch, pad_id: int) -> PackedBatch:
    if batch.rewards is None:
        raise ValueError("RolloutBatch has no rewards; score it before learning")
    rows = [p + r for p, r in zip(batch.prompt_ids, batch.response_ids)]
    width = max(len(r) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    resp = torch.zeros((n, width - 1))
    old = torch.zeros((n, width - 1))
    for i, (p, r, lp) in enumerate(zip(batch.prompt_ids, batch.response_ids, batch.behaviour_logprobs)):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        attn[i, : len(p) + len(r)] = 1
        start = len(p) - 1  # logits at position t predict token t+1
        resp[i, start : start + len(r)] = 1.0
        old[i, start : start + len(r)] = torch.tensor(lp, dtype=torch.float32)
    return PackedBatch(ids, attn, resp, old, torch.tensor(batch.rewards, dtype=torch.float32),
                       torch.tensor(batch.group_ids))
