"""One rank of a data-parallel learner group (run by test_distributed.py as its own process):
trains on the pickled batches (replicated, or FSDP2-sharded with a 6th argument `fsdp2`) and saves its
final weights and per-step stats."""
import pickle
import sys

import torch


def main(job: str, rank: int, world: int, address: str, out: str, sharding: str = "replicate") -> None:
    from learners.distributed import join
    from learners.trainer import PolicyTrainer

    torch.set_num_threads(1)
    with open(job, "rb") as f:
        model_dir, settings, batches = pickle.load(f)
    trainer = PolicyTrainer(model_dir, settings, join(rank, world, address, "gloo"))
    if sharding == "fsdp2":
        trainer.shard_policy()
    from learners.state import restore, to_bytes

    stats = [trainer.update(b) for b in batches[:-1]]
    restore(trainer, to_bytes(trainer))  # a checkpoint round trip (gathers and re-splits FSDP2 moments)
    stats.append(trainer.update(batches[-1]))
    from learners.sharding import is_sharded

    shards = [p for p in trainer.train_model.parameters() if is_sharded(p)]
    torch.save({"state": trainer.model.state_dict(), "stats": stats, "idle_passes": trainer.idle_passes,
                "sharded": (sum(p.to_local().numel() for p in shards), sum(p.numel() for p in shards)),
                "critic": trainer.critic.state_dict() if trainer.critic is not None else None}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], *sys.argv[6:])
