"""Log-probs, entropy and weight export for a causal LM."""
from __future__ import annotations

import torch
from safetensors.torch import save
from transformers import DynamicCache, PreTrainedModel

from learners.rollout import PackedBatch


def token_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(x_{t+1} | x_{≤t}) for every position: [B, L] ids → [B, L-1] (and entropy [B, L-1])."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    return _gather(logits, input_ids[:, 1:], with_entropy)


def _gather(logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool):
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1).detach() if with_entropy else None
    return logp, entropy


def response_hidden(model: PreTrainedModel, p: PackedBatch) -> torch.Tensor:
    """Final hidden states at the positions that predict each response token: [B, T, H].

    Each distinct prompt runs through the backbone once; its keys and values are then shared by
    the responses that follow it (a group of G samples costs one prompt, not G). Exact: the same
    attention as the concatenated sequences, in another summation order."""
    backbone = model.base_model
    n_prompts, width = p.prompt_ids.shape
    dev = p.prompt_ids.device
    prompt_mask = (torch.arange(width, device=dev)[None, :] < p.prompt_len[:, None]).long()
    out = backbone(input_ids=p.prompt_ids, attention_mask=prompt_mask,
                   position_ids=torch.arange(width, device=dev).expand(n_prompts, width), use_cache=True)
    last = out.last_hidden_state[torch.arange(n_prompts, device=dev), p.prompt_len - 1]  # predicts response token 0
    shared = DynamicCache()
    for i, layer in enumerate(out.past_key_values.layers):
        shared.update(layer.keys[p.owner], layer.values[p.owner], i)
    steps = p.response_ids.shape[1]
    resp = backbone(input_ids=p.response_ids,
                    attention_mask=torch.cat([prompt_mask[p.owner], p.response_mask.long()], 1),
                    position_ids=p.prompt_len[p.owner][:, None] + torch.arange(steps, device=dev),
                    past_key_values=shared, use_cache=True)
    return torch.cat([last[p.owner].unsqueeze(1), resp.last_hidden_state[:, :-1]], 1)


def response_logprobs(model: PreTrainedModel, p: PackedBatch, with_entropy: bool = False, hidden=response_hidden):
    """log π(y_t | prompt, y_<t) for every response position: [B, T] (and entropy [B, T]); the
    vocabulary projection runs on response positions only. `hidden`: response_hidden or its compiled
    form (learners/fast_forward.py)."""
    logits = model.get_output_embeddings()(hidden(model, p)).float()
    return _gather(logits, p.response_ids, with_entropy)


@torch.no_grad()
def sequence_logprobs(model: PreTrainedModel, token_ids: list[int]) -> list[float]:
    """Log-prob of each token after the first, for the parity probe."""
    ids = torch.tensor([token_ids], device=model.device)
    logp, _ = token_logprobs(model, ids, torch.ones_like(ids))
    return logp[0].tolist()


def export_weights(model: PreTrainedModel) -> bytes:
    """The state dict as safetensors bytes, in the names the HF checkpoint uses."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save(state)
