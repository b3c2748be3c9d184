"""Run control without Ray: actor names, scale requests and how they merge with scale.json, throughput,
the CLI's address rules and token, the status table, and `threefold scale`'s argument errors."""
import json

import pytest

from cluster import control
from cluster.cli import HELP, build_parser
from cluster.scaling import cmd_scale

T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC


def test_actor_names_round_trip_and_listing_keeps_only_threefold_runs():
    assert control.actor_name("rlvr-1") == "threefold-run:rlvr-1"
    assert control.run_name_of("threefold-run:rlvr-1") == "rlvr-1"
    assert control.run_name_of("other") is None
    found = [{"name": "threefold-run:b", "namespace": "threefold"},
             {"name": "threefold-run:a", "namespace": "threefold"},
             {"name": "threefold-run:x", "namespace": "elsewhere"}, {"name": "serve", "namespace": "threefold"}]
    assert control.runs_in(found) == ["a", "b"]


def test_validate_request():
    assert control.validate_request({"verifiers": 3, "rm": 1}) == {"verifiers": 3, "rm": 1}
    for bad, word in (({"generators": 2}, "unknown pool 'generators'"), ({"rm": 0}, "rm must be"),
                      ({"judges": True}, "judges must be"), ({"rm": "2"}, "rm must be"), ([1], "mapping")):
        with pytest.raises(ValueError, match=word):
            control.validate_request(bad)


def test_merge_applies_a_changed_file_once_and_the_actor_request_wins():
    assert control.merge_requests({"verifiers": 2}, {}, {}) == {"verifiers": 2}  # first sight of scale.json
    assert control.merge_requests({"verifiers": 2}, {"verifiers": 2}, {}) == {}  # unchanged: not again
    # a later request through the actor is not undone by the unchanged file
    assert control.merge_requests({"verifiers": 2}, {"verifiers": 2}, {"verifiers": 5}) == {"verifiers": 5}
    assert control.merge_requests({"verifiers": 3, "rm": 1}, {"verifiers": 2, "rm": 1}, {"rm": 4}) == {
        "verifiers": 3, "rm": 4}


def test_throughput_over_the_last_steps():
    tp = control.Throughput(steps=2)
    assert tp.rate() is None
    tp.add(64, 4.0)
    assert tp.rate() == 16.0
    tp.add(32, 4.0)
    assert tp.rate() == 12.0  # (64 + 32) / 8
    tp.add(0, 2.0)  # the first step drops out: (32 + 0) / 6
    assert tp.rate() == pytest.approx(32 / 6, abs=1e-12)


def test_initial_status_has_every_field_and_pool():
    s = control.initial_status("r", 40, "/runs/r", None, {"verifiers": 2, "generators": 1}, now=T0)
    assert s == {"run": "r", "state": "running", "started": T0, "updated": T0, "step": 0, "total_steps": 40,
                 "policy_version": 0, "pools": {"generators": 1, "verifiers": 2, "judges": 0, "rm": 0},
                 "samples_per_s": None, "eval_accuracy": None, "eval_step": None, "run_dir": "/runs/r",
                 "storage": None, "error": None}


def test_cluster_address_rules():
    assert control.cluster_address(None, {}) == "auto"
    assert control.cluster_address(None, {"RAY_ADDRESS": "10.0.0.5:6379"}) == "10.0.0.5:6379"
    assert control.cluster_address("ray://head:10001", {"RAY_ADDRESS": "x:1"}) == "ray://head:10001"
    with pytest.raises(control.AddressError, match=r"--address http://head:8265 is a job server .* head:6379 .* "
                                                   r"ray://head:10001"):
        control.cluster_address("http://head:8265", {})
    with pytest.raises(control.AddressError, match=r"\$RAY_ADDRESS https://h:8265"):
        control.cluster_address(None, {"RAY_ADDRESS": "https://h:8265"})
    with pytest.raises(control.AddressError, match="use auto, HOST:6379"):
        control.cluster_address("grpc://h:1", {})


def test_host_port_of_an_address():
    assert control.host_port("auto") is None
    assert control.host_port("ray://head:10001") == ("head", 10001)
    assert control.host_port("ray://head") == ("head", 10001)
    assert control.host_port("10.0.0.5:7000") == ("10.0.0.5", 7000)
    assert control.host_port("head") == ("head", 6379)


def test_a_cluster_at_this_machines_own_ip_is_local():
    """A local cluster's GCS listens on the node IP; its ~/.ray/auth_token must be sent there too."""
    from cluster.ray_jobs import is_local

    assert is_local("127.0.0.2:6379") and is_local("ray://localhost:10001")
    assert not is_local("203.0.113.7:6379")  # TEST-NET-3: never this machine's
    assert not is_local("head.example:6379")


def test_token_env_from_the_submit_header():
    assert control.token_env({"Authorization": "Bearer abc"}) == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}
    assert control.token_env({}) == {}


def test_status_table():
    s = control.initial_status("r1", 40, "/runs/r1", "s3://b/t/r1", {"verifiers": 4, "generators": 2}, now=T0)
    s.update(step=7, policy_version=7, samples_per_s=12.345, eval_accuracy=0.63, eval_step=5, updated=T0 + 30)
    assert control.format_status(s, now=T0 + 42).splitlines() == [
        "run            r1",
        "state          running",
        "started        2026-09-21 14:13:20 UTC",
        "updated        2026-09-21 14:13:50 UTC (12 s ago)",
        "step           7 / 40",
        "policy version 7",
        "throughput     12.3 samples/s (last 5 steps)",
        "held-out       63.0% (step 5)",
        "pools          generators 2, verifiers 4, judges 0, rm 0",
        "run dir        /runs/r1",
        "storage        s3://b/t/r1",
    ]
    s.update(state="failed", error="ValueError: boom", storage=None, samples_per_s=None, eval_accuracy=None)
    lines = control.format_status(s, now=T0 + 42).splitlines()
    assert lines[1] == "state          failed (ValueError: boom)"
    assert lines[6:8] == ["throughput     -", "held-out       -"]
    assert lines[-1] == "storage        - (no logging.storage)"


def test_run_list_lines():
    s = control.initial_status("a", 10, "/r/a", None, {}, now=T0)
    s.update(step=3)
    out = control.format_runs({"b": None, "a": s}).splitlines()
    assert out == [f"{'a':<32}running   step 3/10", f"{'b':<32}(no answer from its control actor)"]
    assert json.loads(control.to_json({"a": s}))["a"]["step"] == 3


def test_help_lists_status():
    assert "status [RUN_NAME]" in HELP and "--run RUN_NAME" in HELP
    args = build_parser().parse_args(["status", "r1", "--address", "h:6379", "--json"])
    assert (args.run, args.address, args.json) == ("r1", "h:6379", True)


def scale(argv):
    return cmd_scale(build_parser().parse_args(["scale", *argv]))


def test_scale_argument_errors(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")
    cases = [([str(tmp_path), "--run", "r", "--verifiers", "2"], "either RUN_DIR or --run"),
             (["--verifiers", "2"], "either RUN_DIR or --run"),
             ([str(tmp_path), "--address", "h:6379", "--verifiers", "2"], "--address goes with --run"),
             (["--run", "r"], "at least one of"),
             (["--run", "r", "--rm", "0"], "--rm must be at least 1")]
    for argv, message in cases:
        assert scale(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert not (tmp_path / "scale.json").exists()


def test_scale_run_dir_unchanged(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")
    assert scale([str(tmp_path), "--verifiers", "2"]) == 0
    assert scale([str(tmp_path), "--rm", "3"]) == 0  # the earlier request for another pool stays
    assert json.loads((tmp_path / "scale.json").read_text()) == {"verifiers": 2, "rm": 3}
    assert scale([str(tmp_path / "nope"), "--rm", "3"]) == 2
    assert "not a run directory" in capsys.readouterr().err
