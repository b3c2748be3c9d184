import torch

from learners.rollout import RolloutBatch, pack
from learners.trainer import PolicyTrainer, UpdateSettings


def make_batch(trainer: PolicyTrainer, rewards: list[float]) -> RolloutBatch:
    tok = trainer.tokenizer
    prompt = tok("12+34=")["input_ids"]
    responses = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in ("46", "47", "5", "46")]
    batch = RolloutBatch([prompt] * 4, responses, [], [0, 0, 0, 0], ["46", "47", "5", "46"], [{}] * 4, 0,
                         rewards=rewards)
    for r in responses:  # on-policy: behaviour log-probs are the current policy's
        batch.behaviour_logprobs.append(trainer.probe_logprobs(prompt + r)[len(prompt) - 1:])
    return batch


def test_pack_aligns_response_positions():
    # prompt [1, 5, 6] and response [7, 2]: logits at positions 2 and 3 predict tokens 7 and 2,
    # so the response mask over the L-1 = 4 predictions is [0, 0, 1, 1]; the shorter row is padded.
    batch = RolloutBatch([[1, 5, 6], [1, 5]], [[7, 2], [8]], [[-0.5, -0.25], [-1.0]], [0, 0], ["", ""], [{}, {}], 0,
                         rewards=[1.0, 0.0])
    p = pack(batch, pad_id=0)
    assert p.input_ids.tolist() == [[1, 5, 6, 7, 2], [1, 5, 8, 0, 0]]
    assert p.response_mask.tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]
    assert p.old_logp.tolist() == [[0, 0, -0.5, -0.25], [0, -1.0, 0, 0]]
    assert p.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_update_raises_rewarded_response_and_bumps_version(tiny_model_dir):
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(lr=1e-2, kl_coef=0.0))
    batch = make_batch(trainer, rewards=[1.0, 0.0, 0.0, 1.0])
    full = batch.prompt_ids[0] + batch.response_ids[0]
    before = sum(trainer.probe_logprobs(full)[-3:])
    stats = trainer.update(batch)
    after = sum(trainer.probe_logprobs(full)[-3:])
    assert trainer.version == 1
    assert after > before + 0.05, (before, after)
    # on-policy first epoch: every ratio is 1, so nothing is clipped
    assert stats["clip_frac"] == 0.0
    assert stats["kl"] == 0.0  # the reference equals the policy before the step


def test_equal_rewards_leave_weights_unchanged(tiny_model_dir):
    # all advantages are 0 and β = 0 → zero gradient → AdamW (no decay) moves nothing
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(lr=1e-2, kl_coef=0.0))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.update(make_batch(trainer, rewards=[1.0, 1.0, 1.0, 1.0]))
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_micro_batches_give_the_same_gradient(tiny_model_dir):
    # token-level mean over the batch must not depend on how the batch is split
    from learners.rollout import pack

    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(kl_coef=0.1))
    packed = pack(make_batch(trainer, rewards=[1.0, 0.0, 0.0, 0.5]), trainer.tokenizer.pad_token_id)
    adv = trainer.advantage_fn(packed.rewards, packed.group_ids)
    grads, losses = [], []
    for micro in (4, 1, 3):
        trainer.settings = UpdateSettings(kl_coef=0.1, micro_batch_size=micro)
        trainer.optimizer.zero_grad(set_to_none=True)
        losses.append(trainer._accumulate(packed, adv)["loss"])
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]))
    assert grads[0].abs().max() > 1e-4  # the comparison below is not between zeros
    for g, loss in zip(grads[1:], losses[1:]):
        torch.testing.assert_close(g, grads[0], atol=1e-6, rtol=1e-4)
        assert abs(loss - losses[0]) < 1e-6
