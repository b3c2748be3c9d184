"""The RLAIF demo's judges, built offline: small char-level models that, shown an addition prompt
and two framed answers, reason before the verdict. Each writes its own answer, then each response's
answer with whether it matches, then the verdict in the project's format:

    12+34=      <- the question first      046                <- its own answer
    <<<                                    046 yes            <- response A, and whether it matches
    46          <- response A              035 no             <- response B
    >>>                                    Verdict: [[A]]
    <<<
    35          <- response B
    >>>

Numbers in the reply are written with three digits, so that digits line up by place.

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
VOTING = ("mean_prob", 0.1)  # voting and tie_band of configs/judges-demo.yaml: the build reports under them
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


def padded(text: str) -> str:
    """A number of up to three digits written with three ("46" -> "046"), anything else as it is:
    digits that line up by place make the sum and the comparison much easier to learn (with the same
    steps the judges' own sums went from about 65% to about 90% right)."""
    return text.rjust(3, "0") if text.isdigit() and len(text) <= 3 else text


def reply(own: str, response_a: str, response_b: str, verdict: str) -> str:
    a, b, own = padded(response_a.strip()), padded(response_b.strip()), padded(own)
    return f"{own}\n{a} {'yes' if a == own else 'no'}\n{b} {'yes' if b == own else 'no'}\nVerdict: [[{verdict}]]"


def policy_pair(prompt: str, answers: list[str], rng: random.Random) -> tuple[str, str, str] | None:
    """Two different answers the warm-start policy gave to `prompt` and the gold verdict: what the
    judges are shown during RLAIF (a sample and the greedy reference). None when it always said the same."""
    if len(set(answers)) < 2:
        return None
    ra = rng.choice(answers)
    rb = rng.choice([x for x in answers if x != ra])
    right = str(true_sum(prompt))
    a_ok, b_ok = ra.strip() == right, rb.strip() == right
    return ra, rb, "A" if a_ok and not b_ok else "B" if b_ok and not a_ok else "tie"


def training_example(prompt: str, rng: random.Random, noise: float, answers: dict | None = None,
                     on_policy: float = 0.0) -> tuple[str, str]:
    """(judge prompt, target reply): a synthetic pair, or with probability `on_policy` two of the
    policy's own `answers`; with `noise`, that share of verdicts is a random one."""
    pair = policy_pair(prompt, answers[prompt], rng) if answers and prompt in answers and rng.random() < on_policy else None
    ra, rb, gold = pair or gold_pair(prompt, rng)
    shown = rng.choice(["A", "B", "tie"]) if rng.random() < noise else gold
    return judge_prompt(prompt, ra, rb), reply(str(true_sum(prompt)), ra, rb, shown)


def policy_answers(model, tok, prompts: list[str], samples: int, seed: int, batch: int = 500) -> dict[str, list[str]]:
    """`samples` answers per prompt from the warm-start policy at temperature 1, plus its greedy one."""
    import torch

    torch.manual_seed(seed)
    tok.padding_side = "left"
    out = {p: [g.strip()] for p, g in zip(prompts, greedy_replies(model.eval(), tok, prompts, 4, batch))}
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=4, do_sample=True, temperature=1.0, top_k=0,
                                 num_return_sequences=samples, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, text in enumerate(texts):
            out[prompts[i + j // samples]].append(text)
    return out


@dataclass(frozen=True)
class JudgeRecipe:
    """A shared trunk (`trunk_steps` from the demo policy in the judge format, constant `lr`), then
    one branch per judge that carries on from the trunk's weights and optimizer state with its own
    seed and label noise while the learning rate decays linearly to `lr * decay_to`: the decay is
    where most of the final accuracy comes from, and the branches' different data make their
    mistakes differ."""
    trunk_steps: int = 1100
    batch: int = 128
    lr: float = 1e-3
    decay_to: float = 0.03
    on_policy: float = 0.5  # share of training pairs made of the warm-start policy's own answers
    policy_samples: int = 4
    seed: int = 1
    judges: tuple = (("judge-a", 2, 120, 0.0), ("judge-b", 3, 120, 0.05), ("judge-c", 4, 120, 0.1))  # name, seed, steps, noise


EVAL_PAIRS = 500
WIDTH = 8  # batches are padded to a multiple of this, so the compiled step sees one or two shapes


class JudgeTrainer:
    """Cross-entropy on the reply only, a fresh batch of synthetic pairs every step. The step is
    compiled (torch.compile; about 1.5x faster than eager for this model on a CPU) when it can be."""

    def __init__(self, model, tok, prompts: list[str], batch: int, answers: dict | None = None, on_policy: float = 0.0):
        import torch

        self.model, self.tok, self.prompts, self.batch = model, tok, prompts, batch
        self.answers, self.on_policy = answers, on_policy
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        self.forward = model
        try:
            self.forward = torch.compile(model, dynamic=False)
        except Exception as e:  # noqa: BLE001 - no compiler backend here: eager is only slower
            print(f"[demo-assets] torch.compile unavailable ({type(e).__name__}); training the judges eagerly")

    def state(self) -> tuple[dict, dict]:
        import copy

        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict())

    def restore(self, state: tuple[dict, dict]) -> None:
        self.model.load_state_dict(state[0])
        self.opt.load_state_dict(state[1])

    def _loss(self, ids, lab):
        try:
            return self.forward(input_ids=ids, labels=lab).loss
        except Exception as e:  # noqa: BLE001 - a compile failure shows on the first call
            if self.forward is self.model:
                raise
            print(f"[demo-assets] compiled step failed ({type(e).__name__}: {str(e)[:200]}); training eagerly")
            self.forward = self.model
            return self.model(input_ids=ids, labels=lab).loss

    def train(self, steps: int, seed: int, noise: float, lr: float, lr_end: float | None = None, tick=None) -> None:
        """`steps` updates; the learning rate goes linearly from `lr` to `lr_end` (constant without it)."""
        import torch

        from learners.warm_start import encode_pairs

        rng = random.Random(seed)
        torch.manual_seed(seed)
        self.model.train()
        for i in range(steps):
            rate = lr if lr_end is None else lr + (lr_end - lr) * i / max(1, steps - 1)
            for group in self.opt.param_groups:
                group["lr"] = rate
            batch = [training_example(rng.choice(self.prompts), rng, noise, self.answers, self.on_policy)
                     for _ in range(self.batch)]
            ids, lab, _ = encode_pairs(self.tok, batch)
            pad = -ids.shape[1] % WIDTH
            # right padding and causal attention: no mask needed, real tokens never see the pads
            ids = torch.nn.functional.pad(ids, (0, pad), value=self.tok.pad_token_id)
            lab = torch.nn.functional.pad(lab, (0, pad), value=-100)
            loss = self._loss(ids, lab)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            if tick:
                tick(loss.item())
        self.model.eval()


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


def judged_replies(model, tok, prompts: list[str], max_new_tokens: int = 40, batch: int = 250) -> list[tuple]:
    """(greedy reply, P(first)) per prompt: P(first) at the verdict letter after the reply's last
    "Verdict: [[", from the same token log-probs a served judge returns (rewards.judge.parse.p_first,
    with A and B as the alternatives); None without one."""
    import torch

    from rewards.judge.parse import p_first

    tok.padding_side = "left"
    a_id, b_id = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
    out = []
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        seqs = gen.sequences[:, enc["input_ids"].shape[1]:]
        logp = torch.stack(gen.scores, 1).float().log_softmax(-1)  # batch × step × vocab
        chosen, lp_a, lp_b = logp.gather(2, seqs.unsqueeze(-1)).squeeze(-1).tolist(), logp[..., a_id].tolist(), \
            logp[..., b_id].tolist()
        for j, ids in enumerate(seqs.tolist()):
            tokens = [(tok.decode([t], skip_special_tokens=True), chosen[j][k], (("A", lp_a[j][k]), ("B", lp_b[j][k])))
                      for k, t in enumerate(ids)]
            text = "".join(t[0] for t in tokens)
            mark = text.rfind("Verdict: [[")
            out.append((text, p_first(text, tokens, mark + len("Verdict: [[") if mark >= 0 else -1)))
    return out


def offline_votes(model, tok, pairs: list[dict]) -> list[dict]:
    """The judge's vote on each pair under the project's rules (both orders, strict parsing, the
    swap rule), with greedy decoding in-process: {"winner": A, B, tie or abstain, "p_a": P(A) or None}."""
    from rewards.judge.parse import parse_verdict
    from rewards.judge.vote import OrderVerdict, pair_vote

    texts = [judge_prompt(p["prompt"], p["a"], p["b"]) for p in pairs]
    texts += [judge_prompt(p["prompt"], p["b"], p["a"]) for p in pairs]
    got = [OrderVerdict(parse_verdict(text).value, p) for text, p in judged_replies(model, tok, texts)]
    votes = [pair_vote("j", 1.0, ab, ba) for ab, ba in zip(got[:len(pairs)], got[len(pairs):])]
    return [{"winner": v.winner, "p_a": v.p_a} for v in votes]


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
    answers = policy_answers(model, tok, prompts, recipe.policy_samples, recipe.seed) if recipe.on_policy else None
    model.train()
    trainer = JudgeTrainer(model, tok, prompts, recipe.batch, answers, recipe.on_policy)
    trainer.train(recipe.trunk_steps, recipe.seed, 0.0, recipe.lr, tick=tick("trunk"))
    trunk = trainer.state()
    tok.chat_template = CHAT_TEMPLATE  # what vLLM's chat endpoint renders: <s> and the prompt, nothing else
    for name, seed, steps, noise in recipe.judges:
        trainer.restore(trunk)
        trainer.train(steps, seed, noise, recipe.lr, recipe.lr * recipe.decay_to, tick(name))
        save_hf(model, tok, root / name)
        (root / name / "votes.json").write_text(json.dumps(offline_votes(model, tok, pairs)))
    bar.close()
    write_jsonl(pairs, root / "eval_pairs.jsonl")
    report = ensemble_agreement(root, [j[0] for j in recipe.judges], pairs)
    stamp.write_text(json.dumps({"digest": digest, "recipe": asdict(recipe), "seconds": round(time.time() - start),
                                 **report}, indent=2))
    return root


def ensemble_agreement(root: Path, names: list[str], pairs: list[dict], voting: tuple = VOTING) -> dict:
    """Each judge's and the ensemble's agreement with the gold label on the held-out pairs (an
    abstention, or a tie on a decided pair, counts as wrong), from the votes given at build time:
    under `voting` (rule, tie band), as the run combines them, each judge alone under the same rule,
    and by majority."""
    from rewards.judge.vote import Vote, combine

    votes = {n: [Vote(n, 1.0, v["winner"], v["p_a"]) for v in json.loads((root / n / "votes.json").read_text())]
             for n in names}
    hits = lambda got: sum(v == p["gold"] for v, p in zip(got, pairs)) / len(pairs)  # noqa: E731

    def under(rule: str, band: float) -> dict:
        alone = {n: hits([combine([v], rule, band)[0] for v in vs]) for n, vs in votes.items()}
        together = hits([combine([votes[n][i] for n in names], rule, band)[0] for i in range(len(pairs))])
        return {"judges": alone, "ensemble": together}

    rule, band = voting
    report = {"pairs": len(pairs), "voting": rule, "tie_band": band, **under(rule, band),
              "majority": under("majority", 0.0)}
    for n, acc in report["judges"].items():
        print(f"[demo-assets] {n}: agreement with gold on {len(pairs)} held-out pairs {acc:.1%} "
              f"({rule}, tie band {band}; its plain verdict {report['majority']['judges'][n]:.1%})")
    for name, r in (((f"{rule}, tie band {band}, as the run votes"), report), ("majority", report["majority"])):
        print(f"[demo-assets] ensemble of {len(names)} ({name}): {r['ensemble']:.1%}, "
              f"best single judge {max(r['judges'].values()):.1%}")
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
