"""logging.storage: a run's outputs copied to a path or a pyarrow filesystem URI, with real files; a copy
that fails warns and never raises."""
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster import storage


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "runs" / "demo-run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 0, "eval_accuracy": 0.4}\n')
    (run / "config.json").write_text('{"steps": 3}')
    (run / "report.md").write_text("# threefold run demo-run\n")
    (run / "report.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (run / "checkpoint" / "config.json").write_text('{"model_type": "llama"}')
    (run / "checkpoint" / "model.safetensors").write_bytes(b"\x00\x01weights" * 100)
    return run


def assert_copied(run: Path, dest: Path, checkpoint: bool) -> None:
    for name in ("metrics.jsonl", "config.json", "report.md", "report.png"):
        assert (dest / name).read_bytes() == (run / name).read_bytes(), name
    assert (dest / "checkpoint").exists() == checkpoint
    if checkpoint:
        for name in ("config.json", "model.safetensors"):
            assert (dest / "checkpoint" / name).read_bytes() == (run / "checkpoint" / name).read_bytes()


def test_copies_the_run_directory_to_a_local_path_and_updates_it(run_dir, tmp_path):
    store = tmp_path / "shared" / "threefold"
    assert storage.sync_run(run_dir, str(store))
    assert_copied(run_dir, store / "demo-run", checkpoint=False)  # the learner copies the checkpoint
    with (run_dir / "metrics.jsonl").open("a") as f:  # the next evaluation
        f.write('{"step": 10, "eval_accuracy": 0.6}\n')
    assert storage.sync_run(run_dir, str(store))
    assert (store / "demo-run" / "metrics.jsonl").read_text().count("\n") == 2


def test_copies_to_a_file_uri_with_pyarrow(run_dir, tmp_path):
    uri = f"file://{tmp_path}/bucket/prefix"
    assert storage.sync_run(run_dir, uri)
    assert_copied(run_dir, tmp_path / "bucket" / "prefix" / "demo-run", checkpoint=False)
    assert storage.destination(uri, "demo-run") == f"{uri}/demo-run"


def test_a_relative_path_is_relative_to_the_driver(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.sync_run(run_dir, "out")
    assert_copied(run_dir, tmp_path / "out" / "demo-run", checkpoint=False)
    assert storage.destination("out", "demo-run") == f"{tmp_path}/out/demo-run"


def test_the_checkpoint_is_copied_from_the_learners_process(run_dir, tmp_path, monkeypatch):
    import ray

    calls = []

    def ray_call(fn, *args):  # what learner.__ray_call__.remote does, run in place
        calls.append(args)
        return fn(None, *args)

    monkeypatch.setattr(ray, "get", lambda ref: ref)
    learner = SimpleNamespace(__ray_call__=SimpleNamespace(remote=ray_call))
    store = tmp_path / "store"
    assert storage.sync_checkpoint(run_dir, str(store), learner)
    assert calls == [(str(run_dir / "checkpoint"), str(store), "demo-run/checkpoint")]
    for name in ("config.json", "model.safetensors"):
        assert (store / "demo-run" / "checkpoint" / name).read_bytes() == (run_dir / "checkpoint" / name).read_bytes()


def test_without_storage_nothing_happens(run_dir):
    assert storage.sync_run(run_dir, None)
    assert storage.sync_checkpoint(run_dir, None, learner=None)


@pytest.mark.parametrize("bad", ["under-a-file", "nope://bucket/prefix", "file:relative/path"])
def test_a_failed_copy_warns_and_does_not_raise(run_dir, tmp_path, caplog, bad):
    if bad == "under-a-file":  # unwritable even for root: a directory cannot be made below a file
        (tmp_path / "afile").write_text("x")
        bad = str(tmp_path / "afile" / "store")
    with caplog.at_level(logging.WARNING, logger="threefold.storage"):
        assert storage.sync_run(run_dir, bad) is False
    assert "could not copy the run directory" in caplog.text and "the run goes on" in caplog.text
    assert len(caplog.text) < 2000  # pyarrow's longest errors are cut to their first line


def test_a_failed_checkpoint_copy_warns_and_does_not_raise(run_dir, caplog, monkeypatch):
    import ray

    def dead(fn, *args):
        raise RuntimeError("the actor died")

    monkeypatch.setattr(ray, "get", lambda ref: ref)
    with caplog.at_level(logging.WARNING, logger="threefold.storage"):
        assert storage.sync_checkpoint(run_dir, "nope://x", SimpleNamespace(__ray_call__=SimpleNamespace(remote=dead))) \
            is False
    assert "could not copy the checkpoint" in caplog.text and "the actor died" in caplog.text


def test_a_missing_run_directory_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="threefold.storage"):
        assert storage.sync_run(tmp_path / "never-written", str(tmp_path / "store")) is False
    assert "does not exist" in caplog.text


def test_credentials_in_a_uri_are_never_shown():
    assert storage.destination("s3://AKIAKEY:s3cr3t@bucket/prefix/", "run") == "s3://bucket/prefix/run"
    assert storage.display("gs://bucket/x") == "gs://bucket/x"


def test_the_final_line_names_the_storage_location(run_dir, tmp_path):
    from cluster.cli import copy_outputs

    store = tmp_path / "store"
    cfg = SimpleNamespace(logging=SimpleNamespace(storage=str(store)))
    line = copy_outputs(cfg, {"run_dir": str(run_dir)})
    assert line == f"; outputs: {store}/demo-run"
    assert (store / "demo-run" / "report.md").read_text() == "# threefold run demo-run\n"
    assert copy_outputs(SimpleNamespace(logging=SimpleNamespace(storage=None)), {"run_dir": str(run_dir)}) == ""
    bad = SimpleNamespace(logging=SimpleNamespace(storage="nope://bucket"))
    assert copy_outputs(bad, {"run_dir": str(run_dir)}).startswith("; outputs NOT copied to nope://bucket/demo-run")


def test_the_config_key_accepts_paths_and_uris_and_rejects_empty():
    from pydantic import ValidationError

    from cluster.config import LoggingConfig

    assert LoggingConfig().storage is None
    assert LoggingConfig(storage="s3://bucket/prefix").storage == "s3://bucket/prefix"
    with pytest.raises(ValidationError):
        LoggingConfig(storage="")
