"""TensorBoard and W&B (offline) loggers: what a step record becomes in each."""
import json
import struct
import time

import pytest

from cluster.loggers import flatten

RECORDS = [{"step": 1, "reward_mean": 0.25, "skipped": False, "sources": {"math": {"mean": 0.5, "statuses": {"passed": 3}}}},
           {"step": 2, "reward_mean": 0.75, "sources": {"math": {"mean": 1.0, "sandbox_mode": "bwrap"}}}]


def test_flatten_keeps_numbers_only():
    assert flatten(RECORDS[0]) == {"reward_mean": 0.25, "sources/math/mean": 0.5, "sources/math/statuses/passed": 3.0}


def test_tensorboard_scalars_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cluster.loggers import TensorBoardLogger

    log = TensorBoardLogger(tmp_path / "tb")
    for r in RECORDS:
        log.write(r)
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward_mean")] == [(1, 0.25), (2, 0.75)]
    assert [(e.step, e.value) for e in acc.Scalars("sources/math/mean")] == [(1, 0.5), (2, 1.0)]


def wandb_history(path) -> list[dict]:
    """The history rows in an offline run's .wandb file: a LevelDB-style log (7-byte file header,
    32 KiB blocks, records of crc32/length/type) of protobuf Records. wandb ships no Python reader."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, rows = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf = data[pos + 7:pos + 7 + length] if kind in (1, 2) else buf + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or last piece
            record = pb.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_wandb_offline_run_logs_every_step(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from cluster.loggers import WandbLogger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    log = WandbLogger(tmp_path, "run-x", "threefold-test", "offline", {"steps": 2})
    for r in RECORDS:
        log.write(r)
    log.close()
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    deadline, rows = time.monotonic() + 20, []
    while len(rows) < 2 and time.monotonic() < deadline:  # wandb-core may still be writing after finish()
        rows = [{k: v for k, v in r.items() if not k.startswith("_") or k == "_step"} for r in wandb_history(files[0])]
        time.sleep(0.2)
    assert rows == [{"_step": 1, "reward_mean": 0.25, "sources/math/mean": 0.5, "sources/math/statuses/passed": 3},
                    {"_step": 2, "reward_mean": 0.75, "sources/math/mean": 1}]


def test_online_without_a_key_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from cluster.loggers import WandbLogger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ValueError, match="WANDB_API_KEY"):
        WandbLogger(tmp_path, "run-x", "p", "online", {})
