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

    data: np.ndarray | torch.Tensor  # uint8 [total bytes]; a tensor when it came by broadcast or CUDA IPC
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


def _offsets(sizes: list[int]) -> tuple[list[int], int]:
    """Byte offsets of entries laid end to end, each 16-byte aligned so any dtype can view it, and
    the total length."""
    offsets, end = [], 0
    for n in sizes:
        offsets.append(end)
        end += -(-n // ALIGN) * ALIGN
    return offsets, end


@torch.no_grad()
def pack(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int = BUCKET_BYTES,
         dtype: torch.dtype | None = None, reuse: list[torch.Tensor] | None = None,
         device: torch.device | None = None) -> list[Bucket]:
    """Copy the tensors (cast to `dtype` if given, e.g. bf16 for a GPU transfer) into buckets of
    about `bucket_bytes` each: one copy of the weights in all. `reuse`: byte buffers of an earlier
    call to write into (fresh pages cost more than the copy); a new one is appended when missing or
    of another size, and the arrays returned then share those buffers. `device`: where the buckets
    go (default the CPU, as numpy arrays; elsewhere, as tensors)."""
    device = torch.device(device or "cpu")
    named = [(k, (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach()) for k, v in named]
    out = []
    for b, idx in enumerate(_layout(named, bucket_bytes)):
        sizes = [named[i][1].numel() * named[i][1].element_size() for i in idx]
        offsets, end = _offsets(sizes)
        if reuse is not None and b < len(reuse) and reuse[b].numel() == end:
            flat = reuse[b]
        else:
            flat = torch.empty(end, dtype=torch.uint8, device=device)
            if reuse is not None:
                reuse[b:b + 1] = [flat]
        for i, off, n in zip(idx, offsets, sizes):
            src = named[i][1].contiguous()
            flat[off:off + n].copy_(src.reshape(-1).view(torch.uint8))
        out.append(Bucket(flat.numpy() if device.type == "cpu" else flat, [named[i][0] for i in idx], [tuple(named[i][1].shape) for i in idx],
                          [str(named[i][1].dtype).removeprefix("torch.") for i in idx], offsets))
    return out


class FlatWeights:
    """A model's own tensors moved into bucket-sized flat buffers: every parameter becomes a view of
    one, so `buckets()` hands out the live weights with no copy (a reader gets a snapshot: Ray copies
    an actor's return value into its object store before the actor runs its next call). Tensors
    shared under two names (tied embeddings) take one slot that both names point at."""

    def __init__(self, model: torch.nn.Module, bucket_bytes: int = BUCKET_BYTES):
        named = list(model.state_dict(keep_vars=True).items())
        first: dict[int, int] = {}  # id of a tensor -> index of its first name
        unique = []
        for i, (_, t) in enumerate(named):
            if id(t) not in first:
                first[id(t)] = i
                unique.append(i)
        slot: dict[int, tuple[int, int]] = {}  # index in `named` -> (bucket, byte offset)
        self.flats: list[torch.Tensor] = []
        with torch.no_grad():
            for b, group in enumerate(_layout([named[i] for i in unique], bucket_bytes)):
                idx = [unique[g] for g in group]
                offsets, end = _offsets([named[i][1].numel() * named[i][1].element_size() for i in idx])
                flat = torch.empty(end, dtype=torch.uint8, device=named[idx[0]][1].device)
                for i, off in zip(idx, offsets):
                    t = named[i][1]
                    view = flat[off:off + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
                    view.copy_(t.detach())
                    t.data = view
                    slot[i] = (b, off)
                self.flats.append(flat)
        self.entries: list[list[int]] = [[] for _ in self.flats]  # per bucket: indices into `named`
        for i, (_, t) in enumerate(named):
            self.entries[slot[first[id(t)]][0]].append(i)
        self.names = [k for k, _ in named]
        self.shapes = [tuple(t.shape) for _, t in named]
        self.dtypes = [str(t.dtype).removeprefix("torch.") for _, t in named]
        self.offsets = [slot[first[id(t)]][1] for _, t in named]
        self._tensors = [t for _, t in named]

    def buckets(self, on_device: bool = False) -> list[Bucket]:
        """The live buffers: numpy arrays of them on the CPU, a host copy of them on a GPU (for Ray's
        object store); with `on_device` the tensors themselves, wherever they are."""
        if any(t.data_ptr() != self.flats[b].data_ptr() + self.offsets[i]
               for b, idx in enumerate(self.entries) for i in idx for t in [self._tensors[i]]):
            raise RuntimeError("a weight was replaced rather than updated in place; its bucket is stale")
        data = [f if on_device else (f.numpy() if f.device.type == "cpu" else f.cpu().numpy()) for f in self.flats]
        return [Bucket(d, [self.names[i] for i in idx], [self.shapes[i] for i in idx],
                       [self.dtypes[i] for i in idx], [self.offsets[i] for i in idx])
                for d, idx in zip(data, self.entries)]


def unpack(buckets: list[Bucket]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every entry, as views of the buckets' arrays (no copy; do not write to them:
    an array read from Ray's object store is read-only)."""
    for b in buckets:
        with warnings.catch_warnings():  # read-only arrays are fine: the loader only reads them
            warnings.simplefilter("ignore", UserWarning)
            raw = b.data if isinstance(b.data, torch.Tensor) else torch.from_numpy(b.data)
        for name, shape, dt, off in zip(b.names, b.shapes, b.dtypes, b.offsets):
            dtype = getattr(torch, dt)
            n = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
            yield name, raw[off:off + n].view(dtype).view(shape)


def fused_targets(shapes: dict[str, tuple[int, ...]], packed: dict[str, list[str]]) -> dict[str, tuple[str, int, int]]:
    """Where each checkpoint tensor goes in an engine that fuses projections (vLLM's `qkv_proj` holds
    q, k and v stacked on dim 0, in `packed`'s order): name -> (engine name, first row, rows). A name
    with no fused part maps to itself, whole."""
    out: dict[str, tuple[str, int, int]] = {}
    for name, shape in shapes.items():
        out[name] = (name, 0, shape[0] if shape else 0)
        for fused, parts in packed.items():
            for part in parts:
                token = f".{part}."
                if token not in name:
                    continue
                row = 0
                for earlier in parts[:parts.index(part)]:
                    sibling = name.replace(token, f".{earlier}.")
                    if sibling not in shapes:
                        raise KeyError(f"{name}: its fused sibling {sibling} is missing from the weights")
                    row += shapes[sibling][0]
                out[name] = (name.replace(token, f".{fused}."), row, shape[0])
    return out
