"""vLLM worker extension: loads new weights into a running engine.

Weights travel as safetensors bytes: tensors passed as RPC arguments arrive mangled on CPU.
"""
from __future__ import annotations


class WeightReloader:
    """Mixed into vLLM's worker class through `worker_extension_cls`."""

    def reload_from_bytes(self, blob: bytes) -> int:
        from safetensors.torch import load

        state = load(blob)
        self.model_runner.reload_weights(weights_iterator=iter(state.items()))
        return len(state)
