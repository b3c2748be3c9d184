"""One rank of a data-parallel learner group (run by test_distributed.py as its own process):
trains on the pickled batches and saves its final weights and per-step stats."""
import pickle
import sys

import torch


def main(job: str, rank: int, world: int, address: str, out: str) -> None:
    from learners.distributed import join
    from learners.trainer import PolicyTrainer

    torch.set_num_threads(1)
    with open(job, "rb") as f:
        model_dir, settings, batches = pickle.load(f)
    trainer = PolicyTrainer(model_dir, settings, join(rank, world, address, "gloo"))
    stats = [trainer.update(b) for b in batches]
    torch.save({"state": trainer.model.state_dict(), "stats": stats,
                "critic": trainer.critic.state_dict() if trainer.critic is not None else None}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
