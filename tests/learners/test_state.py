"""A trainer's state saved after 2 updates and loaded into a fresh trainer continues exactly as the
original: same weights (policy, critic), same optimizer moments, same minibatch order, same KL β."""
import pytest
import torch

from learners.state import restore, to_bytes
from learners.trainer import CriticSettings, PolicyTrainer, UpdateSettings
from tests.learners.test_trainer import make_batch8

SETTINGS = {
    "grpo": UpdateSettings(lr=1e-2, kl_coef=0.05, kl_target=0.01, epochs=2, minibatches=2),
    "ppo": UpdateSettings(algorithm="ppo", lr=1e-2, kl_coef=0.05, kl_in_reward=True, epochs=2, minibatches=2,
                          critic=CriticSettings(lr=1e-2, warmup_steps=1), schedule="cosine", total_steps=10,
                          warmup_steps=1),
}


def weights(t: PolicyTrainer) -> dict:
    out = {f"policy.{k}": v.clone() for k, v in t.model.state_dict().items()}
    if t.critic is not None:
        out.update({f"critic.{k}": v.clone() for k, v in t.critic.state_dict().items()})
    return out


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_restored_trainer_continues_exactly(tiny_model_dir, name):
    straight = PolicyTrainer(tiny_model_dir, SETTINGS[name])
    batch = make_batch8(straight)
    for _ in range(2):
        batch.policy_version = straight.version
        straight.update(batch)
    saved = to_bytes(straight)
    torch.manual_seed(123)  # a fresh process has other RNG states: the checkpoint must carry them
    resumed = PolicyTrainer(tiny_model_dir, SETTINGS[name])
    assert restore(resumed, saved) == 2 == resumed.version
    assert resumed.kl.beta == straight.kl.beta != SETTINGS[name].kl_coef or name == "ppo"
    for t in (straight, resumed):
        for _ in range(2):
            batch.policy_version = t.version
            t.update(batch)
    a, b = weights(straight), weights(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    assert resumed.scheduler.get_last_lr() == straight.scheduler.get_last_lr()
    # weights alone (fresh optimizer moments, schedule, β) continue differently: the test can fail
    import io

    partial = PolicyTrainer(tiny_model_dir, SETTINGS[name])
    partial.model.load_state_dict(torch.load(io.BytesIO(saved), weights_only=False)["model"])
    partial.version = 2
    for _ in range(2):
        batch.policy_version = partial.version
        partial.update(batch)
    c = weights(partial)
    assert max((a[k] - c[k]).abs().max().item() for k in a if k.startswith("policy.")) > 1e-4

def test_a_state_without_the_runs_critic_is_refused(tiny_model_dir):
    grpo = PolicyTrainer(tiny_model_dir, SETTINGS["grpo"])
    with pytest.raises(ValueError, match="critic"):
        restore(PolicyTrainer(tiny_model_dir, SETTINGS["ppo"]), to_bytes(grpo))
