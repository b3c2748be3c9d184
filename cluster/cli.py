"""`threefold` command line."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

HELP = """threefold: RL post-training with human, AI and verifiable feedback on Ray.

commands:
  train CONFIG          run an RL job (embedded local Ray cluster unless --address/RAY_ADDRESS); checkpoints
                        every checkpoint.every steps and on SIGTERM/SIGINT (exit 3); --resume RUN continues one
  demo-assets           build the demo policy and arithmetic data offline (cached); --rlhf adds annotated
                        pairs, --code the code demo's policy and tasks, --facts the facts demo's,
                        --rlaif the RLAIF demo's judges and reference answers
  rm train CONFIG       train a Bradley–Terry reward model on preference pairs (JSONL or Parquet)
  rm score IN.jsonl     score {prompt, response} rows with a reward model, JSONL in and out
  sample IN.jsonl       sample a model's responses offline (--pairs: judge input for RLAIF → RM)
  verify IN.jsonl       run code tests in a sandbox / check math and exact answers, JSONL in and out
  judge IN.jsonl        label response pairs with an LLM-judge ensemble (JSONL in, JSONL/Parquet out)
  scale RUN_DIR         resize a running job's reward pools (verifiers, rm, judges) before its next step;
                        --run RUN_NAME [--address ADDR] instead reaches the job through Ray from any machine
  status [RUN_NAME]     a running job's step, pools, samples/s and held-out score through Ray (--address,
                        --json); without RUN_NAME, the runs on the cluster
  submit CONFIG         run `train CONFIG` as a Ray job on a cluster (--address http://HEAD:8265); outputs go
                        to logging.storage (--storage); --logs/--status/--stop JOB_ID
  serve CONFIG          deploy the reward pools of a Serve config (deploy/serve.yaml) on the cluster, each
                        with its own autoscaling; --app NAME, --status, --shutdown, --address
  label make-pairs|add-annotator|serve|export|agreement
                        human preference labels: pairs from a policy, a labelling web app, export for
                        `rm train`, human-human and judge-human agreement
  advise                recommend RLVR, RLHF, RLAIF or a hybrid, with cost and time (measured numbers where known)
  config-reference      print the config reference (Markdown), as in the README
"""


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --set {item!r}: write KEY.PATH=VALUE, e.g. --set steps=20")
        out[key] = yaml.safe_load(value)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from cluster.config_loader import ConfigError, load_config
    from cluster.data import DataError
    from cluster.judge_cmd import JudgesConfigError
    from cluster.resume import Stopped
    from cluster.weight_sync import ParityError

    try:
        cfg = load_config(args.config, parse_overrides(args.set))
        from cluster.run import train

        summary = train(cfg, Path(args.config).stem, address=args.address, resume=args.resume)
    except Stopped as e:
        print(f"threefold: {e}", file=sys.stderr)
        return 3
    except (ConfigError, DataError, JudgesConfigError, ValueError) as e:  # CheckpointError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ParityError as e:
        print(f"error: weight sync check failed, run stopped: {e}", file=sys.stderr)
        return 1
    print(f"held-out score ({summary['eval_sources']}) {summary['eval_accuracy_start']:.1%} → "
          f"{summary['eval_accuracy_end']:.1%}; report: {summary['report']}{copy_outputs(cfg, summary)}")
    return 0


def copy_outputs(cfg, summary: dict) -> str:
    """With logging.storage: the last copy of the run directory (now with the report), and where it went."""
    if not cfg.logging.storage:
        return ""
    from cluster import storage

    run_dir = Path(summary["run_dir"])
    where = storage.destination(cfg.logging.storage, run_dir.name)
    if storage.sync_run(run_dir, cfg.logging.storage):
        return f"; outputs: {where}"
    return f"; outputs NOT copied to {where} (see the warning above)"


def cmd_demo_assets(args: argparse.Namespace) -> int:
    from cluster.demo_assets import build

    out = build(args.out, force=args.force)
    if args.rlhf:
        from cluster.rlhf_demo import build_preferences

        build_preferences(out, force=args.force)
    if args.code:
        from cluster.code_demo import build as build_code

        build_code(Path(out) / "code", force=args.force)
    if args.facts:
        from cluster.facts_demo import build as build_facts

        build_facts(Path(out) / "facts", force=args.force)
    if args.rlaif:
        from cluster.judge_demo import build_judges, build_rlaif_data

        build_judges(out, force=args.force)
        build_rlaif_data(out)
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from cluster.config_loader import reference_markdown

    if args.rm:
        from cluster.rm_config import RewardModelConfig

        print(reference_markdown(RewardModelConfig))
    else:
        print(reference_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="threefold", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run an RL job from a YAML config",
                       description="Run an RL job: sample → generate (vLLM) → reward → learn → sync weights.")
    t.add_argument("config", help="run config YAML (see configs/rlvr-arith.yaml and the README's reference)")
    t.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join (default: $RAY_ADDRESS, else start an embedded local cluster)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set steps=20 --set learner.lr=5e-5 (repeatable)")
    t.add_argument("--resume", metavar="RUN_DIR_OR_URI",
                   help="continue a stopped or crashed run from its newest complete checkpoint (a run directory, "
                        "<storage>/<run_name>, or a checkpoint folder); exit 2 if the config changed a key a resume "
                        "cannot follow")
    t.set_defaults(fn=cmd_train)
    d = sub.add_parser("demo-assets", help="build the demo model and data (cached by recipe)")
    d.add_argument("--out", default=".cache/demo", help="output directory (default: .cache/demo)")
    d.add_argument("--force", action="store_true", help="rebuild even if the recipe is unchanged")
    d.add_argument("--rlhf", action="store_true",
                   help="also build the RLHF demo's annotated preference pairs and the hybrid demo's data")
    d.add_argument("--code", action="store_true",
                   help="also build the code demo's warm-started policy and one-line-function tasks (<out>/code)")
    d.add_argument("--facts", action="store_true",
                   help="also build the factual-answer demo's warm-started policy and unit-conversion questions (<out>/facts)")
    d.add_argument("--rlaif", action="store_true",
                   help="also build the RLAIF demo's three judges (printing each one's and the ensemble's agreement "
                        "with gold on 500 held-out pairs) and the reference answers samples are judged against")
    d.set_defaults(fn=cmd_demo_assets)
    from cluster import advise_cmd, judge_cmd, label_cmd, rm_cmd, sample_cmd, scaling, serve_cmd, status_cmd, submit_cmd, verify_cmd

    rm_cmd.register(sub)
    sample_cmd.register(sub)
    verify_cmd.register(sub)
    judge_cmd.register(sub)
    scaling.register(sub)
    status_cmd.register(sub)
    submit_cmd.register(sub)
    serve_cmd.register(sub)
    label_cmd.register(sub)
    advise_cmd.register(sub)
    r = sub.add_parser("config-reference", help="print every config key with its type, default and meaning")
    r.add_argument("--rm", action="store_true", help="the reward-model config (`threefold rm train`) instead")
    r.set_defaults(fn=cmd_config_reference)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
