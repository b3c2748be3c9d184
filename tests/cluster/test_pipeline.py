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
STEPS_MEET = threading.Barrier(2, timeout=10)
INSIDE = {"now": 0, "most": 0}
LOCK = threading.Lock()


def meet(prompt, response, row) -> float:
    """Returns only when a sample of another shard is being scored at the same moment."""
    MEET.wait()
    return float(len(response))


def steps_meet(prompt, response, row) -> float:
    """Returns only when a sample of another step's batch is being scored at the same moment."""
    STEPS_MEET.wait()
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


def pipeline(source, dynamic: bool = False) -> RolloutPipeline:
    cfg = SimpleNamespace(algorithm=SimpleNamespace(dynamic_sampling=SimpleNamespace(enabled=dynamic, max_rounds=0),
                                                    overlong=SimpleNamespace(buffer=0, penalty=0.0)),
                          rollout=SimpleNamespace(max_new_tokens=8, prompts_per_step=2, max_staleness=1))
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


def test_the_batches_of_two_steps_are_scored_at_once_in_the_background():
    """max_staleness 1: step 2's batch is scored while step 1's still is (a judge then has both in flight)."""
    p = pipeline(SideBySide(SourceConfig(name="steps", type="rule", function="tests.cluster.test_pipeline:steps_meet")))
    p.queued = {1: [shard(["aa"], 0.2)], 2: [shard(["bbb"])]}
    t0 = time.perf_counter()
    p.score_ahead(range(1, 3))
    assert time.perf_counter() - t0 < 0.2 and set(p.scoring) == {1, 2} and not p.queued  # returned at once
    pending = p.pending()  # a checkpoint waits for background scoring and keeps its results
    assert sorted(pending) == [1, 2] and {kind for kind, _ in pending.values()} == {"scored"}
    one, two = p.take(1), p.take(2)
    # scored only if both batches were in flight together (else the barrier times out: status error)
    assert (one.batch.statuses, two.batch.statuses) == (["scored"], ["scored"])
    assert (one.batch.rewards, two.batch.rewards) == ([2.0], [3.0])
    assert not p.scoring and not p.ready


def test_with_dynamic_sampling_the_next_batch_is_scored_in_the_foreground():
    """Its extra rounds draw prompts: only one batch at a time, so that the draws do not depend on timing."""
    p = pipeline(RuleSource(SourceConfig(name="alone", type="rule", function="tests.cluster.test_pipeline:alone")),
                 dynamic=True)
    p.queued = {1: [shard(["a"])], 2: [shard(["bb"])]}
    p.score_ahead(range(1, 3))
    assert not p.scoring and sorted(p.ready) == [1] and sorted(p.queued) == [2]
