"""The reward-model scorer pool on a real local Ray cluster: same scores as in-process scoring,
resizing, and a scorer killed mid-batch replaced with every sample still scored."""
import threading
import time

import pytest
import ray
import torch

from cluster.rm_pool import RewardModelPool
from rewards.rm.model import load_backbone, save_reward_model
from rewards.rm.scorer import RMScorer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory):
    model, tok = load_backbone(tiny_model_dir, seed=0)
    torch.nn.init.normal_(model.score.weight, std=0.5)
    out = tmp_path_factory.mktemp("rm")
    save_reward_model(model, tok, out)
    return out


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def batch(n: int):
    return [f"{i}+{i % 7}=" for i in range(n)], [str(i * 3 % 101) for i in range(n)]


def test_pool_scores_like_the_scorer_in_order(cluster, rm_dir):
    prompts, responses = batch(50)
    pool = RewardModelPool(str(rm_dir), size=2, batch_size=8)
    got = pool.score(prompts, responses)
    want = RMScorer(rm_dir).score(prompts, responses)
    assert [g.status for g in got] == ["scored"] * 50
    assert [g.score for g in got] == pytest.approx([w.score for w in want], abs=1e-5)
    assert len(set(round(g.score, 4) for g in got)) > 10  # real, differing scores
    done = [i["rows_done"] for i in ray.get([a.info.remote() for a in pool.actors])]
    assert sum(done) == 50 and min(done) > 0  # both scorers worked
    pool.resize(1)
    assert len(pool.actors) == 1 and len(pool.score(prompts[:5], responses[:5])) == 5


def test_scorer_killed_mid_batch_is_replaced_and_every_sample_scored(cluster, rm_dir):
    prompts, responses = batch(3000)
    pool = RewardModelPool(str(rm_dir), size=2, batch_size=4)
    victim = pool.actors[0]
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("got", pool.score(prompts, responses)))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "the batch finished before the kill; make it bigger"
    ray.kill(victim, no_restart=True)
    worker.join(timeout=240)
    got = out["got"]
    assert pool.replaced >= 1 and victim not in pool.actors
    assert [g.status for g in got] == ["scored"] * 3000
    want = RMScorer(rm_dir).score(prompts[:200], responses[:200])
    assert [g.score for g in got[:200]] == pytest.approx([w.score for w in want], abs=1e-5)
