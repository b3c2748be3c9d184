"""Bradley–Terry reward-model training (no Ray): pairs in, a sequence-classification directory out."""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from learners.preference_data import PreferencePair
from rewards.rm.model import META_FILE, TextEncoder, bradley_terry_loss, load_backbone, rewards, save_reward_model


@dataclass(frozen=True)
class RMTrainSettings:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    center_coef: float = 0.0
    eval_every: int = 100
    max_length: int = 512
    seed: int = 0


def _columns(pairs: list[PreferencePair]):
    return ([p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs],
            torch.tensor([p.margin for p in pairs], dtype=torch.float32))


@torch.no_grad()
def pairwise_accuracy(model, enc: TextEncoder, pairs: list[PreferencePair], batch_size: int = 256) -> float:
    """Share of pairs whose chosen response scores strictly higher (a tie counts as wrong)."""
    model.eval()
    right = 0
    for i in range(0, len(pairs), batch_size):
        prompts, chosen, rejected, _ = _columns(pairs[i:i + batch_size])
        c = rewards(model, *(t.to(model.device) for t in enc.batch(prompts, chosen)))
        r = rewards(model, *(t.to(model.device) for t in enc.batch(prompts, rejected)))
        right += int((c > r).sum())
    model.train()
    return right / len(pairs)


def train_reward_model(backbone_dir: str | Path, train: list[PreferencePair], held_out: list[PreferencePair],
                       settings: RMTrainSettings,
                       on_step: Callable[[int, dict], None] | None = None) -> tuple[object, object, list[dict]]:
    """Returns (model, tokenizer, history). history has one record per step ({step, loss, reward_gap})
    and `held_out_accuracy` at step 0, every `eval_every` steps and at the last step."""
    rng = random.Random(settings.seed)
    model, tok = load_backbone(backbone_dir, settings.seed)
    model.to(device())
    enc = TextEncoder(tok, settings.max_length)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warm = max(settings.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    history = [{"step": 0, "held_out_accuracy": pairwise_accuracy(model, enc, held_out)}]
    if on_step:
        on_step(0, history[0])
    model.train()
    for step in range(1, settings.steps + 1):
        batch = rng.sample(train, min(settings.batch_size, len(train)))
        prompts, chosen, rejected, margin = _columns(batch)
        # one forward over chosen and rejected together: the same padding width and one backbone call
        ids, mask = enc.batch(prompts + prompts, chosen + rejected)
        r = rewards(model, ids.to(model.device), mask.to(model.device))
        r_c, r_r = r[: len(batch)], r[len(batch):]
        loss = bradley_terry_loss(r_c, r_r, margin.to(model.device), settings.center_coef)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        opt.step()
        sched.step()
        record = {"step": step, "loss": loss.item(), "reward_gap": (r_c - r_r).mean().item(),
                  "train_accuracy": (r_c > r_r).float().mean().item()}
        if step % settings.eval_every == 0 or step == settings.steps:
            record["held_out_accuracy"] = pairwise_accuracy(model, enc, held_out)
        history.append(record)
        if on_step:
            on_step(step, record)
    model.eval()
    return model, tok, history


@torch.no_grad()
def score_stats(model, enc: TextEncoder, pairs: list[PreferencePair], batch_size: int = 256) -> dict:
    """Mean and std of the rewards of every chosen and rejected response (for normalisation)."""
    values = []
    for i in range(0, len(pairs), batch_size):
        prompts, chosen, rejected, _ = _columns(pairs[i:i + batch_size])
        values += rewards(model, *(t.to(model.device) for t in enc.batch(prompts + prompts, chosen + rejected))).tolist()
    t = torch.tensor(values)
    return {"mean": t.mean().item(), "std": t.std().item() if len(values) > 1 else 0.0}


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def save(model, tok, out_dir: str | Path, settings: RMTrainSettings, meta: dict) -> Path:
    """The HF directory plus threefold_rm.json (settings, data counts, accuracy, score stats)."""
    out = Path(out_dir)
    save_reward_model(model.to("cpu"), tok, out)
    (out / META_FILE).write_text(json.dumps({"settings": asdict(settings), "max_length": settings.max_length,
                                             **meta}, indent=2))
    return out
