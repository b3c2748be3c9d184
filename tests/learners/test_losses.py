"""KL estimators, aggregation, the clipped policy loss and the value loss, worked by hand."""
import math

import pytest
import torch

from learners.losses import (Clip, Norm, aggregate, explained_variance, kl_k1, kl_k2, kl_k3, policy_loss,
                             value_loss)

LN2 = math.log(2)


def test_kl_estimators_by_hand():
    # π = 0.5, π_ref = 0.25 on the first token; equal on the second.
    #   k1 = ln 2 = 0.693147;  k2 = ½ (ln 2)² = 0.240227;  k3 = e^{−ln 2} + ln 2 − 1 = 0.193147
    logp = torch.tensor([[math.log(0.5), math.log(0.3)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.3)]])
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([[LN2, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl_k2(logp, ref), torch.tensor([[0.5 * LN2 ** 2, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([[0.193147, 0.0]]), atol=1e-6, rtol=0)


def test_k1_and_k3_are_unbiased_k2_is_not():
    # E_{x~π}[k] against KL(π‖q) exactly, summing over the 3 outcomes
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.2, 0.6])
    kl = float((p * (p / q).log()).sum())
    for fn in (kl_k1, kl_k3):
        assert abs(float((p * fn(p.log(), q.log())).sum()) - kl) < 1e-6
    assert abs(float((p * kl_k2(p.log(), q.log())).sum()) - kl) > 1e-3
    assert (kl_k3(p.log(), q.log()) >= 0).all() and (kl_k2(p.log(), q.log()) >= 0).all()


X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("mode,expected", [
    ("token_mean", 2.5),  # (1 + 2 + 3 + 4) / 4 tokens
    ("seq_mean_token_mean", 3.0),  # (6/3 + 4/1) / 2 sequences
    ("seq_mean_token_sum_norm", 1.25),  # 10 / (2 sequences · max_len 4)
])
def test_aggregation_modes(mode, expected):
    assert float(aggregate(X, MASK, mode, Norm.of(MASK, 4))) == pytest.approx(expected, abs=1e-6)


def test_unknown_aggregation():
    with pytest.raises(KeyError, match="token_mean, seq_mean_token_mean, seq_mean_token_sum_norm"):
        aggregate(X, MASK, "mean", Norm.of(MASK, 4))


def ratios(*values):
    """old_logp 0, logp = log ρ for each token; one sample per token."""
    logp = torch.tensor([[math.log(v)] for v in values])
    return logp, torch.zeros_like(logp), torch.ones_like(logp)


def test_clip_higher():
    # ε_low 0.2, ε_high 0.28. Per token l = max(−A·ρ, −A·clip(ρ, 0.8, 1.28)):
    #   A=+1, ρ=1.5  → max(−1.5, −1.28) = −1.28 (clipped high)
    #   A=+1, ρ=1.25 → max(−1.25, −1.25) = −1.25 (inside; symmetric ε = 0.2 would clip it to −1.2)
    #   A=−1, ρ=0.5  → max(0.5, 0.8) = 0.8 (clipped low)
    logp, old, mask = ratios(1.5, 1.25, 0.5)
    adv = torch.tensor([[1.0], [1.0], [-1.0]])
    loss, stats = policy_loss(logp, old, adv, mask, Clip(0.2, 0.28), "token_mean", Norm.of(mask, 1))
    assert float(loss) == pytest.approx((-1.28 - 1.25 + 0.8) / 3, abs=1e-6)
    assert float(stats["clip_frac_high"]) == pytest.approx(1 / 3) and float(stats["clip_frac_low"]) == pytest.approx(1 / 3)


def test_dual_clip_bounds_negative_advantages():
    # c = 3. A=−1, ρ=5: max(5, 1.2) = 5 → min(5, 3) = 3.  A=−1, ρ=2: max(2, 1.2) = 2 < 3 → 2.
    # A=+1, ρ=5: max(−5, −1.2) = −1.2 (dual clip applies to A < 0 only)
    logp, old, mask = ratios(5.0, 2.0, 5.0)
    adv = torch.tensor([[-1.0], [-1.0], [1.0]])
    loss, stats = policy_loss(logp, old, adv, mask, Clip(0.2, 0.2, 3.0), "token_mean", Norm.of(mask, 1))
    assert float(loss) == pytest.approx((3.0 + 2.0 - 1.2) / 3, abs=1e-6)
    assert float(stats["dual_clip_frac"]) == pytest.approx(1 / 3)
    plain, _ = policy_loss(logp, old, adv, mask, Clip(0.2, 0.2), "token_mean", Norm.of(mask, 1))
    assert float(plain) == pytest.approx((5.0 + 2.0 - 1.2) / 3, abs=1e-6)


def test_importance_weights_scale_each_token():
    # on-policy (ρ = 1), A = [1, −1] → l = [−1, 1]; weights [0.5, 2] → [−0.5, 2] → mean 0.75
    logp, old, mask = ratios(1.0, 1.0)
    adv = torch.tensor([[1.0], [-1.0]])
    loss, _ = policy_loss(logp, old, adv, mask, Clip(), "token_mean", Norm.of(mask, 1), torch.tensor([[0.5], [2.0]]))
    assert float(loss) == pytest.approx(0.75, abs=1e-6)


def test_padding_contributes_nothing_to_the_policy_loss():
    logp = torch.tensor([[-1.0, -2.0, 30.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -1.9, -30.0]])
    adv = torch.tensor([[0.5, 0.5, 1e6]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        loss, _ = policy_loss(logp, old, adv, mask, Clip(), mode, Norm.of(mask, 3))
        short, _ = policy_loss(logp[:, :2], old[:, :2], adv[:, :2], mask[:, :2], Clip(), mode, Norm.of(mask, 3))
        assert float(loss.detach()) == pytest.approx(float(short.detach()), abs=1e-7)
        (grad,) = torch.autograd.grad(loss, logp)
        assert grad[0, 2] == 0


def test_value_clipping():
    # clip 0.2. Token 1: V_old 0.5, V 1.0, R 0.9: (1.0 − 0.9)² = 0.01; clipped V = 0.7 → (0.7 − 0.9)² = 0.04;
    #   max = 0.04. Token 2: V_old 0.5, V 0.6 (inside the range), R 0.9 → 0.09.
    # loss = ½ · mean(0.04, 0.09) = 0.0325; without clipping ½ · mean(0.01, 0.09) = 0.025
    values = torch.tensor([[1.0, 0.6]])
    old = torch.tensor([[0.5, 0.5]])
    returns = torch.tensor([[0.9, 0.9]])
    mask = torch.ones(1, 2)
    clipped, stats = value_loss(values, old, returns, mask, 0.2, "token_mean", Norm.of(mask, 2))
    assert float(clipped) == pytest.approx(0.0325, abs=1e-7) and float(stats["value_clip_frac"]) == 0.5
    plain, _ = value_loss(values, old, returns, mask, None, "token_mean", Norm.of(mask, 2))
    assert float(plain) == pytest.approx(0.025, abs=1e-7)


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros_like(returns), returns, mask) == pytest.approx(0.0, abs=1e-6)
    # V off by a constant explains all the variance; V = −R explains worse than nothing: 1 − Var(2R)/Var(R) = −3
    assert explained_variance(returns + 1, returns, mask) == pytest.approx(1.0)
    assert explained_variance(-returns, returns, mask) == pytest.approx(-3.0, abs=1e-5)
