"""RL math with expected values worked out by hand in the comments."""
import math

import pytest
import torch

from learners.algos import (advantage_estimators, clipped_policy_loss, grpo_advantages, kl_estimators, kl_k1,
                            kl_k3, masked_mean, rloo_advantages)


def test_grpo_advantage_group_normalised():
    # group 0: r = [1, 0, 0, 0], mean 0.25, unbiased var = (0.75² + 3·0.25²)/3 = 0.25, std 0.5
    #   → A = 0.75/0.5 = 1.5 and -0.25/0.5 = -0.5
    # group 1: r = [1, 1, 0, 0], mean 0.5, var = 4·0.25/3 = 1/3, std 0.57735 → A = ±0.5/0.57735 = ±0.866025
    # group 2: r = [1, 1], std 0 → A = 0 (no signal, no division blow-up)
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0, 1, 1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    adv = grpo_advantages(rewards, groups)
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.866025, 0.866025, -0.866025, -0.866025, 0, 0])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_grpo_groups_need_not_be_contiguous():
    # same as group 0 above, interleaved with another group; each is normalised on its own
    adv = grpo_advantages(torch.tensor([1.0, 5.0, 0, 5.0, 0, 0]), torch.tensor([0, 1, 0, 1, 0, 0]))
    torch.testing.assert_close(adv, torch.tensor([1.5, 0, -0.5, 0, -0.5, -0.5]), atol=1e-5, rtol=0)


def test_rloo_leave_one_out():
    # r = [1, 0, 0, 0]: baseline for sample 0 is mean(0,0,0) = 0 → A = 1;
    # for the others mean(1,0,0) = 1/3 → A = -1/3
    adv = rloo_advantages(torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 0, 0, 0]))
    torch.testing.assert_close(adv, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]), atol=1e-6, rtol=0)


def test_k3_kl():
    # π = 0.5, π_ref = 0.25: log(π_ref/π) = -ln 2; k3 = e^{-ln 2} + ln 2 - 1 = 0.5 + 0.693147 - 1 = 0.193147
    # equal log-probs → 0; k1 = log π - log π_ref = ln 2
    logp = torch.tensor([[math.log(0.5), math.log(0.3)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.3)]])
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([[0.193147, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([[math.log(2), 0.0]]), atol=1e-6, rtol=0)


def test_k3_is_nonnegative_and_matches_true_kl_in_expectation():
    # E_{x~π}[k3] = KL(π || π_ref): check on a 3-outcome distribution, exactly (sum over outcomes)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    k3 = kl_k3(p.log(), q.log())
    assert (k3 >= 0).all()
    torch.testing.assert_close((p * k3).sum(), (p * (p / q).log()).sum(), atol=1e-6, rtol=0)


def test_clipped_loss_values_and_clip_fraction():
    # ε = 0.2. Sample 0 has A = +1, sample 1 has A = -1; tokens have ratios 1.5 and 0.5.
    #   A=+1, ρ=1.5: min(1.5, 1.2) = 1.2   (clipped)     A=+1, ρ=0.5: min(0.5, 0.8) = 0.5
    #   A=-1, ρ=1.5: min(-1.5, -1.2) = -1.5               A=-1, ρ=0.5: min(-0.5, -0.8) = -0.8 (clipped)
    # loss = -mean(1.2, 0.5, -1.5, -0.8) = 0.6/4 = 0.15; clip fraction 2/4.
    # A third, masked token with a huge ratio must not count.
    old = torch.zeros(2, 3)
    logp = torch.tensor([[math.log(1.5), math.log(0.5), 9.0], [math.log(1.5), math.log(0.5), 9.0]],
                        requires_grad=True)
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 0]])
    loss, info = clipped_policy_loss(logp, old, torch.tensor([1.0, -1.0]), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert info["clip_frac"].item() == pytest.approx(0.5, abs=1e-6)
    loss.backward()
    # d/dlogp of -ρA/4 = -ρA/4 where unclipped; 0 where clipped or masked
    expected_grad = torch.tensor([[0.0, -0.5 / 4, 0.0], [1.5 / 4, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected_grad, atol=1e-6, rtol=0)


def test_masked_mean_is_token_level():
    # 3 real tokens: (1 + 2 + 6) / 3 = 3, not the mean of per-row means ((1+2)/2 + 6)/2 = 3.75
    x = torch.tensor([[1.0, 2.0], [6.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)


def test_unknown_names_list_valid_ones():
    with pytest.raises(KeyError, match="grpo, rloo"):
        advantage_estimators.get("ppo2")
    with pytest.raises(KeyError, match="k1, k3"):
        kl_estimators.get("k9")
