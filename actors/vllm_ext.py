"""vLLM worker extension: loads new weights into a running engine.

Weights arrive as a few flat buckets (learners/weight_pack.py) whose arrays Ray maps from its object
store without a copy; the only copy on this side is the engine's own, into its parameters.
"""
from __future__ import annotations


class WeightReloader:
    """Mixed into vLLM's worker class through `worker_extension_cls`."""

    def reload_from_buckets(self, buckets: list) -> int:
        from learners.weight_pack import unpack

        named = list(unpack(buckets))
        self.model_runner.reload_weights(weights_iterator=iter(named))
        return len(named)
