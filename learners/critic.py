"""The value model: a causal-LM backbone with a scalar head per token, saved in Hugging Face format
(`AutoModelForTokenClassification` with one label), so transformers loads it back as it is."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification, PreTrainedModel

from learners.policy import response_hidden
from learners.rollout import PackedBatch


def load_critic(model_dir: str | Path) -> PreTrainedModel:
    """From a policy directory the head is new: zero-initialised, so every first value is 0 and
    warm-up starts from a neutral baseline. From a saved critic directory, the head is kept."""
    critic = AutoModelForTokenClassification.from_pretrained(str(model_dir), num_labels=1, dtype=torch.float32)
    if getattr(critic.config, "threefold_critic", False) is not True:
        head = critic.score
        torch.nn.init.zeros_(head.weight)
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)
        critic.config.threefold_critic = True
    critic.config.use_cache = False
    return critic


def response_values(critic: PreTrainedModel, p: PackedBatch, hidden=response_hidden) -> torch.Tensor:
    """V(s_t) for the state before response token t (aligned with its log-prob): [B, T]."""
    return critic.score(critic.dropout(hidden(critic, p)))[..., 0].float()
