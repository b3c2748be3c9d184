"""What the code and facts demos share: a recipe digest over the recipe and the code that builds
it, and a char-level policy warm-started from scratch, saved with its data and a recipe stamp."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from cluster.arith import write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def recipe_digest(recipe, code: tuple[str, ...]) -> str:
    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    for name in code:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()[:16]


def up_to_date(out: Path, digest: str, tag: str) -> bool:
    stamp = out / "recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        print(f"[{tag}] up to date: {out} (recipe {digest})")
        return True
    return False


def warm_start_and_save(out: Path, recipe, digest: str, tag: str, pairs: list[tuple[str, str]],
                        train: list[dict], held_out: list[dict], what: str) -> Path:
    """Trains the demo architecture from scratch on (prompt, answer) `pairs`, then writes <out>/model,
    <out>/data/{train,eval}.jsonl and <out>/recipe.json (`train_<what>`, `held_out_<what>` counts)."""
    import torch
    from tqdm import tqdm

    from learners.char_tokenizer import build_char_tokenizer
    from learners.warm_start import TinyLlamaSpec, build_tiny_llama, save_hf, supervised_warm_start

    torch.set_num_threads(1)  # the model is tiny; a second thread slows it ~10x when another job holds a core
    start = time.time()
    tok = build_char_tokenizer()
    model = build_tiny_llama(TinyLlamaSpec(**recipe.model), tok, recipe.seed)
    bar = tqdm(total=recipe.sft_steps, desc=f"{tag} warm start", dynamic_ncols=True, mininterval=1.0)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    supervised_warm_start(model, tok, pairs, recipe.sft_steps, recipe.sft_batch, recipe.sft_lr, recipe.seed, on_step)
    bar.close()
    shutil.rmtree(out, ignore_errors=True)
    save_hf(model, tok, out / "model")
    write_jsonl(train, out / "data" / "train.jsonl")
    write_jsonl(held_out, out / "data" / "eval.jsonl")
    params = sum(p.numel() for p in model.parameters())
    (out / "recipe.json").write_text(json.dumps({"digest": digest, "recipe": asdict(recipe), "parameters": params,
                                                 f"train_{what}": len(train), f"held_out_{what}": len(held_out)}, indent=2))
    print(f"[{tag}] built {out} in {time.time() - start:.0f}s ({params / 1e6:.2f}M parameters, "
          f"{len(train)} train / {len(held_out)} held-out {what})")
    return out
