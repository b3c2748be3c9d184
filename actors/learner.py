"""Learner actor: holds the policy, reference model and optimizer; logic in learners.trainer."""
from __future__ import annotations

import gc
import hashlib
import time

import ray

from learners.rollout import RolloutBatch
from learners import distributed
from learners.trainer import PolicyTrainer, UpdateSettings
from learners.weight_pack import Bucket


def _dtype(name: str | None):
    """rollout.sync_dtype as a torch dtype (None: the learner's own)."""
    import torch

    return getattr(torch, name) if name else None


@ray.remote
class Learner:
    def __init__(self, model_dir: str, settings: UpdateSettings, threads: int = 1):
        self.label = "learner"  # its repr: what the dashboard and log lines show
        import torch

        torch.set_num_threads(threads)
        # a GPU Ray gave this actor (resources.learner_gpus > 0): Ray sets CUDA_VISIBLE_DEVICES to it
        self.device = "cuda:0" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        if self.device != "cpu":
            torch.cuda.set_device(0)
        self.trainer = PolicyTrainer(model_dir, settings, device=self.device)
        # the ~400k start-up objects of torch, transformers and Ray never become garbage: frozen, a
        # full collection no longer scans them (a scan of that size takes a few tenths of a second)
        gc.freeze()

    def address(self) -> str:
        """Where rank 0 of a learner group listens (this node, a free port)."""
        return distributed.free_address()

    def join(self, rank: int, world: int, address: str, backend: str, sharding: str = "replicate") -> int:
        """Join the data-parallel group (returns once every rank has joined, learners/distributed.py);
        with sharding "fsdp2" the policy's layers are then split over it (learners/sharding.py)."""
        self.label = f"learner[rank {rank}/{world}]"
        self.trainer.shard = distributed.join(rank, world, address, backend)
        if sharding == "fsdp2":
            self.trainer.shard_policy()
        return rank

    def __repr__(self) -> str:
        return self.label

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        t0 = time.perf_counter()
        stats = self.trainer.update(batch)
        return {**stats, "seconds": time.perf_counter() - t0}

    def export(self, dtype: str | None = None) -> list[Bucket]:
        """The policy's weights as buckets (rollout.sync_dtype: None, "bfloat16" or "float16")."""
        return self.trainer.export(_dtype(dtype))

    def weights_backend(self) -> str:
        """Backend of a weight group with this learner: nccl when its weights are on a GPU, else gloo."""
        return "nccl" if self.trainer.flat.flats[0].is_cuda else "gloo"

    def open_weight_group(self, address: str, world: int, backend: str, name: str, timeout_s: float) -> int:
        """rollout.sync_transport broadcast: serve as rank 0 of a weight group of its own (returns once
        every engine worker joined); a group formed again after a generator was replaced takes over."""
        from learners.weight_transport import Sender, WeightGroup

        self.sender = Sender(WeightGroup(address, 0, world, backend, name, timeout_s))
        return 0

    def broadcast_weights(self, dtype: str | None = None) -> list:
        """Snapshot the policy's weights and broadcast them to the weight group in the background;
        returns their layout at once (what each receiver needs to take them)."""
        return self.sender.send(self.trainer.export(_dtype(dtype), on_device=True))

    def ipc_weights(self, dtype: str | None, depth: int) -> tuple[list, list]:
        """rollout.sync_transport cuda_ipc: snapshot the weights on this learner's GPU and return their
        layout and CUDA IPC handles (a ring of `depth` snapshots, learners/weight_transport.py)."""
        from learners.weight_transport import IpcExporter

        if getattr(self, "ipc", None) is None or self.ipc.snapshots.depth != depth:
            self.ipc = IpcExporter(depth)
        return self.ipc.export(self.trainer.export(_dtype(dtype), on_device=True))

    def export_nbytes(self, dtype: str | None = None) -> int:
        """Bytes of one export."""
        return sum(b.nbytes for b in self.export(dtype))

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        return self.trainer.probe_logprobs(token_ids)

    def weights_digest(self, which: str = "policy") -> str | None:
        """sha256 of the policy's (or the critic's; None without one) weights."""
        if which == "critic":
            if self.trainer.critic is None:
                return None
            from learners.policy import export_weights

            return hashlib.sha256(export_weights(self.trainer.critic)).hexdigest()
        from learners.policy import export_weights

        return hashlib.sha256(export_weights(self.trainer.model)).hexdigest()

    def get_version(self) -> int:
        return self.trainer.version

    def save(self, out_dir: str) -> str:
        self.trainer.save(out_dir)
        return out_dir
