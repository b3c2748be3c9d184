"""Config of `threefold rm train`: a Bradley–Terry reward model from preference pairs."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cluster.config import PolicyConfig, Section


class RMDataConfig(Section):
    train_path: Path
    """Preference pairs, JSONL or Parquet: prompt, chosen, rejected, optional margin (`threefold judge --pairs` output loads as is)."""
    eval_path: Path | None = None
    """Held-out pairs for pairwise accuracy; None: hold out `eval_fraction` of train_path instead."""
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of train_path held out when eval_path is None."""
    on_bad_row: Literal["error", "skip"] = "error"
    """A malformed row fails the load naming its line/row and field (`error`), or is skipped and counted (`skip`)."""

    @field_validator("train_path", "eval_path")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"preference file {str(v)!r} does not exist")
        return v


class RMTrainConfig(Section):
    steps: int = Field(1000, ge=1)
    """Optimizer steps."""
    batch_size: int = Field(64, ge=1)
    """Pairs per step."""
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW decoupled weight decay."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient-norm clip."""
    warmup_steps: int = Field(0, ge=0)
    """Linear learning-rate warm-up, in steps."""
    center_coef: float = Field(0.0, ge=0.0)
    """Reward centering: adds center_coef · mean((r_chosen + r_rejected)²) to keep rewards near 0 (0.01 is typical; 0 = off)."""
    eval_every: int = Field(100, ge=1)
    """Held-out pairwise accuracy every K steps (and at step 0 and the end)."""
    max_length: int = Field(512, ge=4)
    """Longest prompt + response in tokens; longer texts keep their end (the head reads the last token)."""
    seed: int = 0
    """Seeds the head, the pair order and the held-out split."""
    threads: int = Field(0, ge=0)
    """torch threads (0 = torch's default)."""


class RMOutputConfig(Section):
    output_dir: Path = Path("runs")
    """The model goes to <output_dir>/<run_name>/model (a Hugging Face sequence-classification directory), with report.md, report.png and history.jsonl beside it."""
    run_name: str | None = None
    """Defaults to the config file name."""
    progress: bool = True
    """Show a progress bar on stderr."""


class RewardModelConfig(Section):
    backbone: PolicyConfig
    """Any Hugging Face causal-LM directory (`backbone.model_dir`); a scalar head is put on its last non-pad token."""
    data: RMDataConfig
    train: RMTrainConfig = RMTrainConfig()
    output: RMOutputConfig = RMOutputConfig()

    @model_validator(mode="after")
    def _eval_source(self) -> "RewardModelConfig":
        if self.data.eval_path is not None and "eval_fraction" in self.data.model_fields_set:
            raise ValueError("set data.eval_path or data.eval_fraction, not both")
        return self
