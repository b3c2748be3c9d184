"""Training-state checkpoints: <uri>/step-000042/ holds learner.pt (the learner's whole training state,
written by the learner itself, learners/state.py), driver.pkl (step, policy version, sampler
position, the rollouts generated or scored but not yet learned) and manifest.json, written last.

A checkpoint without a manifest is incomplete (a crash mid-write) and is never read, so the previous
one stays usable; a local directory is also renamed into place only once complete. `uri` is a path
or a pyarrow filesystem URI (s3://…, gs://…, file:///…); on a multi-node cluster it must be storage
the learner's node and the driver's both reach."""
from __future__ import annotations

import json
import logging
import pickle
import re
import time

from cluster.storage import _resolve, display, is_uri

log = logging.getLogger("threefold.checkpoints")
MANIFEST, LEARNER, DRIVER = "manifest.json", "learner.pt", "driver.pkl"
_NAME = re.compile(r"^step-(\d{6,})$")


class CheckpointError(ValueError):
    pass


def step_name(step: int) -> str:
    return f"step-{step:06d}"


class CheckpointStore:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = _resolve(uri)
        self.root = self.root.rstrip("/")
        self.renames = not is_uri(uri)  # object stores have no atomic directory rename

    def __repr__(self) -> str:
        return display(self.uri)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def staging(self, step: int) -> str:
        """Where a checkpoint's files are written before the manifest commits it."""
        name = step_name(step) + (".partial" if self.renames else "")
        path = self._path(name)
        self.fs.delete_dir_contents(path, missing_dir_ok=True)  # a half-written earlier attempt
        self.fs.create_dir(path, recursive=True)
        return path

    def write(self, path: str, data: bytes) -> None:
        write_bytes(self.fs, path, data)

    def commit(self, step: int, staged: str, manifest: dict) -> str:
        write_bytes(self.fs, f"{staged}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
        final = self._path(step_name(step))
        if self.renames:
            if self._exists(final):
                self.fs.delete_dir(final)
            self.fs.move(staged, final)
        return final

    def _exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        import pyarrow.fs as pafs

        if not self._exists(self.root):
            return []
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root)):
            m = _NAME.match(info.base_name)
            if m and info.type == pafs.FileType.Directory and self._exists(f"{info.path}/{MANIFEST}"):
                out.append(int(m.group(1)))
        return sorted(out)

    def manifest(self, step: int) -> dict:
        return json.loads(self.read(step, MANIFEST))

    def read(self, step: int, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(step_name(step), name)) as f:
            return f.read()

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest `keep` complete checkpoints, and any incomplete ones."""
        import pyarrow.fs as pafs

        steps = self.steps()
        gone = steps[:-keep] if keep else []
        for step in gone:
            self.fs.delete_dir(self._path(step_name(step)))
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True)):
            if info.base_name.endswith(".partial") or (_NAME.match(info.base_name) and
                                                       int(_NAME.match(info.base_name).group(1)) not in steps):
                self.fs.delete_dir(info.path)
        return gone


def write_bytes(fs, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def save_in_learner(actor, uri: str, path: str) -> int:
    """Runs inside the learner's process (`actor.__ray_call__`): its training state straight to the
    store, so the weights and optimizer never travel through the driver. Returns the bytes written."""
    from learners.state import to_bytes

    t = actor.trainer
    if t.shard.rank != 0:  # rank 0 writes; the others only take part in gathering sharded state
        if t.sharded:
            to_bytes(t)
        return 0
    data = to_bytes(t)
    fs, _ = _resolve(uri)
    write_bytes(fs, path, data)
    return len(data)


def load_in_learner(actor, uri: str, path: str) -> int:
    """Runs inside a learner's process: its training state from the store; returns the policy version."""
    from learners.state import restore

    fs, _ = _resolve(uri)
    with fs.open_input_stream(path) as f:
        return restore(actor.trainer, f.read())


def driver_bytes(state: dict) -> bytes:
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def driver_state(data: bytes) -> dict:
    return pickle.loads(data)  # noqa: S301 - our own file, written by this run


def manifest(step: int, version: int, sizes: dict, pending: list[int], config: dict) -> dict:
    return {"format": 1, "step": step, "policy_version": version, "written_at": time.time(),
            "contents": ["policy", "reference (from policy.model_dir)", "optimizer", "lr schedule", "critic (ppo)",
                         "KL controller", "RNG states (torch, python, minibatch order)", "sampler position",
                         "rollouts not yet learned"],
            "pending_rollouts": pending, "files": sizes, "config": config}


# Keys a resumed run may change: how long it runs, how it logs and checkpoints, and how many actors
# do the work (sampling is seeded per prompt, not per generator). Anything else changes what the run
# learns from or how, and is refused.
SAFE_KEYS = ("steps", "logging.", "checkpoint.", "resources.", "rollout.num_generators", "reward.verifiers",
             "reward.sandbox_slots", "reward.eval")


def flatten(d, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def changed_keys(saved: dict, now: dict) -> list[str]:
    """Config keys whose change breaks a resume (see SAFE_KEYS), in a stable order."""
    a, b = flatten(saved), flatten(now)
    keys = sorted(k for k in {*a, *b} if a.get(k, "<unset>") != b.get(k, "<unset>"))
    return [k for k in keys if not any(k == s or (s.endswith(".") and k.startswith(s)) for s in SAFE_KEYS)]
