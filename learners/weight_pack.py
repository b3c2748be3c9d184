"""Weights as a few flat buffers ("buckets"): a weight sync moves a handful of large arrays, not one
object or call per tensor. A bucket's array travels through Ray's object store without pickling
its bytes, and a reader on the same node maps it without a copy (`unpack` returns views)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

BUCKET_BYTES = 256 * 2**20
ALIGN = 16


@dataclass
class Bucket:
    """Tensors laid end to end in one 1-D byte array; entry i is `names[i]` with `shapes[i]` and
    `dtypes[i]`, starting at byte `offsets[i]`."""

    data: np.ndarray  # uint8 [total bytes]
    names: list[str]
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    offsets: list[int]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def _layout(named: list[tuple[str, torch.Tensor]], bucket_bytes: int) -> list[list[int]]:
    """Indices of the tensors in each bucket, in order; a tensor larger than a bucket gets its own."""
    groups: list[list[int]] = [[]]
    size = 0
    for i, (_, t) in enumerate(named):
        n = t.numel() * t.element_size()
        if groups[-1] and size + n > bucket_bytes:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    return [g for g in groups if g]


@torch.no_grad()
def pack(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int = BUCKET_BYTES,
         dtype: torch.dtype | None = None, reuse: list[torch.Tensor] | None = None) -> list[Bucket]:
    """Copy the tensors (cast to `dtype` if given, e.g. bf16 for a GPU transfer) into buckets of
    about `bucket_bytes` each: one copy of the weights in all. `reuse`: byte buffers of an earlier
    call to write into (fresh pages cost more than the copy); a new one is appended when missing or
    of another size, and the arrays returned then share those buffers."""
    named = [(k, (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach()) for k, v in named]
    out = []
    for b, idx in enumerate(_layout(named, bucket_bytes)):
        sizes = [named[i][1].numel() * named[i][1].element_size() for i in idx]
        offsets, end = [], 0
        for n in sizes:  # every entry starts 16-byte aligned, so any dtype can view it
            offsets.append(end)
            end += -(-n // ALIGN) * ALIGN
        if reuse is not None and b < len(reuse) and reuse[b].numel() == end:
            flat = reuse[b]
        else:
            flat = torch.empty(end, dtype=torch.uint8)
            if reuse is not None:
                reuse[b:b + 1] = [flat]
        for i, off, n in zip(idx, offsets, sizes):
            src = named[i][1].contiguous().cpu()
            flat[off:off + n].copy_(src.reshape(-1).view(torch.uint8))
        out.append(Bucket(flat.numpy(), [named[i][0] for i in idx], [tuple(named[i][1].shape) for i in idx],
                          [str(named[i][1].dtype).removeprefix("torch.") for i in idx], offsets))
    return out


def unpack(buckets: list[Bucket]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every entry, as views of the buckets' arrays (no copy; do not write to them:
    an array read from Ray's object store is read-only)."""
    for b in buckets:
        with warnings.catch_warnings():  # read-only arrays are fine: the loader only reads them
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(b.data)
        for name, shape, dt, off in zip(b.names, b.shapes, b.dtypes, b.offsets):
            dtype = getattr(torch, dt)
            n = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
            yield name, raw[off:off + n].view(dtype).view(shape)
