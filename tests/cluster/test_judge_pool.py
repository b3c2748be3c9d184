"""JudgePool on a real local Ray cluster against a scripted test-double server: order kept, the
endpoint limit shared out among actors, resizing between steps, groups kept together, lost actors."""
import time

import pytest
import ray

from cluster.judge_pool import JudgePool
from rewards.judge_reward import JUDGED
from tests.doubles.openai_double import OpenAIDouble, Reply, by_model
from tests.doubles.judge_helpers import GOOD, config, prefers

SCRIPTS: dict = {}


@pytest.fixture(scope="module")
def srv():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with OpenAIDouble(by_model(SCRIPTS)) as server:
        yield server
    ray.shutdown()


def rows(n):
    return [(f"q{i}", f"right {i}", f"wrong {i}") if i % 3 else (f"q{i}", f"wrong {i}", f"right {i}") for i in range(n)]


def test_pool_keeps_order_and_shares_the_endpoint_limit(srv):
    SCRIPTS["pool-slow"] = lambda seen: Reply(prefers("right")(seen).text, delay_s=0.1)
    pool = JudgePool(config(srv.base_url, "pool-slow", judge={"max_concurrency": 4}, pool={"size": 2, "num_cpus": 0.1}))
    try:
        assert pool.size == 2
        t0 = time.monotonic()
        verdicts = pool.judge_pairs(rows(16))  # 32 requests, 2 actors × 2 in flight: 8 waves of 0.1 s
        elapsed = time.monotonic() - t0
        assert [v.winner for v in verdicts] == ["B" if i % 3 == 0 else "A" for i in range(16)]
        assert srv.max_in_flight["pool-slow"] == 4
        assert 0.8 <= elapsed < 3.0
        per_actor = [ray.get(a.stats.remote())["pool-slow"].calls for a in pool.actors]
        assert per_actor == [16, 16]
        assert pool.metrics()["pool-slow"]["calls"] == 32
    finally:
        pool.shutdown()


def test_resize_between_steps_keeps_the_totals(srv):
    SCRIPTS["pool-fast"] = prefers("right")
    pool = JudgePool(config(srv.base_url, "pool-fast", pool={"size": 1}))
    try:
        pool.judge_pairs(rows(4))
        pool.resize(3)
        assert pool.size == 3
        assert [v.winner for v in pool.judge_pairs(rows(6))] == ["B", "A", "A"] * 2
        # the first actor also did the 8 calls of the first step
        assert [ray.get(a.stats.remote())["pool-fast"].calls for a in pool.actors] == [8 + 4, 4, 4]
        pool.resize(1)  # the two removed actors' counts stay in the pool's metrics
        assert pool.size == 1 and pool.metrics()["pool-fast"]["calls"] == 8 + 12
        with pytest.raises(ValueError, match="at least one actor"):
            pool.resize(0)
    finally:
        pool.shutdown()


def test_group_rewards_keep_each_group_on_one_actor(srv):
    SCRIPTS["pool-plus"] = lambda seen: Reply(GOOD.format(
        "A" if seen.user.split("[Response B]")[0].count("+") > seen.user.split("[Response B]")[1].count("+") else "B"))
    pool = JudgePool(config(srv.base_url, "pool-plus", pool={"size": 2}))
    try:
        got = pool.rewards("group", ["p"] * 6, ["+", "+++", "++", "x+", "x", "x++"], [0, 0, 0, 1, 1, 1])
        assert [r.score for r in got] == [0.0, 1.0, 0.5, 0.5, 0.0, 1.0]
        assert all(r.status == JUDGED for r in got)
        ref = pool.rewards("reference", ["p", "p"], ["+++", "+"], ["++", "++"])
        assert [r.score for r in ref] == [1.0, 0.0]
        with pytest.raises(ValueError, match="unknown judge reward kind 'best'"):
            pool.rewards("best", ["p"], ["+"])
    finally:
        pool.shutdown()


def test_a_lost_actor_is_replaced_and_its_work_redone(srv):
    SCRIPTS["pool-survivor"] = prefers("right")
    pool = JudgePool(config(srv.base_url, "pool-survivor", pool={"size": 2}))
    try:
        dead = pool.actors[0]
        ray.kill(dead)
        verdicts = pool.judge_pairs(rows(6))
        assert [v.winner for v in verdicts] == ["B", "A", "A"] * 2
        assert dead not in pool.actors and pool.size == 2
    finally:
        pool.shutdown()
