"""Lossless resume on a real local Ray cluster with real vLLM engines: 6 steps straight versus 3 steps,
a real SIGTERM (the run checkpoints and stops), then --resume for the rest. The sampled token ids of
every step and the final weights must match, with the synchronous loop and with rollouts in flight
(max_staleness 1)."""
import json
import os
import signal

import pytest
from safetensors.torch import load_file

from cluster import checkpoints as ck
from cluster.config import RunConfig
from cluster.controller import Controller
from cluster.resume import Stopped, locate
from cluster.run import stop_signals

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
STEPS, STOP_AT = 6, 3


def config(assets, k: int) -> RunConfig:
    return RunConfig.model_validate({
        "steps": STEPS, "seed": 5,
        "policy": {"model_dir": str(assets / "model")},
        "data": {"train_path": str(assets / "data/train.jsonl"), "eval_path": str(assets / "data/eval.jsonl")},
        "rollout": {"num_generators": 2, "prompts_per_step": 4, "samples_per_prompt": 8, "max_staleness": k},
        "algorithm": {"name": "grpo"}, "learner": {"lr": 1e-3},
        "checkpoint": {"every": STOP_AT + 1},  # so the stop signal writes the checkpoint resumed from
        "logging": {"eval_every": STOP_AT, "eval_size": 16, "parity_every": 1, "progress": False, "rollouts": True},
    })


class SignalAt:
    """A metrics sink that sends this process a real SIGTERM when the record of `step` is written."""

    def __init__(self, step: int):
        self.step = step

    def write(self, record: dict) -> None:
        if record.get("step") == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(run_dir) -> dict:
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


@pytest.mark.parametrize("k", [0, 1])
def test_stop_and_resume_equals_a_straight_run(assets, generators, tmp_path, k):
    cfg = config(assets, k)
    straight_dir, stopped_dir = tmp_path / "straight", tmp_path / "stopped"
    straight = Controller(cfg, straight_dir, generators)
    try:
        straight.run(progress=False)
    finally:
        straight.shutdown()

    first = Controller(cfg, stopped_dir, generators)
    before = signal.getsignal(signal.SIGTERM)
    first.metrics.sinks.append(SignalAt(STOP_AT))
    try:
        with stop_signals(first, True), pytest.raises(Stopped, match=f"stopped after step {STOP_AT}"):
            first.run(progress=False)
        assert first.control.status["state"] == "stopped"
    finally:
        first.shutdown()
    assert signal.getsignal(signal.SIGTERM) is before  # the run's handler is gone again
    store, step = locate(str(stopped_dir))
    manifest = store.manifest(step)
    assert step == STOP_AT and manifest["policy_version"] == STOP_AT
    # the batches generated (k=0: the next step's; k=1: two steps' worth) but not yet learned are in it
    assert manifest["pending_rollouts"] == list(range(STOP_AT + 1, STOP_AT + 2 + k))
    assert manifest["files"][ck.LEARNER] > 1_000_000  # weights and Adam moments of the 1M-parameter policy
    # a later checkpoint whose write was killed (no manifest) is passed over
    (store_dir := stopped_dir / "checkpoints" / f"{ck.step_name(STOP_AT + 1)}.partial").mkdir()
    (store_dir / ck.LEARNER).write_bytes(b"half")
    assert records(stopped_dir / "rollouts.jsonl")[-1]["step"] == STOP_AT

    resumed = Controller(cfg, stopped_dir, generators, resume=locate(str(stopped_dir)))
    try:
        assert resumed.start_step == STOP_AT and resumed.version == STOP_AT
        summary = resumed.run(progress=False)
    finally:
        resumed.shutdown()

    a, b = records(straight_dir / "rollouts.jsonl"), records(stopped_dir / "rollouts.jsonl")
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))  # nothing lost, nothing repeated
    for ra, rb in zip(a, b):
        assert [s["id"] for s in ra["samples"]] == [s["id"] for s in rb["samples"]], ra["step"]
        assert [s["tokens"] for s in ra["samples"]] == [s["tokens"] for s in rb["samples"]], ra["step"]
        assert ra["rollout_version"] == rb["rollout_version"]
    ids = [tuple(s["id"]) for r in b for s in r["samples"]]
    assert len(ids) == len(set(ids)) == STEPS * 4 * 8
    assert any(ra["samples"][0]["tokens"] != rb["samples"][0]["tokens"] for ra, rb in zip(a[1:], a))  # not constant
    wa, wb = weights(straight_dir), weights(stopped_dir)
    assert max((wa[n] - wb[n]).abs().max().item() for n in wa) <= 1e-6
    start = {n: t for n, t in load_file(str(assets / "model" / "model.safetensors")).items()}
    assert max((wa[n] - start[n]).abs().max().item() for n in wa) > 1e-3  # it did train
    steps = [r["step"] for r in records(stopped_dir / "metrics.jsonl")]
    assert steps == list(range(STEPS + 1))  # one record per step, as one run
    assert summary["eval_accuracy_start"] == records(straight_dir / "metrics.jsonl")[0]["eval_accuracy"]
