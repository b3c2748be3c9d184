"""Loading new weights into an inference engine's own module tree in place (vLLM's layout: q/k/v and
gate/up fused into one weight, a padded vocabulary, tied embeddings under one parameter).

On CPU, vLLM turns each linear layer's weight into a oneDNN kernel that holds its own packed copy and
drops the weight, so its generic reload rebuilds every layer (fresh pages, a load, a repack: ~2 s for
2 GB). `copy_in_place` instead gives those layers plain weights and torch's linear once, then each
sync is one copy per tensor into memory that stays put. No vLLM import: it works on the modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from learners.weight_pack import fused_targets


def copy_in_place(model: torch.nn.Module, named: list[tuple[str, torch.Tensor]]) -> bool:
    """Copy checkpoint-named tensors into the engine's parameters; False, with nothing written, when
    they do not map onto its layout exactly (then the engine's own reload must run)."""
    shapes, need = _plain_shapes(model)
    alias = _aliases(model)  # a tied lm_head.weight is the embedding's parameter
    try:
        where = fused_targets({k: tuple(v.shape) for k, v in named}, getattr(model, "packed_modules_mapping", {}))
    except KeyError:
        return False
    covered: dict[str, set] = {k: set() for k in shapes}
    for name, tensor in named:
        target, row, rows = where[name]
        target = alias.get(target, target)
        shape = shapes.get(target)
        if shape is None or shape[1:] != tuple(tensor.shape[1:]) or row + rows > shape[0]:
            return False
        where[name] = (target, row, rows)
        covered[target].add((row, rows))
    if any(sum(r for _, r in covered[k]) != n for k, n in need.items()):
        return False  # some parameter would keep old values
    keep_plain_weights(model)
    params = dict(model.named_parameters())
    slots = {where[name]: tensor for name, tensor in named}  # a tied tensor under two names: one copy
    _copy_all([(params[t][row:row + rows], tensor) for (t, row, rows), tensor in slots.items()])
    return True


def _copy_all(pairs: list) -> None:
    """dst.copy_(src) for every pair, split by bytes over one thread per core: a copy is bound by
    memory bandwidth, which one core does not fill, and copy_ releases the GIL."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    lanes = max(1, min(len(os.sched_getaffinity(0)), 8))
    total = sum(src.numel() * src.element_size() for _, src in pairs)
    pieces = []  # a big tensor is cut into row ranges so that the lanes get even shares
    for dst, src in pairs:
        rows = src.shape[0] if src.dim() else 1
        parts = max(1, min(rows, round(lanes * src.numel() * src.element_size() / max(total, 1))))
        step = -(-rows // parts)
        pieces += [(dst, src)] if parts == 1 else [(dst[i:i + step], src[i:i + step]) for i in range(0, rows, step)]
    lane_of: list[list] = [[] for _ in range(lanes)]
    load = [0] * lanes
    for dst, src in sorted(pieces, key=lambda p: -p[1].numel() * p[1].element_size()):
        i = load.index(min(load))
        lane_of[i].append((dst, src))
        load[i] += src.numel() * src.element_size()

    def run(lane: list) -> None:
        with torch.no_grad():
            for dst, src in lane:
                dst.copy_(src)

    if lanes == 1:
        run(lane_of[0])
        return
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(run, lane_of))


def _aliases(model) -> dict[str, str]:
    """Other names of shared parameters (tied embeddings) -> the name named_parameters() keeps."""
    first: dict[int, str] = {}
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out[name] = first.setdefault(id(p), name)
    return {k: v for k, v in out.items() if k != v}


def _plain_shapes(model) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Every parameter's shape, with the weights vLLM dropped after packing them for oneDNN put back,
    and the rows a full load writes (a vocabulary table is padded past the tokenizer's rows)."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    need = {name: shape[0] if shape else 0 for name, shape in shapes.items()}
    for prefix, module in model.named_modules():
        name = f"{prefix}.weight"
        if hasattr(module, "cpu_linear") and module.weight.numel() == 0:
            shapes[name] = (module.output_size_per_partition, module.input_size_per_partition)
            need[name] = shapes[name][0]
        if name in need and hasattr(module, "org_vocab_size"):
            need[name] = module.org_vocab_size
    return shapes, need


def keep_plain_weights(model) -> None:
    """Give every oneDNN-dispatched layer a plain weight (filled by the copy that follows) and torch's
    linear; done once, later calls find nothing to change."""
    for module in model.modules():
        if not hasattr(module, "cpu_linear") or module.cpu_linear is F.linear:
            continue
        if module.weight.numel() == 0:
            shape = (module.output_size_per_partition, module.input_size_per_partition)
            module.weight = torch.nn.Parameter(torch.empty(shape, dtype=module.weight.dtype), requires_grad=False)
            module.threefold_plain = True
        module.cpu_linear = F.linear


def back_to_packed(model) -> None:
    """Undo `keep_plain_weights` before vLLM's generic reload, which expects the weights it dropped
    to be empty (it packs them for oneDNN again)."""
    for module in model.modules():
        if getattr(module, "threefold_plain", False):
            module.weight = torch.nn.Parameter(torch.empty(0, dtype=module.weight.dtype), requires_grad=False)
            module.threefold_plain = False
