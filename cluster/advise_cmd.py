"""`threefold advise`: RLVR, RLHF, RLAIF or a hybrid for this task, with cost and time estimates.

Answers come from flags or a YAML file (--answers; flags win); prices and other numbers from
--set KEY=VALUE or the same YAML. Measured numbers replace the defaults: --labels + --judged give
judge-human agreement, --judge-metrics (threefold judge --metrics) + --judged give judge tokens per
pair and latency, --run-metrics (a run's metrics.jsonl) gives verifier throughput.
Exit codes: 0 advice printed, 2 a bad answer, file or key (the message names it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FLAGS = {"verifiable": "verifiable", "budget": "budget_usd", "timeline": "timeline_days",
         "quality_critical": "quality_critical", "languages": "languages", "iteration": "iteration"}


def register(sub) -> None:
    p = sub.add_parser("advise", help="recommend RLVR, RLHF, RLAIF or a hybrid with estimated cost and time",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answers", help="YAML with any of the answers and numbers below (keys as in --set)")
    p.add_argument("--verifiable", choices=("yes", "no", "partly"), help="can a program check the answers?")
    p.add_argument("--budget", type=float, help="budget in USD")
    p.add_argument("--timeline", type=float, help="days until the model is needed")
    p.add_argument("--quality-critical", action=argparse.BooleanOptionalAction, default=None,
                   help="is output quality critical (worth paying people)?")
    p.add_argument("--languages", type=int, help="number of languages the model must serve")
    p.add_argument("--iteration", choices=("fast", "normal", "slow"), help="how fast must you iterate?")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a price or number, e.g. --set price_human_label_usd=0.8 (see the printed defaults)")
    p.add_argument("--labels", help="label database (threefold label serve) for judge-human agreement, with --judged")
    p.add_argument("--judged", help="threefold judge output JSONL on the labelled pairs")
    p.add_argument("--judge-metrics", help="threefold judge --metrics JSON (tokens, latency), with --judged")
    p.add_argument("--run-metrics", help="a run's metrics.jsonl with a verifier pool (verifier throughput)")
    p.set_defaults(fn=cmd_advise)


def answers_from(args: argparse.Namespace) -> tuple[dict, dict]:
    """(answers, {key: line in --answers})."""
    from cluster.cli import parse_overrides
    from cluster.config_loader import read_yaml

    answers, lines = {}, {}
    if args.answers:
        data, where = read_yaml(Path(args.answers), "advisor answers", ValueError, "answers")
        answers.update(data)
        lines = {path[0]: line for path, line in where.items() if len(path) == 1}
    answers.update(parse_overrides(args.set))
    answers.update({key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag) is not None})
    return answers, lines


def measure(args: argparse.Namespace) -> dict:
    """What this project measured on the user's data, by advisor key."""
    from cluster.label_cmd import _db, read_judged
    from rewards.human.agreement import judge_agreement

    out = {}
    judged = read_judged(args.judged) if args.judged else None
    if args.labels and judged is not None:
        ens = judge_agreement(_db(args.labels).labels(), judged)["judges"]["ensemble"]
        if ens["agreement"] is not None:
            out["judge_human_agreement"] = ens["agreement"]
    if args.judge_metrics and judged:
        metrics = json.loads(Path(args.judge_metrics).read_text())
        tokens = sum(m.get("prompt_tokens", 0) + m.get("completion_tokens", 0) for m in metrics.values())
        lat = [m["latency_p50_s"] for m in metrics.values() if m.get("latency_p50_s") is not None]
        if tokens:
            out["judge_tokens_per_pair"] = tokens / len(judged)
        if lat:
            out["judge_latency_s"] = max(lat)  # judges run in parallel: the slowest sets the pace
    if args.run_metrics:
        out.update(_verifier_throughput(args.run_metrics))
    return out


def _verifier_throughput(path: str) -> dict:
    samples = seconds = 0.0
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line) if line.strip() else {}
            if row.get("verifiers") and row.get("time_reward"):
                samples, seconds = samples + row.get("samples", 0), seconds + row["time_reward"]
    return {"verifier_samples_per_s": samples / seconds} if seconds else {}


def cmd_advise(args: argparse.Namespace) -> int:
    from rewards.human.advisor import AdviceError, advise, format_advice

    lines: dict = {}
    try:
        answers, lines = answers_from(args)
        result = advise(answers, measure(args))
    except SystemExit as e:  # parse_overrides' message for a malformed --set
        print(e, file=sys.stderr)
        return 2
    except AdviceError as e:
        where = f"{args.answers}:{lines[e.key]}: " if e.key in lines else ""
        print(f"error: {where}{e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_advice(result))
    return 0
