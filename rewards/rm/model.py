"""Bradley–Terry reward model: a causal-LM backbone with a scalar head on the last non-pad token.

Saved as a standard Hugging Face sequence-classification directory (num_labels = 1), so
`AutoModelForSequenceClassification.from_pretrained` loads it and scores the same texts the same way.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

META_FILE = "threefold_rm.json"


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                       center_coef: float = 0.0) -> torch.Tensor:
    """mean −log σ(r_c − r_r − m), plus center_coef · mean((r_c + r_r)²), which keeps rewards near 0
    without changing which response is preferred (Eisenstein et al. 2023)."""
    diff = chosen - rejected - (margin if margin is not None else 0.0)
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last non-pad token of each row, for left or right padding alike."""
    pos = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(attention_mask)
    return (pos * attention_mask.long()).argmax(dim=1)


def _head(model: PreTrainedModel) -> torch.nn.Module:
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return getattr(model, name)
    raise ValueError(f"{type(model).__name__} has no `score` or `classifier` head")


def rewards(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One scalar per row: the head applied to the last non-pad token's hidden state."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
    return _head(model)(last).squeeze(-1).float()


class TextEncoder:
    """prompt + response → token ids (the tokenizer's own special tokens, plus EOS at the end when the
    tokenizer has one), padded on `side`. Training and scoring use the same encoder."""

    def __init__(self, tokenizer, max_length: int = 512, side: str = "right"):
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tok, self.max_length, self.side = tokenizer, max_length, side

    def ids(self, prompt: str, response: str) -> list[int]:
        ids = self.tok(prompt + response)["input_ids"]
        if self.tok.eos_token_id is not None and (not ids or ids[-1] != self.tok.eos_token_id):
            ids = ids + [self.tok.eos_token_id]
        return ids[-self.max_length:]  # keep the end: the head reads the last token

    def batch(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids(p, r) for p, r in zip(prompts, responses)]
        width = max(len(r) for r in rows)
        pad = self.tok.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(0, len(r)) if self.side == "right" else slice(width - len(r), width)
            ids[i, sl] = torch.tensor(r)
            mask[i, sl] = 1
        return ids, mask


def load_backbone(model_dir: str | Path, seed: int) -> tuple[PreTrainedModel, object]:
    """A sequence-classification model (1 label) on a causal-LM (or saved RM) directory; a new head
    starts at zero so every reward starts equal."""
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    quiet = logging.getLogger("transformers.modeling_utils")
    level, quiet.level = quiet.level, logging.ERROR  # the dropped lm_head is expected
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1,
                                                                         output_loading_info=True)
    finally:
        quiet.setLevel(level)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    head = _head(model)
    if any(k.startswith(name) for k in info["missing_keys"] for name, mod in model.named_children() if mod is head):
        torch.nn.init.zeros_(head.weight)  # a causal LM has no head yet: start every reward equal
    return model, tok


def save_reward_model(model: PreTrainedModel, tokenizer, out_dir: str | Path) -> None:
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
