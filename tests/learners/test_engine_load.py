"""learners/engine_load.py's in-place weight copy against a stand-in with vLLM's CPU layout (fused
q/k/v and gate/up weights dropped after oneDNN packing, a padded vocabulary, a tied lm_head). The
real engine is covered in tests/e2e/test_rlvr_loop.py; this checks the mapping on shapes the demo
model does not have (grouped k/v heads, tied embeddings)."""
import torch
import torch.nn.functional as F

from learners.engine_load import back_to_packed, copy_in_place


def packed():  # what a oneDNN-dispatched layer looks like: no weight, a kernel of its own
    return lambda x, weight, bias: (_ for _ in ()).throw(AssertionError("stale oneDNN kernel used"))


class Dropped(torch.nn.Module):
    def __init__(self, out: int, inp: int):
        super().__init__()
        self.output_size_per_partition, self.input_size_per_partition = out, inp
        self.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        self.cpu_linear = packed()


class Vocab(torch.nn.Module):
    def __init__(self, weight: torch.nn.Parameter, org: int):
        super().__init__()
        self.weight, self.org_vocab_size, self.cpu_linear = weight, org, packed()


def engine(hidden=8, heads=4, kv=1, inter=12, vocab=100, padded=128):
    head = hidden // heads
    table = torch.nn.Parameter(torch.zeros(padded, hidden), requires_grad=False)
    layer = torch.nn.Module()
    layer.self_attn = torch.nn.Module()
    layer.self_attn.qkv_proj = Dropped((heads + 2 * kv) * head, hidden)
    layer.mlp = torch.nn.Module()
    layer.mlp.gate_up_proj = Dropped(2 * inter, hidden)
    layer.input_layernorm = torch.nn.Module()
    layer.input_layernorm.weight = torch.nn.Parameter(torch.zeros(hidden), requires_grad=False)
    m = torch.nn.Module()
    m.model = torch.nn.Module()
    m.model.embed_tokens = Vocab(table, vocab)
    m.model.layers = torch.nn.ModuleList([layer])
    m.lm_head = Vocab(table, vocab)  # tied: the same parameter
    m.packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    return m


def checkpoint(hidden=8, heads=4, kv=1, inter=12, vocab=100):
    torch.manual_seed(0)
    head = hidden // heads
    p = "model.layers.0."
    emb = torch.randn(vocab, hidden)
    return {f"{p}self_attn.q_proj.weight": torch.randn(heads * head, hidden),
            f"{p}self_attn.k_proj.weight": torch.randn(kv * head, hidden),
            f"{p}self_attn.v_proj.weight": torch.randn(kv * head, hidden),
            f"{p}mlp.gate_proj.weight": torch.randn(inter, hidden), f"{p}mlp.up_proj.weight": torch.randn(inter, hidden),
            f"{p}input_layernorm.weight": torch.randn(hidden), "model.embed_tokens.weight": emb, "lm_head.weight": emb}


def test_inplace_copy_fills_fused_padded_and_tied_weights_and_uses_plain_linear():
    model, ck = engine(), checkpoint()
    assert copy_in_place(model, list(ck.items()))
    layer, p = model.model.layers[0], "model.layers.0."
    qkv = torch.cat([ck[f"{p}self_attn.{k}_proj.weight"] for k in "qkv"])
    assert torch.equal(layer.self_attn.qkv_proj.weight, qkv)
    assert torch.equal(layer.mlp.gate_up_proj.weight, torch.cat([ck[f"{p}mlp.gate_proj.weight"], ck[f"{p}mlp.up_proj.weight"]]))
    assert torch.equal(layer.input_layernorm.weight, ck[f"{p}input_layernorm.weight"])
    assert torch.equal(model.model.embed_tokens.weight[:100], ck["model.embed_tokens.weight"])
    assert model.lm_head.weight is model.model.embed_tokens.weight
    x = torch.randn(3, 8)
    proj = layer.self_attn.qkv_proj
    assert torch.equal(proj.cpu_linear(x, proj.weight, None), F.linear(x, qkv))  # the new weights, not the old kernel
    # a second sync writes into the same memory
    where = proj.weight.data_ptr()
    assert copy_in_place(model, [(k, v * 2) for k, v in ck.items()])
    assert proj.weight.data_ptr() == where and torch.equal(proj.weight, 2 * qkv)


def test_inplace_copy_refuses_an_incomplete_set_and_writes_nothing():
    model, ck = engine(), checkpoint()
    del ck["model.layers.0.self_attn.k_proj.weight"]  # v would land on k's rows
    assert not copy_in_place(model, list(ck.items()))
    ck = checkpoint()
    del ck["model.layers.0.input_layernorm.weight"]  # a parameter would keep its old values
    assert not copy_in_place(model, list(ck.items()))
    assert model.model.layers[0].self_attn.qkv_proj.weight.numel() == 0  # untouched: vLLM's reload runs


def test_back_to_packed_empties_the_weights_vllm_dropped():
    model = engine()
    assert copy_in_place(model, list(checkpoint().items()))
    back_to_packed(model)
    assert model.model.layers[0].mlp.gate_up_proj.weight.numel() == 0
    assert model.model.embed_tokens.weight.shape == (128, 8)  # never dropped, left as is
