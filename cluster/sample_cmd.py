"""`threefold sample --model DIR IN.jsonl -o OUT.jsonl [--pairs]`: the policy's own samples, offline.

With --pairs each prompt yields one `{id, prompt, response_a, response_b}` row (two different
samples), exactly what `threefold judge` reads: the first step of RLAIF to a reward model
(sample → judge --pairs → rm train → train with an rm source).
"""
from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample responses from a model for JSONL prompts (judge input with --pairs)",
                       description="Sample responses from a Hugging Face causal LM (transformers, batched).")
    p.add_argument("input", help="JSONL rows with a `prompt` string (an `id` is kept; default: the line number)")
    p.add_argument("-o", "--output", required=True, help="output JSONL")
    p.add_argument("--model", required=True, help="Hugging Face model directory (e.g. a run's checkpoint/)")
    p.add_argument("--n", type=int, default=2, help="samples per prompt (default 2; --pairs needs at least 2)")
    p.add_argument("--pairs", action="store_true",
                   help="write {id, prompt, response_a, response_b}: the first two different samples of each prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest response in tokens (default 64)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per generate call (default 64)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(fn=cmd_sample)


def read_prompts(path: str) -> list[tuple[object, str]]:
    """(id, prompt) per row; a row without an `id` gets its 1-based row number."""
    from cluster.data import read_rows

    return [(row.get("id", n), row["prompt"]) for n, row in enumerate(read_rows(path), 1)]


def generate(model_dir: str, prompts: list[str], n: int, temperature: float, max_new_tokens: int,
             batch_size: int, seed: int, bar=None) -> list[list[str]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    out: list[list[str]] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        enc = tok(chunk, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [texts[j * n:(j + 1) * n] for j in range(len(chunk))]
        if bar is not None:
            bar.update(len(chunk))
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.n < (2 if args.pairs else 1):
        print(f"error: --n must be at least {2 if args.pairs else 1}", file=sys.stderr)
        return 2
    try:
        rows = read_prompts(args.input)
    except (OSError, ValueError) as e:  # DataError is a ValueError naming file:line
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tqdm(total=len(rows), desc="sample", unit="prompt", file=sys.stderr) as bar:
        samples = generate(args.model, [p for _, p in rows], args.n, args.temperature, args.max_new_tokens,
                           args.batch_size, args.seed, bar)
    written = 0
    with open(args.output, "w", encoding="utf-8") as out:
        for (rid, prompt), texts in zip(rows, samples):
            if not args.pairs:
                out.write(json.dumps({"id": rid, "prompt": prompt, "responses": texts}) + "\n")
                written += 1
                continue
            distinct = list(dict.fromkeys(texts))
            if len(distinct) >= 2:
                out.write(json.dumps({"id": rid, "prompt": prompt, "response_a": distinct[0],
                                      "response_b": distinct[1]}) + "\n")
                written += 1
    what = "pairs" if args.pairs else "rows"
    print(f"sample: {written} {what} from {len(rows)} prompts ({len(rows) - written} without two different samples); "
          f"output: {args.output}" if args.pairs else f"sample: {written} {what}; output: {args.output}", file=sys.stderr)
    return 0
