import torch
from transformers import AutoModelForCausalLM

from learners.policy import response_logprobs, token_logprobs
from learners.rollout import RolloutBatch, pack


def full_sequence_logprobs(model, batch: RolloutBatch) -> torch.Tensor:
    """The reference computation: each prompt+response as one sequence, log-probs read off at the
    response positions ([B, T], 0 on padding)."""
    width = max(len(r) for r in batch.response_ids)
    out = torch.zeros(len(batch), width)
    for i, (p, r) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
        ids = torch.tensor([p + r])
        logp, _ = token_logprobs(model, ids, torch.ones_like(ids))
        out[i, :len(r)] = logp[0, len(p) - 1:]
    return out


def test_shared_prompt_forward_equals_one_sequence_per_sample(tiny_model_dir):
    # 3 prompts of different lengths, 7 samples, responses of 1–4 tokens: log-probs and their
    # gradients must match the plain forward pass of each concatenated sequence
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    prompts = [[1, 20, 21, 22, 23, 24], [1, 30], [1, 40, 41, 42]]
    owners = [0, 0, 0, 1, 1, 2, 2]
    responses = [[5, 6, 7, 2], [8], [9, 9], [10, 11, 12, 13], [2], [14, 15, 2], [16]]
    batch = RolloutBatch([prompts[o] for o in owners], responses, [[0.0] * len(r) for r in responses],
                         owners, [""] * 7, [{}] * 7, 0, rewards=[0.0] * 7)
    packed = pack(batch, pad_id=0)
    assert packed.prompt_ids.shape == (3, 6)  # each prompt once
    weights = torch.randn(7, 4) * packed.response_mask

    shared, _ = response_logprobs(model, packed)
    (shared * weights).sum().backward()
    grad_shared = [q.grad.clone() for q in model.parameters()]
    model.zero_grad()
    full = full_sequence_logprobs(model, batch)
    (full * weights).sum().backward()
    grad_full = [q.grad.clone() for q in model.parameters()]

    assert full.abs().max() > 1.0  # real log-probs, not zeros
    torch.testing.assert_close(shared * packed.response_mask, full, atol=2e-5, rtol=0)
    for a, b in zip(grad_shared, grad_full):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
