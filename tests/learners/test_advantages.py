"""Advantage estimators and GAE, with expected values worked out by hand in the comments."""
import pytest
import torch

from learners.advantages import AdvantageInputs, estimators, gae, masked_whiten


def outcome(scores, groups, lengths, width=5) -> AdvantageInputs:
    """Samples whose responses start at position 1 (position 0 is the prompt) and hold `lengths`
    tokens; the score sits on each sample's last response token."""
    mask = torch.zeros(len(scores), width)
    rewards = torch.zeros(len(scores), width)
    for i, (s, n) in enumerate(zip(scores, lengths)):
        mask[i, 1:1 + n] = 1.0
        rewards[i, n] = s
    return AdvantageInputs(rewards, mask, torch.tensor(groups))


def per_sample(adv: torch.Tensor, x: AdvantageInputs) -> torch.Tensor:
    """Outcome estimators give every token of a sample the same advantage; return it [B]."""
    assert torch.all((adv == 0) | (x.mask > 0)), "an advantage leaked onto padding or the prompt"
    return adv.sum(-1) / x.mask.sum(-1)


def test_grpo_group_normalised():
    # group 0: r = [1, 0, 0, 0], mean 0.25, unbiased var = (0.75² + 3·0.25²)/3 = 0.25, std 0.5
    #   → A = 0.75/0.5 = 1.5 and −0.25/0.5 = −0.5
    # group 1: r = [1, 1, 0, 0], mean 0.5, var = 4·0.25/3 = 1/3, std 0.57735 → ±0.866025
    # group 2: r = [1, 1]: std 0 → A = 0 (no signal, no division blow-up)
    x = outcome([1.0, 0, 0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2], [2, 1, 3, 2, 1, 1, 2, 3, 1, 2])
    adv, returns = estimators.get("grpo")(x)
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.866025, 0.866025, -0.866025, -0.866025, 0, 0])
    torch.testing.assert_close(per_sample(adv, x), expected, atol=1e-5, rtol=0)
    assert returns is None


def test_grpo_groups_need_not_be_contiguous():
    x = outcome([1.0, 5.0, 0, 5.0, 0, 0], [0, 1, 0, 1, 0, 0], [1] * 6)
    torch.testing.assert_close(per_sample(estimators.get("grpo")(x)[0], x), torch.tensor([1.5, 0, -0.5, 0, -0.5, -0.5]),
                               atol=1e-5, rtol=0)


def test_dr_grpo_does_not_divide_by_std():
    # r = [1, 0, 0, 0], mean 0.25 → A = r − 0.25
    x = outcome([1.0, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4])
    torch.testing.assert_close(per_sample(estimators.get("dr_grpo")(x)[0], x),
                               torch.tensor([0.75, -0.25, -0.25, -0.25]), atol=1e-6, rtol=0)


def test_rloo_leave_one_out():
    # r = [1, 0, 0, 0]: sample 0's baseline is mean(0, 0, 0) = 0 → A = 1; the others' mean(1, 0, 0) = 1/3
    x = outcome([1.0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1])
    torch.testing.assert_close(per_sample(estimators.get("rloo")(x)[0], x),
                               torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]), atol=1e-6, rtol=0)


def test_reinforce_pp_returns_whitened_over_the_batch():
    # token rewards: sample A [0, 1], sample B [0, 0] (γ = 1) → returns A [1, 1], B [0, 0];
    # over the 4 tokens mean 0.5, unbiased var = 4·0.25/3 = 1/3, std 0.57735 → ±0.866025
    x = outcome([1.0, 0.0], [0, 1], [2, 2])
    adv, returns = estimators.get("reinforce_pp")(x)
    torch.testing.assert_close(returns[:, 1:3], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(adv[:, 1:3], torch.tensor([[0.866025, 0.866025], [-0.866025, -0.866025]]),
                               atol=1e-5, rtol=0)
    assert adv[:, 0].abs().sum() == 0 and adv[:, 3:].abs().sum() == 0


def test_reinforce_pp_kl_in_reward_lowers_earlier_returns():
    # rewards [−0.1, −0.1 + 1] (β·KL = 0.1 per token): returns G = [0.8, 0.9]
    x = outcome([1.0], [0], [2])
    x.token_rewards[0, 1:3] -= 0.1
    torch.testing.assert_close(estimators.get("reinforce_pp")(x)[1][0, 1:3], torch.tensor([0.8, 0.9]))


def test_gae_by_hand():
    # one sample, prompt at t=0, response t=1..3, padding at t=4; r = [0, 0, 1], V = [0.5, 0.6, 0.7], γ = 1, λ = 0.5
    #   δ3 = 1 − 0.7 = 0.3;        A3 = 0.3
    #   δ2 = 0 + 0.7 − 0.6 = 0.1;  A2 = 0.1 + 0.5·0.3 = 0.25
    #   δ1 = 0 + 0.6 − 0.5 = 0.1;  A1 = 0.1 + 0.5·0.25 = 0.225
    #   R = A + V = [0.725, 0.85, 1.0]; the prompt and padding positions stay 0 whatever V says there
    mask = torch.tensor([[0.0, 1, 1, 1, 0]])
    rewards = torch.tensor([[0.0, 0, 0, 1, 0]])
    values = torch.tensor([[9.0, 0.5, 0.6, 0.7, 9.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.225, 0.25, 0.3, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[0.0, 0.725, 0.85, 1.0, 0.0]]), atol=1e-6, rtol=0)


def gae_loop(rewards, values, mask, gamma, lam):
    """Reference: per sample, per token, over its response tokens only."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        idx = mask[b].nonzero().flatten().tolist()
        running = 0.0
        for j in reversed(range(len(idx))):
            t = idx[j]
            next_v = values[b, idx[j + 1]] if j + 1 < len(idx) else 0.0
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.0), (0.99, 1.0)])
def test_gae_vectorised_matches_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, T = 6, 9
    mask = torch.zeros(B, T)
    for b, (start, n) in enumerate([(1, 3), (2, 7), (1, 1), (4, 5), (3, 2), (1, 8)]):
        mask[b, start:start + n] = 1.0
    rewards = torch.randn(B, T, generator=g) * mask
    values = torch.randn(B, T, generator=g)
    fast, fast_ret = gae(rewards, values * mask, mask, gamma, lam)
    slow, slow_ret = gae_loop(rewards, values * mask, mask, gamma, lam)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast_ret, slow_ret, atol=1e-6, rtol=0)


def test_ppo_whitens_gae_advantages():
    x = outcome([1.0, 0.0, 0.5], [0, 0, 1], [3, 2, 1])
    x.values = torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) * x.mask
    adv, returns = estimators.get("ppo")(x)
    n = x.mask.sum()
    mean = (adv * x.mask).sum() / n
    std = (((adv - mean) * x.mask) ** 2).sum().div(n - 1).sqrt()
    assert abs(float(mean)) < 1e-6 and abs(float(std) - 1) < 1e-4
    torch.testing.assert_close(returns, gae(x.token_rewards, x.values, x.mask, 1.0, 0.95)[1])
    with pytest.raises(ValueError, match="critic"):
        estimators.get("ppo")(outcome([1.0], [0], [1]))


def test_masked_whiten_ignores_padding():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # mean 2, unbiased std √2 → ±0.707107; the padded 100 neither counts nor survives
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([[-0.707107, 0.707107, 0.0]]), atol=1e-5, rtol=0)


def test_unknown_algorithm_lists_valid_names():
    with pytest.raises(KeyError, match="dr_grpo, grpo, ppo, reinforce_pp, rloo"):
        estimators.get("a2c")
