"""metrics.jsonl: one record per run."""


def test_reused_run_directory_starts_a_fresh_metrics_file(tmp_path):
    from cluster.metrics import MetricsLog, read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 7, "kl": 1.0}\n')
    log = MetricsLog(tmp_path / "metrics.jsonl", "x")
    log.write({"step": 0, "eval_accuracy": 0.5})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 0, "eval_accuracy": 0.5}]
