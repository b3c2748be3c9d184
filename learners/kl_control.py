"""The KL coefficient β: fixed, or adaptive (Ziegler et al. 2019) towards a target KL."""
from __future__ import annotations


class KLController:
    """β_{k+1} = β_k · (1 + e·n/H), e = clip(KL/target − 1, −0.2, 0.2): n samples seen this step,
    horizon H in samples. Without a target β stays fixed."""

    def __init__(self, beta: float, target: float | None = None, horizon: int = 10000):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_samples: int) -> float:
        if self.target is not None and self.beta > 0:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta *= 1.0 + error * n_samples / self.horizon
        return self.beta

    def state(self) -> dict:
        return {"beta": self.beta, "target": self.target, "horizon": self.horizon}
