"""vLLM worker extension: loads new weights into a running engine.

Weights arrive as a few flat buckets (learners/weight_pack.py) whose arrays Ray maps from its object
store without a copy; the only copy on this side is the engine's own, into its parameters.

On CPU, vLLM turns each linear layer's weight into a oneDNN kernel that holds its own packed copy, so
its generic reload rebuilds every layer (fresh pages, a load, a repack: ~3 s for 2 GB). In place, the
engine's linear layers keep plain weights (torch's linear) and a sync is one copy per tensor into
memory that stays put.
"""
from __future__ import annotations


class WeightReloader:
    """Mixed into vLLM's worker class through `worker_extension_cls`."""

    def reload_from_buckets(self, buckets: list, inplace: bool = False) -> str:
        """Load the buckets' weights; returns how: "inplace" or "vllm" (vLLM's generic reload, also
        taken when the engine's layout is not the plain one the in-place copy expects)."""
        from learners.weight_pack import unpack

        named = list(unpack(buckets))
        if inplace and self._copy_in_place(named):
            return "inplace"
        _back_to_packed(self.model_runner.get_model())
        self.model_runner.reload_weights(weights_iterator=iter(named))
        return "vllm"

    def _copy_in_place(self, named: list) -> bool:
        import torch

        from learners.weight_pack import fused_targets

        model = self.model_runner.get_model()
        shapes, need = _plain_shapes(model)
        try:
            where = fused_targets({k: tuple(v.shape) for k, v in named}, getattr(model, "packed_modules_mapping", {}))
        except KeyError:
            return False
        rows_in = dict.fromkeys(shapes, 0)
        for name, tensor in named:
            target, row, rows = where[name]
            shape = shapes.get(target)
            if shape is None or shape[1:] != tuple(tensor.shape[1:]) or row + rows > shape[0]:
                return False
            rows_in[target] += rows
        if rows_in != need:
            return False  # some parameter would keep old values
        _keep_plain_weights(model)
        params = dict(model.named_parameters())
        pairs = [(params[where[name][0]][where[name][1]:where[name][1] + where[name][2]], tensor)
                 for name, tensor in named]
        _copy_all(pairs, torch)
        return True


def _copy_all(pairs: list, torch) -> None:
    """dst.copy_(src) for every pair, split by bytes over one thread per core: a copy is bound by
    memory bandwidth, which one core does not fill, and copy_ releases the GIL."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    lanes = max(1, min(len(os.sched_getaffinity(0)), 8))
    total = sum(src.numel() * src.element_size() for _, src in pairs)
    flat = []  # big tensors are cut into row ranges so the lanes get even shares
    for dst, src in pairs:
        n = src.numel() * src.element_size()
        parts = max(1, min(src.shape[0] if src.dim() else 1, round(lanes * n / max(total, 1))))
        step = -(-(src.shape[0] if src.dim() else 1) // parts)
        flat += [(dst, src)] if parts == 1 else [(dst[i:i + step], src[i:i + step]) for i in range(0, src.shape[0], step)]
    lanes_of = [[] for _ in range(lanes)]
    load = [0] * lanes
    for dst, src in sorted(flat, key=lambda p: -p[1].numel() * p[1].element_size()):
        i = load.index(min(load))
        lanes_of[i].append((dst, src))
        load[i] += src.numel() * src.element_size()

    def run(lane):
        with torch.no_grad():
            for dst, src in lane:
                dst.copy_(src)

    if lanes == 1:
        run(lanes_of[0])
        return
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(run, lanes_of))


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


def _keep_plain_weights(model) -> None:
    """Give every oneDNN-dispatched layer a plain weight (filled by the copy that follows) and torch's
    linear; done once, later calls find nothing to change."""
    import torch
    import torch.nn.functional as F

    for module in model.modules():
        if not hasattr(module, "cpu_linear") or module.cpu_linear is F.linear:
            continue
        if module.weight.numel() == 0:
            shape = (module.output_size_per_partition, module.input_size_per_partition)
            module.weight = torch.nn.Parameter(torch.empty(shape, dtype=module.weight.dtype), requires_grad=False)
            module.threefold_plain = True
        module.cpu_linear = F.linear


def _back_to_packed(model) -> None:
    """Undo `_keep_plain_weights` before vLLM's generic reload, which expects the weights it dropped
    to be empty (it packs them for oneDNN again)."""
    import torch

    for module in model.modules():
        if getattr(module, "threefold_plain", False):
            module.weight = torch.nn.Parameter(torch.empty(0, dtype=module.weight.dtype), requires_grad=False)
            module.threefold_plain = False
