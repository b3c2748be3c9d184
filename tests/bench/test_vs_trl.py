"""bench/vs_trl.py without running either trainer: arguments, the two generated configs agreeing on
every shared setting, the --set pass-through, the step-time statistics on hand-made timestamps, the
30m shape and the report lines. TRL itself never runs here (its GRPOConfig is only constructed, in a
subprocess, when bench/setup_trl.sh has installed it)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import vs_trl as vt
from bench import vs_trl_trl as vtt

ROOT = Path(__file__).resolve().parents[2]


def test_arguments_defaults_and_overrides(tmp_path):
    a = vt.parse_args([])
    assert (a.steps, a.seed, a.model_size, a.overrides, a.only, a.warmup, a.eval_size) == (
        600, 0, "demo", [], None, 5, 500)
    assert a.out.name == "vs_trl-demo-600.json" and not str(a.out).startswith(str(ROOT / "bench"))
    b = vt.parse_args(["--steps", "20", "--seed", "3", "--model-size", "30m", "--set", "rollout.max_staleness=1",
                       "--set", "learner.micro_batch_size=64", "--only", "trl", "--warmup", "2",
                       "--out", str(tmp_path / "x.json")])
    assert (b.steps, b.seed, b.model_size, b.only, b.warmup, b.out) == (20, 3, "30m", "trl", 2, tmp_path / "x.json")
    assert b.overrides == ["rollout.max_staleness=1", "learner.micro_batch_size=64"]
    for bad in (["--set", "novalue"], ["--set", "=1"], ["--steps", "0"], ["--model-size", "7b"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit):
            vt.parse_args(bad)


def test_precision_sets_both_sides_alike_unless_trl_is_named(tmp_path, monkeypatch):
    a = vt.parse_args([])
    assert (a.precision, a.trl_precision) == ("fp32", "fp32")
    r = vt.parse_args(["--precision", "reduced", "--set", "rollout.dtype=float32"])
    assert r.trl_precision == "bf16-matmul"
    assert r.overrides == ["rollout.dtype=bfloat16", "learner.matmul_precision=reduced", "rollout.dtype=float32"]
    assert vt.parse_args(["--precision", "reduced", "--trl-precision", "fp32"]).trl_precision == "fp32"
    # what the TRL subprocess is told: autocast through GRPOConfig, bf16 matmul inputs through the spec
    specs = {}
    monkeypatch.setattr(vtt, "ROOT", tmp_path)
    monkeypatch.setattr(vtt, "TRL_DIR", tmp_path / "trl-env")
    (tmp_path / "trl-env" / "trl").mkdir(parents=True)
    monkeypatch.setattr(vtt.subprocess, "call", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop")))
    shared = vt.shared_settings(vt.parse_args(["--steps", "3"]))
    for precision in ("fp32", "bf16", "bf16-matmul"):
        work = tmp_path / precision
        work.mkdir()
        with pytest.raises(RuntimeError, match="stop"):
            vtt.run_trl(shared, tmp_path, work, 0, precision)
        spec = json.loads((work / "trl-spec.json").read_text())
        specs[precision] = (spec["kwargs"]["bf16"], spec["bf16_matmul"])
    assert specs == {"fp32": (False, False), "bf16": (True, False), "bf16-matmul": (False, True)}


def test_overrides_pass_through_to_threefold_train(tmp_path):
    cmd = vt.threefold_command(tmp_path / "c.yaml", ["rollout.max_staleness=1", "algorithm.name=rloo"])
    assert cmd[0].endswith(".venv/bin/threefold") and cmd[1:3] == ["train", str(tmp_path / "c.yaml")]
    assert cmd[3:] == ["--set", "rollout.max_staleness=1", "--set", "algorithm.name=rloo"]
    assert vt.unfair_overrides(["rollout.max_staleness=1", "algorithm.name=rloo", "learner.lr=1e-4",
                                "algorithm.kl.coef=0", "rollout.num_generators=1", "steps=5"]) == [
        "algorithm.name=rloo", "learner.lr=1e-4", "algorithm.kl.coef=0", "steps=5"]


@pytest.mark.parametrize("argv", [[], ["--steps", "37", "--seed", "5"]])
def test_threefold_and_trl_configs_agree(tmp_path, argv):
    args = vt.parse_args(argv)
    shared = vt.shared_settings(args)
    cfg = vt.threefold_config(shared, tmp_path / "model", tmp_path / "runs", "r")
    kw = vtt.trl_config_kwargs(shared, tmp_path / "trl")
    expected = {"steps": args.steps, "seed": args.seed, "prompts_per_step": 16, "samples_per_prompt": 16,
                "samples_per_step": 256, "max_new_tokens": 4, "temperature": 1.0, "lr": 5e-5, "beta": 0.01,
                "epsilon": 0.2, "max_grad_norm": 1.0, "weight_decay": 0.0, "updates_per_batch": 1, "warmup_steps": 0,
                "schedule": "constant"}
    assert vt.threefold_view(cfg) == expected
    assert vtt.trl_view(kw) == expected
    # one optimizer step sees the whole 16 × 16 generation batch
    assert (kw["per_device_train_batch_size"], kw["num_generations"], kw["steps_per_generation"],
            kw["gradient_accumulation_steps"], kw["num_iterations"]) == (256, 16, 1, 1, 1)
    assert "generation_batch_size" not in kw  # GRPOConfig refuses it together with steps_per_generation
    # TRL at its best CPU settings
    assert (kw["use_vllm"], kw["bf16"], kw["fp16"], kw["gradient_checkpointing"], kw["report_to"]) == (
        False, False, False, False, [])
    assert (kw["optim"], kw["lr_scheduler_type"], kw["loss_type"], kw["scale_rewards"]) == (
        "adamw_torch", "constant", "dapo", "group")
    # threefold: evaluation only at the start and the end, parity never after the first sync, the run in tmp
    log = cfg["logging"]
    assert (log["eval_every"], log["eval_size"], log["output_dir"], log["run_name"]) == (
        args.steps, 500, str(tmp_path / "runs"), "r")
    assert log["parity_every"] > args.steps
    assert cfg["reward"]["sources"] == [{"name": "math", "type": "math"}]
    assert cfg["data"]["train_path"] == str(vt.TRAIN_PATH) and cfg["data"]["eval_path"] == str(vt.EVAL_PATH)


def test_threefold_config_is_valid_and_matches_trl_loss(tmp_path, monkeypatch, tiny_model_dir):
    """The generated YAML loads as a RunConfig, and its loss is TRL's: k3 KL as a loss term, token mean."""
    import yaml

    from cluster.config import RunConfig

    for name in ("train", "eval"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"prompt": "1+2=", "answer": "3", "kind": "math"}) + "\n")
    monkeypatch.setattr(vt, "TRAIN_PATH", tmp_path / "train.jsonl")
    monkeypatch.setattr(vt, "EVAL_PATH", tmp_path / "eval.jsonl")
    cfg = vt.threefold_config(vt.shared_settings(vt.parse_args(["--steps", "20"])), tiny_model_dir, tmp_path, "r")
    run = RunConfig.model_validate(yaml.safe_load(yaml.safe_dump(cfg)))  # as written to disk
    assert run.steps == 20 and run.algorithm.name == "grpo"
    assert (run.algorithm.kl_estimator(), run.algorithm.kl_in_reward(), run.algorithm.aggregation()) == (
        "k3", False, "token_mean")
    assert run.learner.micro_batch_size >= 256  # one forward/backward per batch, like TRL's single micro-batch


@pytest.mark.skipif(not (vtt.TRL_DIR / "trl").is_dir(), reason="TRL not installed (bash bench/setup_trl.sh)")
def test_grpo_config_accepts_the_kwargs(tmp_path):
    kw = vtt.trl_config_kwargs(vt.shared_settings(vt.parse_args(["--steps", "20"])), tmp_path / "trl")
    code = ("import json, sys; from trl import GRPOConfig; c = GRPOConfig(**json.loads(sys.argv[1])); "
            "print(json.dumps([c.generation_batch_size, c.steps_per_generation, c.per_device_train_batch_size, "
            "c.num_generations, c.bf16, c.max_steps]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(kw)], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(vtt.TRL_DIR), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                              "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [256, 1, 256, 16, False, 20]


def test_step_stats_on_hand_made_timestamps():
    # launched at 0, training from 10; the last step (17.5) carries threefold's final evaluation
    s = vt.step_stats(0.0, 10.0, [11.0, 12.0, 13.5, 14.5, 15.5, 17.5], 256, warmup=1)
    assert s["durations_s"] == [1.0, 1.0, 1.5, 1.0, 1.0, 2.0]
    assert (s["steps"], s["startup_s"], s["total_s"], s["steady_steps"]) == (6, 10.0, 17.5, 4)  # steps 2..5
    assert s["steady_median_s"] == 1.0 and s["steady_mean_s"] == pytest.approx(1.125)
    assert s["steady_samples_per_s"] == pytest.approx(256 / 1.125)
    assert s["all_mean_s"] == pytest.approx(17.5 / 6) and s["all_samples_per_s"] == pytest.approx(6 * 256 / 17.5)
    assert s["all_median_s"] == pytest.approx(1.25)  # median of 11, 1, 1.5, 1, 1, 2
    # too few steps for warm-up and last-step exclusion: keep what there is
    assert vt.step_stats(0.0, 2.0, [3.0, 5.0], 256, warmup=1)["steady_mean_s"] == 2.0
    assert vt.step_stats(0.0, 2.0, [3.5], 256, warmup=5)["steady_mean_s"] == 1.5
    with pytest.raises(ValueError):
        vt.step_stats(0.0, 1.0, [], 256, warmup=0)


def test_30m_shape_is_about_30m_parameters():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    base = json.loads('{"vocab_size": 100, "max_position_embeddings": 64, "tie_word_embeddings": false}')
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**base, **vtt.SIZES["30m"]))
    assert 27e6 < sum(p.numel() for p in model.parameters()) < 33e6


def test_report_lines():
    side = lambda sps, acc: {"steady_samples_per_s": sps, "steady_median_s": 256 / sps, "steady_mean_s": 256 / sps,  # noqa: E731
                             "all_samples_per_s": sps / 2, "all_median_s": 1.0, "all_mean_s": 2.0, "startup_s": 5.0,
                             "total_s": 9.0, "process_s": 10.0, "eval_accuracy_start": 0.424, "eval_accuracy_end": acc}
    res = {"threefold": side(412.0, 0.712), "trl": side(690.0, 0.704)}
    assert vt.final_line("demo", 600, res, trained=True) == (
        "vs TRL (demo, 600 steps): threefold 412 samples/s vs TRL 690 samples/s = 0.60x; "
        "held-out threefold 71.2% vs TRL 70.4%")
    assert vt.final_line("30m", 20, res, trained=False).endswith("(untrained random-init model: accuracy meaningless)")
    assert vt.final_line("demo", 20, {"trl": res["trl"]}, trained=True) == (
        "TRL alone (demo, 20 steps): 690 samples/s; held-out 70.4%")
    table = vt.fmt_table(res)
    assert "threefold/TRL" in table and "0.60x" in table.splitlines()[1]


def test_compile_sets_both_sides_unless_trl_is_named(tmp_path, monkeypatch):
    a = vt.parse_args([])
    assert (a.compile, a.trl_compile) == (False, "off") and "learner.compile=true" not in a.overrides
    c = vt.parse_args(["--compile", "--precision", "reduced"])
    assert c.trl_compile == "on" and c.overrides[0] == "learner.compile=true" and "learner.matmul_precision=reduced" in c.overrides
    assert vt.parse_args(["--compile", "--trl-compile", "off"]).trl_compile == "off"
    monkeypatch.setattr(vtt, "ROOT", tmp_path)
    monkeypatch.setattr(vtt, "TRL_DIR", tmp_path / "trl-env")
    (tmp_path / "trl-env" / "trl").mkdir(parents=True)
    monkeypatch.setattr(vtt.subprocess, "call", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop")))
    shared = vt.shared_settings(vt.parse_args(["--steps", "3"]))
    seen = {}
    for compile in (False, True):
        work = tmp_path / str(compile)
        work.mkdir()
        with pytest.raises(RuntimeError, match="stop"):
            vtt.run_trl(shared, tmp_path, work, 0, "fp32", compile)
        seen[compile] = json.loads((work / "trl-spec.json").read_text())["kwargs"]["torch_compile"]
    assert seen == {False: False, True: True}
