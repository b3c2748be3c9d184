"""The checkpoint store (local paths and file:// URIs), a write killed half-way, and which config
changes a resume refuses."""
import os
import signal
import subprocess
import sys
import time

import pytest

from cluster import checkpoints as ck
from cluster.resume import check_config, locate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(store: ck.CheckpointStore, step: int, payload: bytes = b"x") -> None:
    staged = store.staging(step)
    store.write(f"{staged}/{ck.LEARNER}", payload)
    store.commit(step, staged, ck.manifest(step, step, {ck.LEARNER: len(payload)}, [], {"steps": 9}))


@pytest.mark.parametrize("uri_form", [False, True])
def test_commit_list_read_and_keep_the_newest(tmp_path, uri_form):
    root = tmp_path / "ckpts"
    store = ck.CheckpointStore(f"file://{root}" if uri_form else str(root))
    assert store.steps() == []
    for step in (3, 6, 9):
        write(store, step, f"state {step}".encode())
    assert store.steps() == [3, 6, 9]
    assert store.read(6, ck.LEARNER) == b"state 6"
    assert store.manifest(9)["step"] == 9 and store.manifest(9)["files"] == {ck.LEARNER: 7}
    assert store.prune(2) == [3]
    assert store.steps() == [6, 9]
    assert sorted(p.name for p in root.iterdir()) == ["step-000006", "step-000009"]


def test_a_checkpoint_without_its_manifest_is_never_used(tmp_path):
    store = ck.CheckpointStore(str(tmp_path))
    write(store, 3)
    staged = store.staging(6)  # written, never committed
    store.write(f"{staged}/{ck.LEARNER}", b"half")
    (tmp_path / "step-000009").mkdir()  # a URI-style half write: the final name, no manifest
    assert store.steps() == [3]
    assert locate(str(tmp_path))[1] == 3
    store.prune(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003"]


WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from cluster import checkpoints as ck
store = ck.CheckpointStore({uri!r})
staged = store.staging(6)
with store.fs.open_output_stream(staged + "/" + ck.LEARNER) as f:
    print("writing", flush=True)
    for _ in range(10_000):
        f.write(b"w" * (1 << 20))  # slow enough to be killed half-way
        time.sleep(0.01)
store.commit(6, staged, ck.manifest(6, 6, {{}}, [], {{}}))
"""


def test_sigkill_while_writing_leaves_the_previous_checkpoint(tmp_path):
    store = ck.CheckpointStore(str(tmp_path))
    write(store, 3, b"good")
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=ROOT, uri=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert (tmp_path / "step-000006.partial" / ck.LEARNER).stat().st_size > 1 << 20  # it was mid-write
    found, step = locate(str(tmp_path))
    assert step == 3 and found.read(3, ck.LEARNER) == b"good"


def test_locate_names_where_it_looked(tmp_path):
    with pytest.raises(ck.CheckpointError, match="no complete checkpoint there"):
        locate(str(tmp_path))


def test_resume_refuses_changes_that_break_it_and_allows_safe_ones(tmp_path, monkeypatch):
    from cluster.config import RunConfig

    monkeypatch.chdir(tmp_path)
    for d in ("m", "other"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "config.json").write_text("{}")
    for f in ("t", "e"):
        (tmp_path / f).write_text("")
    base = {"policy": {"model_dir": "m"}, "data": {"train_path": "t", "eval_path": "e"}}
    saved = {"config": RunConfig.model_validate(base).model_dump(mode="json")}
    ok = RunConfig.model_validate({**base, "steps": 500, "logging": {"eval_every": 3, "progress": False},
                                   "resources": {"learners": 2}, "rollout": {"num_generators": 4},
                                   "checkpoint": {"every": 7}})
    check_config(saved, ok, "runs/x")
    for change, key in [({"learner": {"lr": 1e-3}}, "learner.lr"), ({"policy": {"model_dir": "other"}}, "policy.model_dir"),
                        ({"algorithm": {"name": "ppo"}}, "algorithm.name"), ({"seed": 1}, "seed"),
                        ({"rollout": {"samples_per_prompt": 4}}, "rollout.samples_per_prompt")]:
        with pytest.raises(ck.CheckpointError, match=rf"--resume runs/x: .*\b{key}\b"):
            check_config(saved, RunConfig.model_validate({**base, **change}), "runs/x")
