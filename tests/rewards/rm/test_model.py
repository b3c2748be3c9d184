"""Bradley–Terry loss by hand, last-token pooling under both paddings, and the saved directory
loading as a standard transformers sequence-classification model."""
import math

import pytest
import torch

from rewards.rm.model import TextEncoder, bradley_terry_loss, last_token_index, load_backbone, rewards, save_reward_model
from rewards.rm.scorer import RMScorer, RunningNorm


def test_bradley_terry_loss_by_hand():
    c, r = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # −log σ(1) = 0.313262, −log σ(−1) = 1.313262; mean 0.813262
    assert bradley_terry_loss(c, r).item() == pytest.approx(0.813262, abs=1e-5)
    # with margins (0.5, −1): −log σ(0.5) = 0.474077, −log σ(0) = 0.693147; mean 0.583612
    assert bradley_terry_loss(c, r, torch.tensor([0.5, -1.0])).item() == pytest.approx(0.583612, abs=1e-5)
    # centering adds 0.1 · mean((3)², (1)²) = 0.1 · 5 = 0.5
    assert bradley_terry_loss(c, r, center_coef=0.1).item() == pytest.approx(1.313262, abs=1e-5)


def test_loss_gradient_pushes_chosen_up_and_rejected_down():
    c, r = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    bradley_terry_loss(c, r).backward()
    # d/dc −log σ(c − r) = −σ(−(c − r)) = −0.5, averaged over 3 pairs
    assert c.grad.tolist() == pytest.approx([-0.5 / 3] * 3) and r.grad.tolist() == pytest.approx([0.5 / 3] * 3)


def test_last_token_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory):
    model, tok = load_backbone(tiny_model_dir, seed=0)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # a head that tells texts apart
    out = tmp_path_factory.mktemp("rm")
    save_reward_model(model, tok, out)
    return out


TEXTS = [("12+7=", "19"), ("3+4=", "7"), ("45+45=", "90"), ("1+1=", "two, I think")]


def test_left_and_right_padding_give_the_same_rewards(rm_dir):
    model, tok = load_backbone(rm_dir, seed=0)
    prompts, responses = zip(*TEXTS)
    right = rewards(model, *TextEncoder(tok, side="right").batch(prompts, responses))
    left = rewards(model, *TextEncoder(tok, side="left").batch(prompts, responses))
    alone = torch.cat([rewards(model, *TextEncoder(tok).batch([p], [r])) for p, r in TEXTS])
    assert len(set(right.tolist())) == 4  # the texts really score differently
    assert torch.allclose(right, alone, atol=1e-5) and torch.allclose(left, alone, atol=1e-4)


def test_saved_model_loads_in_transformers_with_the_same_scores(rm_dir):
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    assert hf.config.num_labels == 1
    model, tok = load_backbone(rm_dir, seed=0)
    ids, mask = TextEncoder(tok).batch(*zip(*TEXTS))
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        ours = rewards(model, ids, mask)
    assert torch.allclose(theirs, ours, atol=1e-5)


def test_scorer_scores_and_isolates_bad_samples(rm_dir):
    scorer = RMScorer(rm_dir, batch_size=2)
    got = scorer.score(["12+7=", None, "3+4=", "1+1="], ["19", "x", 7, "two, I think"])
    assert [g.status for g in got] == ["scored", "error", "error", "scored"]
    model, tok = load_backbone(rm_dir, seed=0)
    expect = rewards(model, *TextEncoder(tok).batch(["12+7=", "1+1="], ["19", "two, I think"])).tolist()
    assert [got[0].score, got[3].score] == pytest.approx(expect, abs=1e-5)


def test_scorer_refuses_a_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="rm train"):
        RMScorer(tmp_path)


def test_running_norm_matches_mean_and_sample_std():
    norm = RunningNorm()
    norm.update([1.0, 2.0, 3.0])
    norm.update([4.0])
    assert norm.mean == pytest.approx(2.5) and norm.std == pytest.approx(math.sqrt(5 / 3))
    assert norm(4.0) == pytest.approx(1.5 / math.sqrt(5 / 3))


def test_a_causal_lm_gets_a_zero_head_and_a_saved_reward_model_keeps_its_own(tiny_model_dir, rm_dir):
    fresh, _ = load_backbone(tiny_model_dir, seed=0)
    saved, _ = load_backbone(rm_dir, seed=0)
    assert fresh.score.weight.abs().sum().item() == 0.0
    assert saved.score.weight.abs().sum().item() > 1.0
