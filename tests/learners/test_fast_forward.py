import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from learners import fast_forward
from learners.critic import load_critic, response_values
from learners.policy import response_hidden, response_logprobs
from learners.rollout import RolloutBatch, pack
from learners.trainer import PolicyTrainer, UpdateSettings
from tests.learners.test_trainer import make_batch8


def uneven_batch() -> RolloutBatch:
    """3 prompts of 2–6 tokens, 7 samples, responses of 1–4 tokens: every padding case."""
    prompts = [[1, 20, 21, 22, 23, 24], [1, 30], [1, 40, 41, 42]]
    owners = [0, 0, 0, 1, 1, 2, 2]
    responses = [[5, 6, 7, 2], [8], [9, 9], [10, 11, 12, 13], [2], [14, 15, 2], [16]]
    return RolloutBatch([prompts[o] for o in owners], responses, [[0.0] * len(r) for r in responses],
                        owners, [""] * 7, [{}] * 7, 0, rewards=[0.0] * 7)


def qwen2_gqa() -> Qwen2ForCausalLM:
    """Biases on q, k and v and grouped keys (4 query heads, 2 key/value heads)."""
    torch.manual_seed(1)
    cfg = Qwen2Config(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = Qwen2ForCausalLM(cfg).float()
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                lin.bias.normal_(0, 0.5)  # HF initialises them at 0, which would hide a dropped bias
    return model


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_one_pass_form_equals_response_hidden_with_gradients(tiny_model_dir, kind):
    model = (AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32) if kind == "llama"
             else qwen2_gqa())
    assert fast_forward.unsupported(model) is None
    packed = pack(uneven_batch(), pad_id=0)
    weights = torch.randn(7, 4, generator=torch.Generator().manual_seed(0)) * packed.response_mask
    got = {}
    for name, hidden in [("eager", response_hidden), ("one_pass", fast_forward.CompiledHidden(compile=False))]:
        model.zero_grad()
        logp, _ = response_logprobs(model, packed, hidden=hidden)
        (logp * weights).sum().backward()
        got[name] = (logp * packed.response_mask, [q.grad.clone() for q in model.parameters()])
    assert got["eager"][0].abs().max() > 1.0
    torch.testing.assert_close(got["one_pass"][0], got["eager"][0], atol=1e-5, rtol=0)
    for a, b in zip(got["one_pass"][1], got["eager"][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_critic_values_take_the_same_path(tiny_model_dir):
    critic = load_critic(tiny_model_dir)
    torch.nn.init.normal_(critic.score.weight)  # a zero head would make every value 0 on both paths
    packed = pack(uneven_batch(), pad_id=0)
    eager = response_values(critic, packed)
    one_pass = response_values(critic, packed, hidden=fast_forward.CompiledHidden(compile=False))
    assert eager.abs().max() > 0.1
    torch.testing.assert_close(one_pass * packed.response_mask, eager * packed.response_mask, atol=1e-5, rtol=0)


def test_unsupported_models_are_refused_with_the_key_named(tiny_model_dir):
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, hidden_act="gelu")
    assert "hidden_act 'gelu'" in fast_forward.unsupported(LlamaForCausalLM(cfg))
    from transformers import GPT2Config, GPT2LMHeadModel
    assert "model type 'gpt2'" in fast_forward.unsupported(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2)))
    trainer = PolicyTrainer(tiny_model_dir, UpdateSettings(compile=True))  # the tiny Llama is supported
    assert isinstance(trainer.hidden, fast_forward.CompiledHidden)
    gpt2_dir = tiny_model_dir.parent / "tiny_gpt2"
    if not gpt2_dir.exists():
        GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(gpt2_dir)
        trainer.tokenizer.save_pretrained(gpt2_dir)
    with pytest.raises(ValueError, match=r"learner.compile: the policy model has model type 'gpt2'.*learner.compile: false"):
        PolicyTrainer(gpt2_dir, UpdateSettings(compile=True))


def test_compiled_updates_train_as_the_eager_ones(tiny_model_dir):
    """torch.compile runs (graphs are made) and two updates land within float rounding of eager."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()  # graphs other tests compiled for the same function would be reused
    before, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    trainers = {c: PolicyTrainer(tiny_model_dir, UpdateSettings(lr=1e-3, kl_coef=0.01, compile=c)) for c in (False, True)}
    start = torch.cat([p.detach().flatten().clone() for p in trainers[False].model.parameters()])
    batch = make_batch8(trainers[False])
    stats = {c: [t.update(batch) for _ in range(2)] for c, t in trainers.items()}
    assert counters["stats"]["unique_graphs"] > before, "learner.compile compiled nothing"
    assert sum(counters["graph_break"].values()) == breaks, dict(counters["graph_break"])  # one graph per pass
    flat = {c: torch.cat([p.detach().flatten() for p in t.model.parameters()]) for c, t in trainers.items()}
    moved, apart = (flat[False] - start).norm(), (flat[True] - flat[False]).norm()
    assert apart < 1e-3 * moved, (apart, moved)
    for key in ("kl", "policy_loss", "entropy"):
        assert stats[True][1][key] == pytest.approx(stats[False][1][key], rel=1e-3, abs=1e-6)
