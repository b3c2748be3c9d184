"""`learner.compile`: the learner's response forward pass for Llama-family models as one function
over plain tensors, compiled by torch.compile (inductor).

The maths is that of learners/policy.py::response_hidden: each distinct prompt runs once and its
keys and values serve every response that follows it. Here prompt and response tokens share every
per-token operation (one matrix product for q|k|v, one for gate|up, one norm kernel), and the
compiler fuses the norms, the rotary embedding, SiLU·up and the attention softmax. Weights are
inputs of the compiled graph, not constants, so one graph serves the policy and its frozen
reference. Results agree with the eager path to float rounding (another summation order)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from learners.rollout import PackedBatch

SUPPORTED = ("llama", "qwen2")


def unsupported(model) -> str | None:
    """Why `model` cannot take this path (None: it can)."""
    c = model.config
    if c.model_type not in SUPPORTED:
        return f"model type {c.model_type!r} (supported: {', '.join(SUPPORTED)})"
    if getattr(c, "hidden_act", "silu") != "silu":
        return f"hidden_act {c.hidden_act!r} (supported: silu)"
    if getattr(c, "use_sliding_window", False):
        return "a sliding attention window"
    attn = model.base_model.layers[0].self_attn
    extra = [n for n in ("q_norm", "k_norm") if hasattr(attn, n)]
    if extra:
        return f"attention with {', '.join(extra)}"
    return None


def _bias(*linears):
    return torch.cat([m.bias for m in linears]) if linears[0].bias is not None else None


def _layer_weights(layer) -> tuple:
    a, m = layer.self_attn, layer.mlp
    return (layer.input_layernorm.weight, a.q_proj.weight, a.k_proj.weight, a.v_proj.weight,
            _bias(a.q_proj, a.k_proj, a.v_proj), a.o_proj.weight, a.o_proj.bias,
            layer.post_attention_layernorm.weight, m.gate_proj.weight, m.up_proj.weight, _bias(m.gate_proj, m.up_proj),
            m.down_proj.weight, m.down_proj.bias)


def _rms(x, w, eps: float):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def _hidden(embed, layers: list, norm, eps: float, heads: int, kv_heads: int, gqa: bool, scaling: float,
            prompt_ids, prompt_len, owner, response_ids, cos, sin):
    """[B, T, H] final hidden states at the positions that predict each response token."""
    (U, P), (B, T) = prompt_ids.shape, response_ids.shape
    d = cos.shape[-1]
    n_p = U * P
    x = torch.cat([F.embedding(prompt_ids, embed).reshape(n_p, -1), F.embedding(response_ids, embed).reshape(B * T, -1)])
    cos_p, sin_p = (t[:n_p].view(U, P, 1, d).transpose(1, 2) for t in (cos, sin))
    cos_r, sin_r = (t[n_p:].view(B, T, 1, d).transpose(1, 2) for t in (cos, sin))
    ar_p = torch.arange(P, device=x.device)
    ar_t = torch.arange(T, device=x.device)
    key_ok = ar_p[None, :] < prompt_len[:, None]  # [U, P]: real prompt tokens
    mask_p = ((ar_p[:, None] >= ar_p[None, :])[None] & key_ok[:, None, :])[:, None]  # [U, 1, P, P]
    mask_r = torch.cat([key_ok[owner][:, None, :].expand(B, T, P),
                        (ar_t[:, None] >= ar_t[None, :]).expand(B, T, T)], -1)[:, None]  # [B, 1, T, P+T]
    sizes = [heads * d, kv_heads * d, kv_heads * d]
    for ln1, wq, wk, wv, b_qkv, wo, bo, ln2, wg, wu, b_gu, wd, bd in layers:
        q, k, v = F.linear(_rms(x, ln1, eps), torch.cat([wq, wk, wv]), b_qkv).split(sizes, -1)
        qp, kp, vp = (t[:n_p].view(U, P, -1, d).transpose(1, 2) for t in (q, k, v))
        qr, kr, vr = (t[n_p:].view(B, T, -1, d).transpose(1, 2) for t in (q, k, v))
        qp, kp = _rotate(qp, cos_p, sin_p), _rotate(kp, cos_p, sin_p)
        qr, kr = _rotate(qr, cos_r, sin_r), _rotate(kr, cos_r, sin_r)
        op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask_p, scale=scaling, enable_gqa=gqa)
        orr = F.scaled_dot_product_attention(qr, torch.cat([kp[owner], kr], 2), torch.cat([vp[owner], vr], 2),
                                             attn_mask=mask_r, scale=scaling, enable_gqa=gqa)
        o = torch.cat([op.transpose(1, 2).reshape(n_p, -1), orr.transpose(1, 2).reshape(B * T, -1)])
        x = x + F.linear(o, wo, bo)
        gate, up = F.linear(_rms(x, ln2, eps), torch.cat([wg, wu]), b_gu).chunk(2, -1)
        x = x + F.linear(F.silu(gate) * up, wd, bd)
    x = _rms(x, norm, eps)
    last = x[:n_p].view(U, P, -1)[torch.arange(U, device=x.device), prompt_len - 1]  # predicts response token 0
    return torch.cat([last[owner].unsqueeze(1), x[n_p:].view(B, T, -1)[:, :-1]], 1)


class CompiledHidden:
    """`response_hidden` for the learner: compiled on first use per shape family (dynamic sizes) and
    grad mode; call as hidden(model, packed)."""

    def __init__(self, compile: bool = True):
        self.fn = torch.compile(_hidden, dynamic=True) if compile else _hidden

    def __call__(self, model, p: PackedBatch) -> torch.Tensor:
        m = model.base_model
        c = m.config
        dev = p.prompt_ids.device
        (n_prompts, width), steps = p.prompt_ids.shape, p.response_ids.shape[1]
        positions = torch.cat([torch.arange(width, device=dev).repeat(n_prompts),
                               (p.prompt_len[p.owner][:, None] + torch.arange(steps, device=dev)).reshape(-1)])
        cos, sin = m.rotary_emb(m.embed_tokens.weight, positions[None])  # any rope type the model's config names
        attn = m.layers[0].self_attn
        return self.fn(m.embed_tokens.weight, [_layer_weights(layer) for layer in m.layers], m.norm.weight,
                       float(c.rms_norm_eps), int(c.num_attention_heads), int(c.num_key_value_heads),
                       c.num_key_value_heads != c.num_attention_heads,  # a bool stays static under dynamic=True
                       float(attn.scaling), p.prompt_ids, p.prompt_len, p.owner, p.response_ids, cos[0], sin[0])
