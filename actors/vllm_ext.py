"""vLLM worker extension: loads new weights into a running engine.

Weights arrive as a few flat buckets (learners/weight_pack.py): arrays Ray maps from its object
store without a copy, or buffers filled by the weight group's broadcast (learners/weight_transport.py).
The only copy on this side is into the engine's parameters, in place (learners/engine_load.py) or
through vLLM's generic reload.
"""
from __future__ import annotations


class WeightReloader:
    """Mixed into vLLM's worker class through `worker_extension_cls`."""

    def reload_from_buckets(self, buckets: list, inplace: bool = False) -> str:
        """Load the buckets' weights; returns how: "inplace" or "vllm" (vLLM's generic reload, also
        taken when the engine's layout is not the plain one the in-place copy expects)."""
        from learners.engine_load import back_to_packed, copy_in_place
        from learners.weight_pack import unpack

        named = list(unpack(buckets))
        model = self.model_runner.get_model()
        if inplace and copy_in_place(model, named):
            return "inplace"
        back_to_packed(model)
        self.model_runner.reload_weights(weights_iterator=iter(named))
        return "vllm"

    def worker_rank(self) -> int:
        """This worker's rank within its engine (0 unless the engine spans several workers)."""
        return int(getattr(self, "rank", 0))

    def join_weight_group(self, address: str, base_rank: int, world: int, backend: str, name: str,
                          timeout_s: float) -> int:
        """Join the learner's weight group (rank base_rank + this worker's rank); returns that rank."""
        from learners.weight_transport import Receiver, WeightGroup

        rank = base_rank + self.worker_rank()
        device = getattr(self, "device", "cpu") if backend == "nccl" else "cpu"
        self.weight_receiver = Receiver(WeightGroup(address, rank, world, backend, name, timeout_s), device)
        return rank

    def load_ipc(self, plan: list, handles: list, inplace: bool = False) -> str:
        """Load the weights from the learner's GPU memory through CUDA IPC handles (same GPU)."""
        from learners.weight_transport import open_ipc

        return self.reload_from_buckets(open_ipc(plan, handles), inplace)

    def receive_broadcast(self, plan: list, inplace: bool = False) -> str:
        """Receive the learner's next broadcast into this worker's buffers and load it."""
        return self.reload_from_buckets(self.weight_receiver.receive(plan), inplace)
