"""The RLAIF demo's judges, built offline: small char-level models that, shown an addition prompt
and two framed answers, reason before the verdict. Each writes its own answer, then each response's
answer with whether it matches, then the verdict in the project's format:

    12+34=      <- the question first      46                 <- its own answer
    <<<                                    46 yes             <- response A, and whether it matches
    46          <- response A              35 no              <- response B
    >>>                                    Verdict: [[A]]
    <<<
    35          <- response B
    >>>

Measured on this architecture: a judge trained to give the verdict directly stays at chance, and
so does one that writes only its own answer before the verdict; the per-response match lines are
what makes the comparison learnable. Its accuracy is bounded by its own arithmetic, so it is useful
but clearly imperfect. Recipe in JudgeRecipe; calibration numbers in the README's RLAIF section.
"""
from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.arith import write_jsonl
from cluster.demo_build import recipe_digest

PAIRWISE_TEMPLATE = "{prompt}\n{response_a}\n{response_b}\n"  # what configs/judges-demo.yaml says too
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"  # no chat format
MAX_LEN = 128  # the judge's context: prompt ~30 characters + reply ~35
CODE = ("cluster/judge_demo.py", "rewards/judge/guard.py", "rewards/judge/parse.py", "learners/warm_start.py")


def near_miss(total: int, rng: random.Random) -> str:
    """A wrong answer of the kinds a half-trained policy gives: off by a little, off by ten, a
    wrong digit, or anything."""
    while True:
        kind = rng.random()
        if kind < 0.3:
            wrong = total + rng.choice([-2, -1, 1, 2])
        elif kind < 0.55:
            wrong = total + rng.choice([-10, 10, -11, 11, -9, 9])
        elif kind < 0.8:
            digits = list(str(total))
            digits[rng.randrange(len(digits))] = str(rng.randrange(10))
            wrong = int("".join(digits))
        else:
            wrong = rng.randrange(0, 199)
        if wrong != total and wrong >= 0:
            return str(wrong)


def true_sum(prompt: str) -> int:
    return sum(int(x) for x in prompt.rstrip("=").split("+"))


def gold_pair(prompt: str, rng: random.Random) -> tuple[str, str, str]:
    """(response A, response B, gold verdict): 40% A right, 40% B right, 15% both wrong, 5% both
    right; gold is the right one, or tie when both are equally right."""
    total, roll = true_sum(prompt), rng.random()
    right = str(total)
    if roll < 0.4:
        return right, near_miss(total, rng), "A"
    if roll < 0.8:
        return near_miss(total, rng), right, "B"
    if roll < 0.95:
        return near_miss(total, rng), near_miss(total, rng), "tie"
    return right, right, "tie"


def judge_prompt(prompt: str, response_a: str, response_b: str) -> str:
    """Exactly what the judge sees over the API with PAIRWISE_TEMPLATE (responses framed and defused)."""
    from rewards.judge.parse import pairwise_messages

    return pairwise_messages(PAIRWISE_TEMPLATE, None, prompt, response_a, response_b)[0]["content"]


def reply(own: str, response_a: str, response_b: str, verdict: str) -> str:
    mark = lambda r: "yes" if r == own else "no"  # noqa: E731
    return f"{own}\n{response_a} {mark(response_a)}\n{response_b} {mark(response_b)}\nVerdict: [[{verdict}]]"


def training_example(prompt: str, rng: random.Random, noise: float) -> tuple[str, str]:
    """(judge prompt, target reply); with `noise`, that share of verdicts is a random one."""
    ra, rb, gold = gold_pair(prompt, rng)
    shown = rng.choice(["A", "B", "tie"]) if rng.random() < noise else gold
    return judge_prompt(prompt, ra, rb), reply(str(true_sum(prompt)), ra, rb, shown)


@dataclass(frozen=True)
class JudgeRecipe:
    """A shared trunk (`trunk_steps` from the demo policy in the judge format), then one branch per
    judge: `steps` more with its own seed and label noise, so the judges' mistakes differ."""
    trunk_steps: int = 1800
    batch: int = 128
    lr: float = 1e-3
    seed: int = 1
    judges: tuple = (("judge-a", 2, 120, 0.0), ("judge-b", 3, 120, 0.05), ("judge-c", 4, 120, 0.1))  # name, seed, steps, noise


EVAL_PAIRS = 500


def train_steps(model, tok, prompts: list[str], steps: int, batch: int, lr: float, seed: int, noise: float,
                tick=None) -> None:
    """Cross-entropy on the reply only, a fresh batch of synthetic pairs every step."""
    import torch

    from learners.warm_start import encode_pairs

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        ids, lab, mask = encode_pairs(tok, [training_example(rng.choice(prompts), rng, noise) for _ in range(batch)])
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if tick:
            tick(loss.item())
    model.eval()


def greedy_replies(model, tok, prompts: list[str], max_new_tokens: int = 40, batch: int = 250) -> list[str]:
    """What the judge writes for each prompt (greedy, as it is served with temperature 0)."""
    import torch

    tok.padding_side = "left"
    out = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def offline_votes(model, tok, pairs: list[dict]) -> list[str]:
    """The judge's vote on each pair under the project's rules (both orders, strict parsing, the
    swap rule), with greedy decoding in-process: A, B, tie or abstain."""
    from rewards.judge.parse import parse_verdict
    from rewards.judge.vote import OrderVerdict, pair_vote

    texts = [judge_prompt(p["prompt"], p["a"], p["b"]) for p in pairs]
    texts += [judge_prompt(p["prompt"], p["b"], p["a"]) for p in pairs]
    replies = greedy_replies(model, tok, texts)
    return [pair_vote("j", 1.0, OrderVerdict(parse_verdict(ab).value), OrderVerdict(parse_verdict(ba).value)).winner
            for ab, ba in zip(replies[:len(pairs)], replies[len(pairs):])]


def eval_pairs(held_out: list[dict], n: int = EVAL_PAIRS, seed: int = 7) -> list[dict]:
    """`n` gold-labelled pairs on held-out prompts (never seen by the judges' training)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = held_out[i % len(held_out)]["prompt"]
        a, b, gold = gold_pair(prompt, rng)
        out.append({"id": i, "prompt": prompt, "a": a, "b": b, "gold": gold})
    return out


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="float32")
    model.config.max_position_embeddings = MAX_LEN  # RoPE: no learned positions to grow
    return model, AutoTokenizer.from_pretrained(str(path))


def build_judges(demo_dir: str | Path = ".cache/demo", recipe: JudgeRecipe = JudgeRecipe(), force: bool = False) -> Path:
    """<demo>/judges/<name>/ (HF model + chat template) per judge, eval_pairs.jsonl (gold-labelled
    held-out pairs) and agreement.json (each judge's and the ensemble's agreement with gold)."""
    import torch
    from tqdm import tqdm

    from learners.warm_start import save_hf

    demo = Path(demo_dir)
    root = demo / "judges"
    policy_stamp = json.loads((demo / "recipe.json").read_text()).get("digest", "")
    digest = f"{recipe_digest(recipe, CODE)}-{policy_stamp}"  # and the policy it starts from
    pairs = eval_pairs([json.loads(x) for x in (demo / "data" / "eval.jsonl").read_text().splitlines()])
    stamp = root / "recipe.json"
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        print(f"[demo-assets] judges up to date: {root} (recipe {digest})")
        return root
    start = time.time()
    torch.set_num_threads(2)
    shutil.rmtree(root, ignore_errors=True)
    prompts = [json.loads(x)["prompt"] for x in (demo / "data" / "train.jsonl").read_text().splitlines()]
    total = recipe.trunk_steps + sum(j[2] for j in recipe.judges)
    bar = tqdm(total=total, desc="demo judges", dynamic_ncols=True, mininterval=1.0)

    def tick(name):
        return lambda loss: (bar.update(1), bar.set_postfix(judge=name, loss=f"{loss:.3f}"))

    model, tok = _load(demo / "model")
    train_steps(model, tok, prompts, recipe.trunk_steps, recipe.batch, recipe.lr, recipe.seed, 0.0, tick("trunk"))
    save_hf(model, tok, root / "trunk")
    tok.chat_template = CHAT_TEMPLATE  # what vLLM's chat endpoint renders: <s> and the prompt, nothing else
    for name, seed, steps, noise in recipe.judges:
        model, _ = _load(root / "trunk")
        train_steps(model, tok, prompts, steps, recipe.batch, recipe.lr, seed, noise, tick(name))
        save_hf(model, tok, root / name)
        (root / name / "votes.json").write_text(json.dumps(offline_votes(model, tok, pairs)))
    bar.close()
    write_jsonl(pairs, root / "eval_pairs.jsonl")
    report = ensemble_agreement(root, [j[0] for j in recipe.judges], pairs)
    stamp.write_text(json.dumps({"digest": digest, "recipe": asdict(recipe), "seconds": round(time.time() - start),
                                 **report}, indent=2))
    return root


def ensemble_agreement(root: Path, names: list[str], pairs: list[dict], voting: str = "majority") -> dict:
    """Each judge's and the ensemble's agreement with the gold label on the held-out pairs (an
    abstention, or a tie on a decided pair, counts as wrong), from the votes given at build time."""
    from rewards.judge.vote import Vote, combine

    votes = {n: json.loads((root / n / "votes.json").read_text()) for n in names}
    hits = lambda got: sum(v == p["gold"] for v, p in zip(got, pairs)) / len(pairs)  # noqa: E731
    together = [combine([Vote(n, 1.0, votes[n][i]) for n in names], voting)[0] for i in range(len(pairs))]
    report = {"pairs": len(pairs), "voting": voting, "judges": {n: hits(v) for n, v in votes.items()},
              "ensemble": hits(together)}
    for n, acc in report["judges"].items():
        print(f"[demo-assets] {n}: agreement with gold on {len(pairs)} held-out pairs {acc:.1%}")
    print(f"[demo-assets] ensemble ({voting} of {len(names)}): {report['ensemble']:.1%}, "
          f"best single judge {max(report['judges'].values()):.1%}")
    return report


def build_rlaif_data(demo_dir: str | Path = ".cache/demo") -> Path:
    """<demo>/rlaif/train.jsonl: the training rows, each with a `reference` (the warm-start policy's
    own greedy answer) that samples are judged against (configs/rlaif-arith.yaml)."""
    demo = Path(demo_dir)
    out, stamp = demo / "rlaif" / "train.jsonl", demo / "rlaif" / "recipe.json"
    digest = json.loads((demo / "recipe.json").read_text()).get("digest", "")
    if out.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest:
        return out
    rows = [json.loads(x) for x in (demo / "data" / "train.jsonl").read_text().splitlines()]
    model, tok = _load(demo / "model")
    refs = [r.strip() for r in greedy_replies(model.eval(), tok, [r["prompt"] for r in rows], 4)]
    write_jsonl([{**r, "reference": ref} for r, ref in zip(rows, refs)], out)
    right = sum(ref == r["answer"] for r, ref in zip(rows, refs)) / len(rows)
    stamp.write_text(json.dumps({"digest": digest, "reference_accuracy": right}))
    print(f"[demo-assets] RLAIF references: {len(rows)} rows, the warm-start policy's greedy answers "
          f"({right:.1%} right): {out}")
    return out
