"""metrics.jsonl (one record per run) and what each step record puts on Ray's metrics pipeline."""
import pytest

from cluster.ray_metrics import METRICS, step_values

RECORD = {
    "step": 3, "policy_version": 3, "rollout_version": 2, "samples": 64, "response_len": 3.5,
    "time_generate": 0.5, "time_reward": 1.0, "time_learn": 0.4, "time_sync": 0.1, "reward_mean": 0.25,
    "pools": {"generators": 2, "verifiers": 3, "judges": 1, "rm": 0, "learner": 1},
    "sources": {
        "tests": {"type": "code", "samples": 64, "mean": 0.5, "failures": 2, "dropped": 0, "seconds": 0.8,
                  "per_second": 80.0, "pass_rate": 0.5, "sandbox_mode": "bwrap-forkserver",
                  "statuses": {"passed": 32, "failed": 28, "timeout": 2, "syntax_error": 2}},
        "judges": {"type": "judge", "samples": 64, "mean": 0.6, "failures": 0, "dropped": 0, "seconds": 1.0,
                   "per_second": 64.0, "cost": 0.0,
                   "judges": {"j1": {"calls": 128, "latency_p50_s": 0.2, "prompt_tokens": 1000, "completion_tokens": 200}},
                   "principles": {"honest": {"votes": 8, "a_rate": 0.75, "mean_score": None}}},
    },
}


def values(record=RECORD) -> dict:
    return {(name, tuple(sorted(tags.items()))): v for name, v, tags in step_values(record, "r1")}


def get(name: str, **tags) -> float:
    want = tuple(sorted({"run": "r1", **tags}.items()))
    return values()[(name, want)]


def test_reused_run_directory_starts_a_fresh_metrics_file(tmp_path):
    from cluster.metrics import MetricsLog, read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 7, "kl": 1.0}\n')
    log = MetricsLog(tmp_path / "metrics.jsonl", "x")
    log.write({"step": 0, "eval_accuracy": 0.5})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 0, "eval_accuracy": 0.5}]


def test_step_loop_values():
    assert get("threefold_samples_per_s") == pytest.approx(64 / 2.0)  # samples over the four phases
    assert get("threefold_staleness") == 0  # learned at version 2 -> 3 from rollouts of version 2
    assert get("threefold_policy_version") == 3
    assert get("threefold_phase_seconds", phase="reward") == 1.0
    assert get("threefold_samples_total") == 64 and get("threefold_tokens_total") == 64 * 3.5
    assert get("threefold_steps_total") == 1


def test_every_pool_is_tagged():
    assert {p: get("threefold_pool_size", pool=p) for p in ("generators", "verifiers", "judges", "rm", "learner")} == \
        {"generators": 2, "verifiers": 3, "judges": 1, "rm": 0, "learner": 1}
    assert get("threefold_pool_items_per_s", pool="generators") == pytest.approx(128.0)  # 64 / 0.5 s
    assert get("threefold_pool_items_per_s", pool="learner") == pytest.approx(160.0)
    assert get("threefold_pool_items_per_s", pool="verifiers", source="tests") == 80.0
    assert get("threefold_pool_items_per_s", pool="judges", source="judges") == 64.0


def test_verifier_statuses_and_sandbox_mode():
    tags = {"pool": "verifiers", "source": "tests"}
    assert get("threefold_source_status_rate", status="timeout", **tags) == pytest.approx(2 / 64)
    assert get("threefold_source_status_rate", status="passed", **tags) == 0.5
    assert get("threefold_source_status_total", status="syntax_error", **tags) == 2
    assert get("threefold_sandbox_mode", mode="bwrap-forkserver", **tags) == 1
    assert get("threefold_source_pass_rate", **tags) == 0.5


def test_judge_and_principle_values():
    assert get("threefold_judge_calls", source="judges", judge="j1") == 128
    assert get("threefold_judge_tokens", source="judges", judge="j1") == 1200
    assert get("threefold_principle_a_rate", source="judges", principle="honest") == 0.75
    names = {n for n, _ in values()}
    assert "threefold_principle_mean_score" not in names  # None is no value


def test_every_value_has_a_declared_metric_and_tags_within_its_declaration():
    for name, _, tags in step_values(RECORD, "r1"):
        assert name in METRICS, name
        assert set(tags) <= set(METRICS[name][1]), (name, tags)


def test_skipped_step_counts_nothing():
    got = {n for n, _, _ in step_values({"step": 4, "samples": 0, "skipped": True, "policy_version": 3}, "r1")}
    assert "threefold_steps_total" not in got and "threefold_samples_total" not in got


def test_a_status_or_mode_that_stops_occurring_reads_zero():
    from cluster.ray_metrics import RayMetrics

    class Recording:
        def __init__(self, *a, **k):
            self.values = {}

        def set(self, value, tags):
            self.values[tuple(sorted(tags.items()))] = value

        inc = observe = set

    m = RayMetrics("r1")
    m._kinds = {"gauge": Recording, "counter": Recording, "histogram": Recording}  # see what Ray would get
    src = {"type": "code", "samples": 4, "statuses": {"passed": 1, "timeout": 3}, "sandbox_mode": "bwrap"}
    m.write({"step": 1, "sources": {"t": src}})
    m.write({"step": 2, "sources": {"t": {**src, "statuses": {"failed": 4}, "sandbox_mode": "rlimits"}}})
    rate = m._made["threefold_source_status_rate"][1].values
    tags = lambda status: (("pool", "verifiers"), ("run", "r1"), ("source", "t"), ("status", status))  # noqa: E731
    assert (rate[tags("passed")], rate[tags("timeout")], rate[tags("failed")]) == (0.0, 0.0, 1.0)
    mode = m._made["threefold_sandbox_mode"][1].values
    assert mode[(("mode", "bwrap"), ("pool", "verifiers"), ("run", "r1"), ("source", "t"))] == 0.0
    assert mode[(("mode", "rlimits"), ("pool", "verifiers"), ("run", "r1"), ("source", "t"))] == 1.0


def test_recoveries_reach_the_dashboard_per_kind():
    from cluster.ray_metrics import step_values

    got = step_values({"step": 3, "recovery": {"generator_restarts": 1, "learner_restarts": 0, "samples_redone": 16,
                                               "steps_replayed": 0}}, "r")
    rec = {tags["kind"]: v for name, v, tags in got if name == "threefold_recovery"}
    assert rec == {"generator_restarts": 1.0, "learner_restarts": 0.0, "samples_redone": 16.0, "steps_replayed": 0.0}
