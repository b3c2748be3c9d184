"""metrics.jsonl: one record per run."""


def test_reused_run_directory_starts_a_fresh_metrics_file(tmp_path):
    from cluster.metrics import MetricsLog, read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 7, "kl": 1.0}\n')
    log = MetricsLog(tmp_path / "metrics.jsonl", "x")
    log.write({"step": 0, "eval_accuracy": 0.5})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 0, "eval_accuracy": 0.5}]


class RecordingGauge:
    """Stands in for ray.util.metrics.Gauge to see which values reach which tags."""

    def __init__(self):
        self.sets = []

    def set(self, value, tags):
        self.sets.append((value, tags))


def test_per_principle_metrics_reach_their_dashboard_gauges(tmp_path):
    from cluster.metrics import PRINCIPLE_KEYS, MetricsLog, read_metrics

    log = MetricsLog(tmp_path / "metrics.jsonl", "run1")
    log.principle_gauges = {key: RecordingGauge() for key in PRINCIPLE_KEYS}
    principles = {"honest": {"votes": 8, "a_rate": 0.75, "b_rate": 0.25, "tie_rate": 0.0, "abstain_rate": 0.0,
                             "mean_score": None},
                  "harmless": {"votes": 8, "a_rate": 0.5, "b_rate": 0.25, "tie_rate": 0.25, "abstain_rate": 0.125,
                               "mean_score": None}}
    log.write({"step": 1, "sources": {"judges": {"mean": 0.6, "principles": principles}}})
    got = {(key, tags["principle"]): value for key, g in log.principle_gauges.items() for value, tags in g.sets}
    assert got[("a_rate", "honest")] == 0.75 and got[("tie_rate", "harmless")] == 0.25
    assert got[("abstain_rate", "harmless")] == 0.125 and got[("votes", "honest")] == 8.0
    assert ("mean_score", "honest") not in got  # None is not a gauge value
    tags = log.principle_gauges["a_rate"].sets[0][1]
    assert tags["run"] == "run1" and tags["source"] == "judges"
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["sources"]["judges"]["principles"] == principles
