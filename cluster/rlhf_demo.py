"""The RLHF demo's simulated people: annotators who like round numbers, asked about pairs of the
warm-start policy's own samples.

The hidden (noise-free) preference: an answer ending in 0 is rounder than one ending in 5, which is
rounder than any other; two equally round answers are not compared. Like real annotators, they
make mistakes: a share of labels (10% by default) is flipped. The reward model only ever sees
these noisy labels; the hidden utility is the gold metric of the RL run, never its reward.
It is a preference about the form of the answer, not its correctness: the demo shows RLHF
teaching the policy what its annotators like, and the report says what that did to accuracy.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.arith import write_jsonl


def round_number_utility(prompt: str, response: str, row: dict | None = None) -> float:
    """1 for an answer ending in 0, 0.5 for one ending in 5, 0 otherwise (or for a non-number)."""
    text = response.strip()
    if not text.isdigit():
        return 0.0
    return {"0": 1.0, "5": 0.5}.get(text[-1], 0.0)


def annotate(prompt: str, a: str, b: str, flip: float, rng: random.Random) -> tuple[str, str] | None:
    """(chosen, rejected) by the hidden preference with `flip` label noise; None for a tie."""
    ua, ub = round_number_utility(prompt, a), round_number_utility(prompt, b)
    if ua == ub:
        return None
    chosen, rejected = (a, b) if ua > ub else (b, a)
    return (rejected, chosen) if rng.random() < flip else (chosen, rejected)


@dataclass(frozen=True)
class PrefRecipe:
    train_prompts: int = 4000
    samples_per_prompt: int = 8
    flip: float = 0.1
    seed: int = 0

    def digest(self, model_dir: Path) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        h.update((model_dir / "model.safetensors").read_bytes())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()[:16]


def sample_responses(model_dir: Path, prompts: list[str], k: int, seed: int, bar=None) -> list[list[str]]:
    """k samples (temperature 1, ≤4 new tokens, as the RL demo samples) per prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    out = []
    for i in range(0, len(prompts), 64):
        chunk = prompts[i:i + 64]
        enc = tok(chunk, return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=True, temperature=1.0, max_new_tokens=4, num_return_sequences=k,
                                 pad_token_id=tok.pad_token_id, top_k=0, top_p=1.0)
        texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [texts[j * k:(j + 1) * k] for j in range(len(chunk))]
        if bar is not None:
            bar.update(len(chunk))
    return out


def pairs_from(prompts: list[str], samples: list[list[str]], flip: float, rng: random.Random) -> list[dict]:
    rows = []
    for prompt, texts in zip(prompts, samples):
        for a, b in zip(texts[0::2], texts[1::2]):
            label = annotate(prompt, a, b, flip, rng)
            if label:
                rows.append({"prompt": prompt, "chosen": label[0], "rejected": label[1]})
    return rows


def build_preferences(demo_dir: Path, recipe: PrefRecipe = PrefRecipe(), force: bool = False) -> Path:
    """<demo>/rlhf/{train,eval}.jsonl preference pairs (train labels noisy, held-out labels clean, from
    held-out prompts) and the hybrid demo's mixed data; cached by recipe and policy weights."""
    from tqdm import tqdm

    demo_dir = Path(demo_dir)
    out, model_dir = demo_dir / "rlhf", demo_dir / "model"
    stamp, digest = out / "recipe.json", recipe.digest(model_dir)
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        print(f"[demo-assets] up to date: {out} (recipe {digest})")
        return out
    start = time.time()
    train = [json.loads(x) for x in (demo_dir / "data/train.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (demo_dir / "data/eval.jsonl").read_text().splitlines()]
    prompts = [r["prompt"] for r in train[:recipe.train_prompts]]
    held_prompts = [r["prompt"] for r in held]
    with tqdm(total=len(prompts) + len(held_prompts), desc="annotated pairs", unit="prompt",
              dynamic_ncols=True, mininterval=1.0) as bar:
        samples = sample_responses(model_dir, prompts + held_prompts, recipe.samples_per_prompt, recipe.seed, bar)
    rng = random.Random(recipe.seed)
    train_pairs = pairs_from(prompts, samples[:len(prompts)], recipe.flip, rng)
    eval_pairs = pairs_from(held_prompts, samples[len(prompts):], 0.0, rng)
    write_jsonl(train_pairs, out / "train.jsonl")
    write_jsonl(eval_pairs, out / "eval.jsonl")
    # hybrid demo: alternate rows are exact sums (verifier) and "style" rows (reward model)
    for name, rows in (("hybrid_train", train), ("hybrid_eval", held)):
        write_jsonl([{**r, "kind": "math" if i % 2 == 0 else "style"} for i, r in enumerate(rows)],
                    out / f"{name}.jsonl")
    stamp.write_text(json.dumps({"digest": digest, "recipe": asdict(recipe), "train_pairs": len(train_pairs),
                                 "eval_pairs": len(eval_pairs)}, indent=2))
    print(f"[demo-assets] built {out} in {time.time() - start:.0f}s: {len(train_pairs)} annotated pairs "
          f"({recipe.flip:.0%} of labels flipped), {len(eval_pairs)} clean held-out pairs")
    return out
