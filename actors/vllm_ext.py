"""vLLM worker extension: loads new weights into a running engine.

Weights arrive as a few flat buckets (learners/weight_pack.py) whose arrays Ray maps from its object
store without a copy; the only copy on this side is into the engine's parameters, in place
(learners/engine_load.py) or through vLLM's generic reload.
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
