"""Optional metric loggers besides metrics.jsonl: TensorBoard event files and Weights & Biases
(offline by default). Each takes the step records MetricsLog writes and logs their numbers."""
from __future__ import annotations

import os
from pathlib import Path


def flatten(record: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a step record as {"sources/math/mean": 0.5, ...}; the step itself, text,
    None and booleans are left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
            out[name] = float(value)
    return out


class TensorBoardLogger:
    """<run dir>/tensorboard/: one scalar per numeric leaf, at the record's step."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(str(log_dir))

    def write(self, record: dict) -> None:
        for tag, value in flatten(record).items():
            self.writer.add_scalar(tag, value, global_step=int(record.get("step", 0)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run named after the threefold run. Offline (the default) writes under <run dir>/wandb/
    for `wandb sync` later; online needs WANDB_API_KEY in the environment (never in a config or log)."""

    def __init__(self, run_dir: Path, run_name: str, project: str, mode: str, config: dict):
        import wandb

        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            raise ValueError("logging.wandb.mode is online but WANDB_API_KEY is not set; export it, or use mode: offline")
        self.run = wandb.init(project=project, name=run_name, dir=str(run_dir), mode=mode, config=config,
                              settings=wandb.Settings(silent=True, console="off"))

    def write(self, record: dict) -> None:
        self.run.log(flatten(record), step=int(record.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def make_loggers(logging_cfg, run_dir: Path, run_name: str, config: dict) -> list:
    """The loggers `logging.tensorboard` / `logging.wandb` ask for."""
    out: list = []
    if logging_cfg.tensorboard:
        out.append(TensorBoardLogger(run_dir / "tensorboard"))
    if logging_cfg.wandb is not None:
        w = logging_cfg.wandb
        out.append(WandbLogger(run_dir, run_name, w.project, w.mode, config))
    return out
