import numpy as np
import torch

import pytest

from learners.weight_pack import FlatWeights, fused_targets, pack, unpack


def test_roundtrip_is_bit_exact_across_dtypes_and_buckets():
    torch.manual_seed(0)
    named = [("a", torch.randn(3, 5)), ("b", torch.randn(7).half()), ("c", torch.arange(5, dtype=torch.int64)),
             ("d", torch.randn(2, 2, 3).bfloat16()), ("e", torch.randn(1000))]
    buckets = pack(named, bucket_bytes=100)  # a (60 B) and b (14 B) share one; c, d alone; e (4000 B) alone
    assert [b.names for b in buckets] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(off % 16 == 0 for b in buckets for off in b.offsets)
    got = dict(unpack(buckets))
    assert list(got) == [n for n, _ in named]
    for name, t in named:
        assert got[name].dtype == t.dtype and got[name].shape == t.shape
        assert torch.equal(got[name], t), name


def test_unpack_reads_a_read_only_array_without_copying():
    # what a generator gets from Ray's object store: a read-only array; the views share its memory
    buckets = pack([("w", torch.ones(4, 4))])
    buckets[0].data.setflags(write=False)
    (name, view), = unpack(buckets)
    assert view.data_ptr() == buckets[0].data.ctypes.data
    assert float(view.sum()) == 16.0


def test_cast_on_pack_halves_the_bytes():
    named = [("w", torch.randn(64, 64)), ("steps", torch.tensor([3]))]
    half = pack(named, dtype=torch.bfloat16)
    full = pack(named)
    assert half[0].dtypes == ["bfloat16", "int64"]  # integer tensors keep their dtype
    assert half[0].nbytes < 0.6 * full[0].nbytes
    got = dict(unpack(half))
    torch.testing.assert_close(got["w"].float(), named[0][1], atol=1e-2, rtol=1e-2)
    assert isinstance(half[0].data, np.ndarray)


def test_reused_buffers_are_written_in_place():
    reuse: list = []
    first = pack([("w", torch.zeros(8))], reuse=reuse)
    assert len(reuse) == 1 and first[0].data.ctypes.data == reuse[0].data_ptr()
    second = pack([("w", torch.ones(8))], reuse=reuse)
    assert second[0].data.ctypes.data == reuse[0].data_ptr()  # same memory, new contents
    assert float(dict(unpack(second))["w"].sum()) == 8.0
    pack([("w", torch.ones(16))], reuse=reuse)  # another size: a new buffer
    assert reuse[0].numel() == 64


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.mid = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor under two names


def test_flat_weights_export_the_live_weights_without_a_copy():
    torch.manual_seed(0)
    model = Tied()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flat = FlatWeights(model, bucket_bytes=64)  # three buckets: embed (160 B), mid.weight (64 B), mid.bias
    assert {k: v for k, v in model.state_dict().items()}.keys() == before.keys()
    for k, v in model.state_dict().items():  # adopting keeps the values
        assert torch.equal(v, before[k]), k
    buckets = flat.buckets()
    got = dict(unpack(buckets))
    assert sorted(got) == sorted(before)
    assert got["embed.weight"].data_ptr() == got["head.weight"].data_ptr() == model.embed.weight.data_ptr()
    assert sum(b.nbytes for b in buckets) == 160 + 64 + 16  # the tied tensor is stored once
    # an optimizer step changes the weights in place: the next export shows it, with no copy
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.mid(model.embed(torch.tensor([1, 2]))).sum().backward()
    opt.step()
    again = dict(unpack(flat.buckets()))
    for k, v in model.state_dict().items():
        assert torch.equal(again[k], v), k
    assert not torch.equal(again["mid.weight"], before["mid.weight"])


def test_flat_weights_refuse_an_export_after_a_weight_was_replaced():
    model = Tied()
    flat = FlatWeights(model)
    model.mid.weight.data = torch.zeros(4, 4)  # no longer a view of the bucket: an export would be stale
    with pytest.raises(RuntimeError, match="replaced rather than updated in place"):
        flat.buckets()


def test_fused_targets_stack_q_k_v_and_gate_up_in_the_engines_order():
    shapes = {"l.0.attn.q_proj.weight": (8, 4), "l.0.attn.k_proj.weight": (2, 4), "l.0.attn.v_proj.weight": (2, 4),
              "l.0.mlp.up_proj.weight": (6, 4), "l.0.mlp.gate_proj.weight": (6, 4), "norm.weight": (4,)}
    packed = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    assert fused_targets(shapes, packed) == {
        "l.0.attn.q_proj.weight": ("l.0.attn.qkv_proj.weight", 0, 8),
        "l.0.attn.k_proj.weight": ("l.0.attn.qkv_proj.weight", 8, 2),
        "l.0.attn.v_proj.weight": ("l.0.attn.qkv_proj.weight", 10, 2),
        "l.0.mlp.up_proj.weight": ("l.0.mlp.gate_up_proj.weight", 6, 6),  # after gate, whatever the input order
        "l.0.mlp.gate_proj.weight": ("l.0.mlp.gate_up_proj.weight", 0, 6),
        "norm.weight": ("norm.weight", 0, 4),
    }
    del shapes["l.0.attn.q_proj.weight"]
    with pytest.raises(KeyError, match="q_proj.weight is missing"):
        fused_targets(shapes, packed)
