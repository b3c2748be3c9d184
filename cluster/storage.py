"""Copies a run's outputs to `logging.storage`, so they outlive the machine or the job working directory
the run happened to write them in: <storage>/<run_name>/ gets metrics.jsonl, config.json, report.md,
report.png and checkpoint/. `storage` is a path (on storage the nodes share) or a pyarrow filesystem URI
(s3://bucket/prefix, gs://bucket/prefix, file:///abs/path, ...). A failed copy is a warning, never an
error: the run goes on and its local run directory stays complete."""
from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("threefold.storage")
CHECKPOINT = "checkpoint"
_SKIP = {CHECKPOINT}  # the learner copies the checkpoint from its own node
_filesystems: dict = {}  # resolved URIs (an s3:// URI costs a network round trip to resolve)


def is_uri(storage: str) -> bool:
    return "://" in storage or storage.startswith("file:")


def normalize(storage: str) -> str:
    """A plain path made absolute (relative to this process's working directory); a URI as written."""
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def display(storage: str) -> str:
    """The location without credentials a URI may carry (s3://KEY:SECRET@bucket/x → s3://bucket/x)."""
    return re.sub(r"^([A-Za-z][\w+.-]*://)[^/@]*@", r"\1", storage)


def destination(storage: str, run_name: str) -> str:
    """Where a run's outputs go, for printing: <storage>/<run_name>."""
    return display(normalize(storage)).rstrip("/") + "/" + run_name


def _resolve(storage: str):
    import pyarrow.fs as pafs

    if not is_uri(storage):
        return pafs.LocalFileSystem(), normalize(storage)
    if storage not in _filesystems:
        _filesystems[storage] = pafs.FileSystem.from_uri(storage)
    return _filesystems[storage]


def _copy(src: Path, storage: str, subpath: str, skip: set[str] = frozenset()) -> None:
    """Copy the file or directory tree `src` to <storage>/<subpath> (existing files are overwritten)."""
    import pyarrow.fs as pafs

    fs, root = _resolve(storage)
    dest = f"{root.rstrip('/')}/{subpath.strip('/')}"
    local = pafs.LocalFileSystem()
    src = Path(src).resolve()
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if src.is_file():
        fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(src), dest, source_filesystem=local, destination_filesystem=fs)
        return
    fs.create_dir(dest, recursive=True)
    for entry in sorted(src.iterdir()):
        if entry.name in skip or entry.name.endswith(".tmp"):  # .tmp: a file being replaced right now
            continue
        pafs.copy_files(str(entry), f"{dest}/{entry.name}", source_filesystem=local, destination_filesystem=fs)


def _reason(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]  # some pyarrow errors run to dozens of lines
    return f"{type(e).__name__}: {text[:300]}"


def upload(src: Path, storage: str, subpath: str, skip: set[str] = frozenset()) -> str | None:
    """Copy `src` to <storage>/<subpath>; None when it worked, else why not (nothing is raised)."""
    try:
        _copy(src, storage, subpath, skip)
        return None
    except Exception as e:  # noqa: BLE001 - a storage outage must not end a training run
        return _reason(e)


def _warn(what: str, storage: str, run_name: str, reason: str) -> None:
    log.warning("could not copy %s to %s (the run goes on; its local directory is complete): %s",
                what, destination(storage, run_name), reason)


def sync_run(run_dir: Path, storage: str | None) -> bool:
    """Copy the run directory, except checkpoint/, to <storage>/<run_name>/. No-op without storage."""
    if not storage:
        return True
    storage = normalize(storage)
    reason = upload(run_dir, storage, run_dir.name, _SKIP)
    if reason:
        _warn(f"the run directory {run_dir}", storage, run_dir.name, reason)
    return reason is None


def _upload_in_actor(_actor, src: str, storage: str, subpath: str) -> str | None:
    return upload(Path(src), storage, subpath)


def sync_checkpoint(run_dir: Path, storage: str | None, learner) -> bool:
    """Copy run_dir/checkpoint to <storage>/<run_name>/checkpoint from inside the learner's process: the
    learner saves the checkpoint on its own node, which need not be the driver's."""
    if not storage:
        return True
    import ray

    storage = normalize(storage)  # relative to the driver's working directory, not the learner's
    src = str((run_dir / CHECKPOINT).resolve())
    try:
        reason = ray.get(learner.__ray_call__.remote(_upload_in_actor, src, storage, f"{run_dir.name}/{CHECKPOINT}"))
    except Exception as e:  # noqa: BLE001 - e.g. the learner died after saving
        reason = _reason(e)
    if reason:
        _warn("the checkpoint", storage, run_dir.name, reason)
    return reason is None
