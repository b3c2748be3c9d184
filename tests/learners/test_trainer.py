from dataclasses import replace

import pytest
import torch

from learners.losses import Norm
from learners.rollout import RolloutBatch, pack
from learners.trainer import CriticSettings, PolicyTrainer, UpdateSettings


def make_batch(trainer: PolicyTrainer, rewards: list[float]) -> RolloutBatch:
    tok = trainer.tokenizer
    prompt = tok("12+34=")["input_ids"]
    responses = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in ("46", "47", "5", "46")]
    batch = RolloutBatch([prompt] * 4, responses, [], [0, 0, 0, 0], ["46", "47", "5", "46"], [{}] * 4, 0,
                         rewards=rewards)
    for r in responses:  # on-policy: behaviour log-probs are the current policy's
        batch.behaviour_logprobs.append(trainer.probe_logprobs(prompt + r)[len(prompt) - 1:])
    return batch


def test_pack_shares_prompts_and_aligns_responses():
    # samples 0 and 2 share prompt [1, 5, 6]: it is packed once and both point at it (owner 0);
    # prompts and responses are right-padded, and the masks cover the real response tokens only
    batch = RolloutBatch([[1, 5, 6], [1, 5], [1, 5, 6]], [[7, 2], [8], [9, 9, 2]],
                         [[-0.5, -0.25], [-1.0], [-0.125, -0.25, -0.375]], [0, 1, 0], ["", "", ""], [{}] * 3, 0,
                         rewards=[1.0, 0.0, 0.5])
    p = pack(batch, pad_id=0)
    assert p.prompt_ids.tolist() == [[1, 5, 6], [1, 5, 0]] and p.prompt_len.tolist() == [3, 2]
    assert p.owner.tolist() == [0, 1, 0]
    assert p.response_ids.tolist() == [[7, 2, 0], [8, 0, 0], [9, 9, 2]]
    assert p.response_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert p.old_logp.tolist() == [[-0.5, -0.25, 0], [-1.0, 0, 0], [-0.125, -0.25, -0.375]]
    sub = p.rows(torch.tensor([1, 2]))  # keeps only the prompts its samples use
    assert sub.prompt_ids.tolist() == [[1, 5, 6], [1, 5, 0]] and sub.owner.tolist() == [1, 0]
    sub = p.rows(torch.tensor([2, 0]))
    assert sub.prompt_ids.tolist() == [[1, 5, 6]] and sub.owner.tolist() == [0, 0]


def make_batch8(trainer: PolicyTrainer) -> RolloutBatch:
    """8 samples of different lengths in 2 groups, on-policy."""
    tok = trainer.tokenizer
    prompts = [tok("12+34=")["input_ids"], tok("7+8=")["input_ids"]]
    texts = ["46", "4", "47", "146", "15", "1", "51", "15"]
    batch = RolloutBatch([], [], [], [], texts, [{}] * 8, 0, rewards=[1.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0])
    for i, t in enumerate(texts):
        prompt = prompts[i // 4]
        resp = tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if i % 3 else [])
        batch.prompt_ids.append(prompt)
        batch.response_ids.append(resp)
        batch.group_ids.append(i // 4)
        batch.behaviour_logprobs.append(trainer.probe_logprobs(prompt + resp)[len(prompt) - 1:])
    return batch


def test_update_raises_rewarded_response_and_bumps_version(tiny_model_dir):
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(lr=1e-2, kl_coef=0.0))
    batch = make_batch(trainer, rewards=[1.0, 0.0, 0.0, 1.0])
    full = batch.prompt_ids[0] + batch.response_ids[0]
    before = sum(trainer.probe_logprobs(full)[-3:])
    stats = trainer.update(batch)
    after = sum(trainer.probe_logprobs(full)[-3:])
    assert trainer.version == 1
    assert after > before + 0.05, (before, after)
    # on-policy, one step: every ratio is 1, so nothing is clipped
    assert stats["clip_frac_low"] == 0.0 and stats["clip_frac_high"] == 0.0
    assert abs(stats["kl"]) < 1e-6  # the reference equals the policy before the step


def test_equal_rewards_leave_weights_unchanged(tiny_model_dir):
    # all advantages are 0 and β = 0 → zero gradient → AdamW (no decay) moves nothing
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(lr=1e-2, kl_coef=0.0))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.update(make_batch(trainer, rewards=[1.0, 1.0, 1.0, 1.0]))
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def gradients(trainer: PolicyTrainer, packed, micro: int) -> tuple[torch.Tensor, float]:
    """The policy (and critic) gradient of one minibatch holding the whole batch."""
    trainer.settings = replace(trainer.settings, micro_batch_size=micro)
    prep = trainer._prepare(packed, 0)
    step, trainer.optimizer.step = trainer.optimizer.step, lambda: None  # keep the gradient, move nothing
    try:
        norm = Norm.of(packed.response_mask, trainer.settings.max_new_tokens)
        sums = trainer._minibatch(prep, torch.arange(len(packed.owner)), norm, True)
    finally:
        trainer.optimizer.step = step
    params = [q for q in trainer.model.parameters() if q.grad is not None]
    return torch.cat([q.grad.flatten() for q in params]), sums["policy_loss"] + sums.get("kl_loss", 0.0)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_one_minibatch_of_8_equals_8_of_1(tiny_model_dir, agg):
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(kl_coef=0.1, loss_agg=agg, entropy_coef=0.01))
    packed = pack(make_batch8(trainer), trainer.tokenizer.pad_token_id)
    whole, loss_whole = gradients(trainer, packed, 8)
    ones, loss_ones = gradients(trainer, packed, 1)
    assert whole.abs().max() > 1e-4  # the comparison is not between zeros
    torch.testing.assert_close(ones, whole, atol=1e-5, rtol=0)
    assert abs(loss_ones - loss_whole) < 1e-5


def test_padding_changes_no_gradient(tiny_model_dir):
    # the same batch packed wider, with garbage behaviour log-probs on the padding, trains the same
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(kl_coef=0.1, algorithm="grpo"))
    packed = pack(make_batch8(trainer), trainer.tokenizer.pad_token_id)
    pad = trainer.tokenizer.pad_token_id
    wide = replace(packed, prompt_ids=torch.cat([packed.prompt_ids, torch.full((2, 2), pad)], 1),
                   response_ids=torch.cat([packed.response_ids, torch.full((8, 3), pad)], 1),
                   response_mask=torch.cat([packed.response_mask, torch.zeros(8, 3)], 1),
                   old_logp=torch.cat([packed.old_logp, torch.full((8, 3), -50.0)], 1))
    narrow_grad, narrow_loss = gradients(trainer, packed, 3)
    wide_grad, wide_loss = gradients(trainer, wide, 3)
    torch.testing.assert_close(wide_grad, narrow_grad, atol=1e-6, rtol=0)
    assert abs(wide_loss - narrow_loss) < 1e-6


def test_ppo_trains_a_critic_and_saves_it(tiny_model_dir, tmp_path):
    from transformers import AutoModelForTokenClassification

    settings = UpdateSettings(algorithm="ppo", lr=1e-2, kl_coef=0.05, kl_in_reward=True,
                              critic=CriticSettings(lr=1e-2, warmup_steps=1))
    trainer = PolicyTrainer(tiny_model_dir, settings)
    assert float(trainer.critic.score.weight.abs().sum()) == 0  # fresh head: every value starts at 0
    batch = make_batch8(trainer)
    policy_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.update(batch)
    # warm-up step: the critic moved, the policy did not
    assert stats["policy_trained"] == 0.0 and stats["value_loss"] > 0
    assert all(torch.equal(v, policy_before[k]) for k, v in trainer.model.state_dict().items())
    assert float(trainer.critic.score.weight.abs().sum()) > 0
    batch.policy_version = trainer.version
    stats = trainer.update(batch)
    assert stats["policy_trained"] == 1.0 and "explained_variance" in stats
    assert any(not torch.equal(v, policy_before[k]) for k, v in trainer.model.state_dict().items())
    trainer.save(tmp_path / "ckpt")
    loaded = AutoModelForTokenClassification.from_pretrained(str(tmp_path / "ckpt" / "critic"))
    torch.testing.assert_close(loaded.score.weight, trainer.critic.score.weight)


def test_stale_rollouts_use_behaviour_logprobs_fresh_ones_get_truncated_weights(tiny_model_dir):
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(lr=1e-2, kl_coef=0.0, tis_cap=1.5))
    batch = make_batch8(trainer)
    batch.behaviour_logprobs = [[lp - 1.0 for lp in row] for row in batch.behaviour_logprobs]  # vLLM "disagrees"
    fresh = trainer.update(batch)
    # π_learner/π_vLLM = e¹ = 2.718 on every token → capped at 1.5
    assert fresh["version_lag"] == 0 and fresh["is_weight_max"] == pytest.approx(1.5)
    assert fresh["is_weight_mean"] == pytest.approx(1.5)
    stale = trainer.update(batch)  # generated by version 0, learner now at 1
    assert stale["version_lag"] == 1 and "is_weight_max" not in stale
    assert stale["behaviour_ratio_mean"] == pytest.approx(1.0)  # ρ's denominator is the behaviour policy


def test_kl_in_reward_reaches_every_token(tiny_model_dir):
    # reinforce_pp (γ = 1) with β = 0.5, k1: the return at a sample's token t is
    #   score − β · Σ_{k ≥ t} KL_k, so at the last token score − β·KL_last and at the first
    #   score − β·Σ KL. The reference is perturbed so that KL ≠ 0.
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(algorithm="reinforce_pp", kl_coef=0.5, kl_estimator="k1",
                                                           kl_in_reward=True))
    with torch.no_grad():
        for q in trainer.reference.parameters():
            q.add_(0.05 * torch.randn_like(q))
    packed = pack(make_batch8(trainer), trainer.tokenizer.pad_token_id)
    prep = trainer._prepare(packed, 0)
    kl = (prep.old_logp - prep.ref_logp) * packed.response_mask
    for b in range(8):
        idx = packed.response_mask[b].nonzero().flatten()
        first, last = int(idx[0]), int(idx[-1])
        score = float(packed.rewards[b])
        assert float(prep.returns[b, last]) == pytest.approx(score - 0.5 * float(kl[b, last]), abs=1e-5)
        assert float(prep.returns[b, first]) == pytest.approx(score - 0.5 * float(kl[b].sum()), abs=1e-5)
    assert float(kl.abs().sum()) > 0.1  # the check above is not against zeros


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_a_learner_on_the_gpu_trains_the_weights_the_cpu_one_does(tiny_model_dir, algorithm):
    import numpy as np

    from learners import state

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    settings = UpdateSettings(algorithm=algorithm, lr=1e-2, kl_coef=0.01)
    cpu, gpu = PolicyTrainer(tiny_model_dir, settings), PolicyTrainer(tiny_model_dir, settings, device="cuda")
    for _ in range(2):
        batch = make_batch8(cpu)
        a, b = cpu.update(batch), gpu.update(batch)
        assert b["kl"] == pytest.approx(a["kl"], abs=1e-4)
    for (name, x), (_, y) in zip(cpu.model.state_dict().items(), gpu.model.state_dict().items()):
        assert y.is_cuda and torch.allclose(x, y.cpu(), atol=1e-4), name
    assert gpu.export(on_device=True)[0].data.is_cuda and isinstance(gpu.export()[0].data, np.ndarray)
    assert gpu.probe_logprobs([1, 5, 6, 2]) == pytest.approx(cpu.probe_logprobs([1, 5, 6, 2]), abs=1e-4)
    saved = state.to_bytes(gpu)
    gpu.update(make_batch8(cpu))
    assert state.restore(gpu, saved) == 2 and gpu.model.lm_head.weight.is_cuda


def test_reduced_matmul_precision_trains_alike_and_leaves_the_process_setting(tiny_model_dir):
    """learner.matmul_precision reduced: the update's matrix products take bf16 inputs (oneDNN);
    the weights move as the exact update moves them, and the process's setting is restored."""
    flags = torch.backends.mkldnn.matmul
    before = flags.fp32_precision
    trainers = {k: PolicyTrainer(tiny_model_dir, UpdateSettings(lr=1e-3, kl_coef=0.01, matmul_precision=k))
                for k in ("float32", "reduced")}
    start = torch.cat([p.detach().flatten().clone() for p in trainers["float32"].model.parameters()])
    batch = make_batch8(trainers["float32"])
    stats = {k: [t.update(batch) for _ in range(2)] for k, t in trainers.items()}
    assert flags.fp32_precision == before
    flat = {k: torch.cat([p.detach().flatten() for p in t.model.parameters()]) for k, t in trainers.items()}
    moved, apart = (flat["float32"] - start).norm(), (flat["reduced"] - flat["float32"]).norm()
    assert apart < 0.2 * moved, (apart, moved)
    assert abs(stats["reduced"][1]["kl"] - stats["float32"][1]["kl"]) < 0.2 * abs(stats["float32"][1]["kl"]) + 1e-6
    if torch.cpu._is_avx512_bf16_supported():  # otherwise oneDNN has no bf16 path and computes in fp32
        assert apart > 0, "matmul_precision reduced changed nothing"
