"""A multi-node `ray.cluster_utils.Cluster` run loses the worker node holding its generators and
verifiers after step 2 (tests/e2e/node_loss_driver.py, in its own process) and still completes every
step, with every expected sample trained on exactly once."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
DRIVER = Path(__file__).with_name("node_loss_driver.py")


def test_the_run_survives_losing_the_rollout_node(assets, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # not the shared e2e cluster
    proc = subprocess.run([sys.executable, str(DRIVER), str(assets), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=840, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    where, p, g = got["where"], got["prompts"], got["samples_per_prompt"]
    assert set(where["before"]) == {where["a"]}  # generators and verifiers ran on A …
    assert set(where["after"]) == {where["b"]}  # … and their replacements on B
    assert got["steps"] == [0, 1, 2, 3, 4, 5]
    assert got["recovery"]["generator_restarts"] == 2 and got["recovery"]["samples_redone"] > 0
    assert got["failures"] == [0] * 5 and got["samples"] == [p * g] * 5
    for step, ids in got["ids"].items():  # every expected sample once
        first = (int(step) - 1) * p
        assert ids == [[d, j] for d in range(first, first + p) for j in range(g)], step
