import numpy as np
import torch

from learners.weight_pack import pack, unpack


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
