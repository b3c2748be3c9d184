"""Builds the demo's policy and data offline: a char-level tiny Llama warm-started on addition.

Cached under a directory with a recipe stamp; rebuilt only when the recipe (or its code) changes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.arith import arith_rows, split_rows, write_jsonl

CODE = ("learners/char_tokenizer.py", "learners/warm_start.py", "cluster/arith.py", "cluster/demo_assets.py")


@dataclass(frozen=True)
class Recipe:
    max_operand: int = 99
    ops: str = "+"
    held_out: int = 500
    sft_steps: int = 400
    sft_batch: int = 128
    sft_lr: float = 1e-3
    seed: int = 0
    model: dict = field(default_factory=lambda: {"hidden_size": 128, "layers": 4, "heads": 4,
                                                 "intermediate_size": 512, "max_positions": 64})

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        root = Path(__file__).resolve().parent.parent
        for name in CODE:
            h.update((root / name).read_bytes())
        return h.hexdigest()[:16]


def build(out_dir: str | Path = ".cache/demo", recipe: Recipe = Recipe(), force: bool = False) -> Path:
    """Writes <out>/model (HF format), <out>/data/{train,eval}.jsonl; returns <out>."""
    out = Path(out_dir)
    stamp = out / "recipe.json"
    digest = recipe.digest()
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        print(f"[demo-assets] up to date: {out} (recipe {digest})")
        return out
    import torch
    from tqdm import tqdm

    from learners.char_tokenizer import build_char_tokenizer
    from learners.warm_start import TinyLlamaSpec, build_tiny_llama, save_hf, supervised_warm_start

    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    train, held_out = split_rows(arith_rows(recipe.max_operand, recipe.ops, recipe.seed), recipe.held_out)
    tok = build_char_tokenizer()
    model = build_tiny_llama(TinyLlamaSpec(**recipe.model), tok, recipe.seed)
    bar = tqdm(total=recipe.sft_steps, desc="demo model warm start", dynamic_ncols=True, mininterval=1.0)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    pairs = [(r["prompt"], r["answer"]) for r in train]
    supervised_warm_start(model, tok, pairs, recipe.sft_steps, recipe.sft_batch, recipe.sft_lr, recipe.seed, on_step)
    bar.close()
    shutil.rmtree(out, ignore_errors=True)
    save_hf(model, tok, out / "model")
    write_jsonl(train, out / "data" / "train.jsonl")
    write_jsonl(held_out, out / "data" / "eval.jsonl")
    params = sum(p.numel() for p in model.parameters())
    stamp.write_text(json.dumps({"digest": digest, "recipe": asdict(recipe), "parameters": params}, indent=2))
    print(f"[demo-assets] built {out} in {time.time() - start:.0f}s ({params / 1e6:.2f}M parameters)")
    return out
