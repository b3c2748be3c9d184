"""`threefold rm train CONFIG` and `threefold rm score IN.jsonl -o OUT.jsonl --model DIR`."""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from cluster.config_loader import ConfigError


def register(sub) -> None:
    rm = sub.add_parser("rm", help="train a Bradley–Terry reward model, or score JSONL with one",
                        description="Reward models for RLHF: `rm train CONFIG` fits one on preference pairs; "
                                    "`rm score` scores (prompt, response) rows offline.")
    cmds = rm.add_subparsers(dest="rm_command", required=True)
    t = cmds.add_parser("train", help="train a reward model from preference pairs (see configs/rlhf-rm.yaml)")
    t.add_argument("config", help="reward-model config YAML (the README's reward-model reference)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=200 (repeatable)")
    t.set_defaults(fn=cmd_train)
    s = cmds.add_parser("score", help="score JSONL rows {prompt, response} with a trained reward model")
    s.add_argument("input", help="JSONL rows with `prompt` and `response` strings (other fields are kept)")
    s.add_argument("-o", "--output", required=True, help="output JSONL: each input row plus `reward` and `status`")
    s.add_argument("--model", help="reward-model directory (what `rm train` wrote: RUN/model)")
    s.add_argument("--url", help="instead of --model: a Serve rm app, e.g. http://HOST:8000/rm (threefold serve "
                                 "deploy/serve.yaml); a batch whose request fails gets status error")
    s.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    s.add_argument("--normalize", action="store_true",
                   help="also write `reward_z`: the reward standardised with the training pairs' mean and std")
    s.set_defaults(fn=cmd_score)


def _split(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    k = max(1, round(len(pairs) * fraction))
    return [pairs[i] for i in order[k:]], [pairs[i] for i in order[:k]]


def cmd_train(args: argparse.Namespace) -> int:
    from cluster.cli import parse_overrides
    from cluster.config_loader import load_config
    from cluster.rm_config import RewardModelConfig
    from learners.preference_data import PreferenceDataError, load_pairs

    try:
        cfg = load_config(args.config, parse_overrides(args.set), RewardModelConfig)
        train = load_pairs(cfg.data.train_path, cfg.data.on_bad_row)
        held = load_pairs(cfg.data.eval_path, cfg.data.on_bad_row) if cfg.data.eval_path else None
    except (ConfigError, PreferenceDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(cfg.output.output_dir) / (cfg.output.run_name or Path(args.config).stem)
    summary = train_and_report(cfg, train, held, out)
    print(f"reward model: held-out pairwise accuracy {summary['accuracy_start']:.1%} → {summary['accuracy_end']:.1%}"
          f" on {summary['held_out_pairs']} pairs; model: {summary['model_dir']}; report: {summary['report']}")
    return 0


def train_and_report(cfg, train, held, out: Path) -> dict:
    import torch
    from tqdm import tqdm

    from learners.reward_model import RMTrainSettings, save, score_stats, train_reward_model
    from rewards.rm.model import TextEncoder

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    skipped = train.skipped + (held.skipped if held else 0)
    if skipped:
        print(f"warning: skipped {skipped} bad preference rows (first: {train.first_problem or held.first_problem})",
              file=sys.stderr)
    train_pairs, held_pairs = ((train.pairs, held.pairs) if held else
                               _split(train.pairs, cfg.data.eval_fraction, cfg.train.seed))
    settings = RMTrainSettings(**{k: v for k, v in cfg.train.model_dump().items() if k != "threads"})
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=settings.steps, desc="reward model", disable=not cfg.output.progress, dynamic_ncols=True,
               mininterval=1.0)
    acc = [None]

    def on_step(step: int, rec: dict) -> None:
        acc[0] = rec.get("held_out_accuracy", acc[0])
        if step:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", heldout=f"{acc[0]:.1%}")

    model, tok, history = train_reward_model(cfg.backbone.model_dir, train_pairs, held_pairs, settings, on_step)
    bar.close()
    evals = [h for h in history if "held_out_accuracy" in h]
    stats = score_stats(model, TextEncoder(tok, settings.max_length), train_pairs[:4096])
    meta = {"train_pairs": len(train_pairs), "held_out_pairs": len(held_pairs), "skipped_rows": skipped,
            "held_out_accuracy": evals[-1]["held_out_accuracy"], "score_mean": stats["mean"], "score_std": stats["std"],
            "backbone": str(cfg.backbone.model_dir)}
    model_dir = save(model, tok, out / "model", settings, meta)
    with open(out / "history.jsonl", "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
    report = write_rm_report(out, history, meta, time.time() - start)
    return {"accuracy_start": evals[0]["held_out_accuracy"], "accuracy_end": evals[-1]["held_out_accuracy"],
            "held_out_pairs": len(held_pairs), "model_dir": str(model_dir), "report": str(report)}


def write_rm_report(out: Path, history: list[dict], meta: dict, wall_s: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h for h in history if "loss" in h]
    evals = [h for h in history if "held_out_accuracy" in h]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    window = max(1, len(steps) // 50)
    smooth = [sum(h["loss"] for h in steps[max(0, i - window + 1):i + 1]) / min(window, i + 1) for i in range(len(steps))]
    ax.plot([h["step"] for h in steps], smooth, color="tab:blue", label=f"training loss (mean of {window})")
    ax.set_xlabel("step")
    ax.set_ylabel("Bradley–Terry loss")
    ax2 = ax.twinx()
    ax2.plot([h["step"] for h in evals], [h["held_out_accuracy"] for h in evals], "o-", color="tab:red",
             label="held-out pairwise accuracy")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("pairwise accuracy")
    fig.legend(loc="lower left", bbox_to_anchor=(0.1, 0.12))
    ax.set_title("threefold reward model")
    fig.tight_layout()
    fig.savefig(out / "report.png")
    plt.close(fig)
    lines = [f"# threefold reward model {out.name}", "",
             f"- {meta['train_pairs']} training pairs, {meta['held_out_pairs']} held out, {meta['skipped_rows']} bad rows skipped",
             f"- held-out pairwise accuracy: {evals[0]['held_out_accuracy']:.1%} at step 0 → "
             f"{evals[-1]['held_out_accuracy']:.1%} at step {evals[-1]['step']}",
             f"- reward on training responses: mean {meta['score_mean']:.3f}, std {meta['score_std']:.3f}",
             f"- wall time: {wall_s / 60:.1f} min", "", "![loss and accuracy](report.png)", "",
             "| step | held-out accuracy |", "|---:|---:|",
             *[f"| {h['step']} | {h['held_out_accuracy']:.1%} |" for h in evals]]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def cmd_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if bool(args.model) == bool(args.url):
        print("error: give either --model DIR or --url http://HOST:8000/rm", file=sys.stderr)
        return 2
    try:
        score, meta = _scorer(args)
        with open(args.input, encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, bad = [], 0
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            row = {"__error__": f"{args.input}:{n}: not valid JSON ({e.msg})"}
        if not isinstance(row, dict):
            row = {"__error__": f"{args.input}:{n}: row must be a JSON object"}
        rows.append(row)
    mean, std = meta.get("score_mean", 0.0), meta.get("score_std") or 1.0
    with open(args.output, "w") as out, tqdm(total=len(rows), desc="rm score", unit="row", file=sys.stderr) as bar:
        for i in range(0, len(rows), args.batch_size):
            chunk = rows[i:i + args.batch_size]
            results = score([r.get("prompt") for r in chunk], [r.get("response") for r in chunk])
            for row, res in zip(chunk, results):
                rec = {k: v for k, v in row.items() if k != "__error__"}
                rec.update(reward=res.score, status=res.status)
                if "__error__" in row or res.status != "scored":
                    bad += 1
                    rec["error"] = row.get("__error__") or res.detail.get("error")
                if args.normalize and res.status == "scored":
                    rec["reward_z"] = (res.score - mean) / std
                out.write(json.dumps(rec) + "\n")
            bar.update(len(chunk))
    print(f"rm score: {len(rows) - bad} scored, {bad} errors; output: {args.output}", file=sys.stderr)
    return 0


def _scorer(args: argparse.Namespace):
    """(score(prompts, responses) → RewardResults, the model's meta: training score mean and std)."""
    if args.model:
        from rewards.rm.scorer import RMScorer

        scorer = RMScorer(args.model, args.batch_size)
        return scorer.score, scorer.meta
    import urllib.request

    from cluster.serve_pools import post_chunks
    from rewards.types import ERROR, RewardResult

    with urllib.request.urlopen(args.url, timeout=60) as r:  # GET: the app's info, with the model's meta
        meta = json.loads(r.read()).get("meta") or {}

    def score(prompts, responses):
        lost = lambda reason, i: {"score": 0.0, "status": ERROR, "detail": {"error": reason}}  # noqa: E731
        got = post_chunks(args.url, {"prompts": prompts, "responses": responses}, "results", lost,
                          chunk=args.batch_size)
        return [RewardResult(g["score"], g["status"], g.get("detail") or {}) for g in got]
    return score, meta
