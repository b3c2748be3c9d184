"""Log-probs, entropy and weight export for a causal LM."""
from __future__ import annotations

import torch
from safetensors.torch import save
from transformers import PreTrainedModel


def token_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(x_{t+1} | x_{≤t}) for every position: [B, L] ids → [B, L-1] (and entropy [B, L-1])."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        entropy = -(logp_all.exp() * logp_all).sum(-1).detach()
    return logp, entropy


@torch.no_grad()
def sequence_logprobs(model: PreTrainedModel, token_ids: list[int]) -> list[float]:
    """Log-prob of each token after the first, for the parity probe."""
    ids = torch.tensor([token_ids])
    logp, _ = token_logprobs(model, ids, torch.ones_like(ids))
    return logp[0].tolist()


def export_weights(model: PreTrainedModel) -> bytes:
    """The state dict as safetensors bytes, in the names the HF checkpoint uses."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save(state)
