"""RolloutPipeline's scoring of a step's shards on a real local Ray cluster: every shard in flight at
once for sources that allow it, one at a time for those that do not, the batch in generator order."""
import importlib
import threading
import time
from types import SimpleNamespace

import pytest
import ray

from cluster.config import SourceConfig
from cluster.pipeline import RolloutPipeline
from cluster.reward_router import RewardRouter
from cluster.reward_sources import RuleSource
from learners.rollout import RolloutBatch

MEET = threading.Barrier(2, timeout=10)
INSIDE = {"now": 0, "most": 0}
LOCK = threading.Lock()


def meet(prompt, response, row) -> float:
    """Returns only when a sample of another shard is being scored at the same moment."""
    MEET.wait()
    return float(len(response))


def alone(prompt, response, row) -> float:
    """Counts how many calls are inside at once."""
    with LOCK:
        INSIDE["now"] += 1
        INSIDE["most"] = max(INSIDE["most"], INSIDE["now"])
    time.sleep(0.05)
    with LOCK:
        INSIDE["now"] -= 1
    return float(len(response))


class SideBySide(RuleSource):
    """A rule source declared safe to score several shards at once, as the pool-backed sources are."""
    concurrent = True


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def pipeline(source) -> RolloutPipeline:
    cfg = SimpleNamespace(algorithm=SimpleNamespace(dynamic_sampling=SimpleNamespace(enabled=False),
                                                    overlong=SimpleNamespace(buffer=0, penalty=0.0)),
                          rollout=SimpleNamespace(max_new_tokens=8, prompts_per_step=2))
    return RolloutPipeline(cfg, [], None, RewardRouter([source]))


def shard(texts: list[str], delay_s: float = 0.0):
    """A generator's shard, ready after `delay_s` (a later shard of the same step)."""
    n = len(texts)
    batch = RolloutBatch([[1]] * n, [[2]] * n, [[0.0]] * n, [0] * n, texts, [{"prompt": "p"}] * n, 0)

    @ray.remote(num_cpus=0)
    def later(b):
        time.sleep(delay_s)
        return b

    return later.remote(batch)


def test_shards_of_a_step_are_scored_side_by_side():
    source = SideBySide(SourceConfig(name="meet", type="rule", function="tests.cluster.test_pipeline:meet"))
    info = {"time_generate": 0.0, "time_reward": 0.0, "time_wait": 0.0}
    batch = pipeline(source)._score_shards([shard(["aaa", "b"], 0.3), shard(["cc", "dddd"])], info)
    # scored only if both shards were in flight together (else the barrier times out: status error)
    assert batch.statuses == ["scored"] * 4
    assert batch.texts == ["aaa", "b", "cc", "dddd"]  # generator order, though the second came first
    assert batch.rewards == [3.0, 1.0, 2.0, 4.0]
    assert info["sources"]["meet"]["samples"] == 4 and info["sources"]["meet"]["failures"] == 0
    assert info["time_wait"] + info["time_reward"] >= 0.3  # the later shard took 0.3 s to come


def test_a_source_that_is_not_concurrent_scores_one_shard_at_a_time():
    source = RuleSource(SourceConfig(name="alone", type="rule", function="tests.cluster.test_pipeline:alone"))
    batch = pipeline(source)._score_shards([shard(["a", "bb"]), shard(["ccc"]), shard(["dddd", "e"])], {
        "time_generate": 0.0, "time_reward": 0.0, "time_wait": 0.0})
    assert batch.rewards == [1.0, 2.0, 3.0, 4.0, 1.0] and batch.statuses == ["scored"] * 5
    # the copy of this module the rule source imported by name (pytest may hold another)
    assert importlib.import_module("tests.cluster.test_pipeline").INSIDE["most"] == 1
