"""The TRL side of bench/vs_trl.py, and what both of its sides share.

GRPOConfig's keyword arguments for the shared task, the parent's launcher of the TRL subprocess and
the worker that runs in it (`vs_trl.py --trl-worker`, with bench/.trl on PYTHONPATH), the held-out
greedy accuracy, the step-time statistics and the policy models (the demo model, or the `--model-size
30m` random-init Llama built once). Imported by bench/vs_trl.py as `bench.vs_trl_trl`; never run alone.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VS_TRL = ROOT / "bench" / "vs_trl.py"  # the TRL subprocess runs `vs_trl.py --trl-worker SPEC`
TRL_DIR = ROOT / "bench" / ".trl"
DEMO_MODEL = ROOT / ".cache" / "demo" / "model"
TRAIN_PATH = ROOT / ".cache" / "demo" / "data" / "train.jsonl"
EVAL_PATH = ROOT / ".cache" / "demo" / "data" / "eval.jsonl"
BENCH_CACHE = ROOT / ".cache" / "bench"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
# ~30M parameters: 7 × (4·512² attention + 3·512·2048 MLP) + 2·100·512 embeddings/head ≈ 29.5M
SIZES = {"30m": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 7,
                 "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 64}}
TRL_THREADS = 2


# ---------------------------------------------------------------- statistics

def step_stats(t_launch: float, t_begin: float, ends: list[float], samples_per_step: int, warmup: int) -> dict:
    """Step times from wall-clock timestamps: the process started at `t_launch`, training (after
    model loading, and for threefold after its step-0 evaluation) at `t_begin`, step i ended at
    ends[i]. Steady state leaves out the first `warmup` steps and the last one (threefold's last step
    includes its final held-out evaluation); with too few steps it keeps all but the warm-up, or all."""
    if not ends:
        raise ValueError("no step finished")
    durations = [b - a for a, b in zip([t_begin] + ends[:-1], ends)]
    steady = durations[warmup:-1] or durations[warmup:] or durations
    total = ends[-1] - t_launch
    n = len(ends)
    mean = statistics.fmean(steady)
    return {
        "steps": n, "startup_s": t_begin - t_launch, "total_s": total,
        "steady_steps": len(steady), "steady_median_s": statistics.median(steady), "steady_mean_s": mean,
        "steady_samples_per_s": samples_per_step / mean,
        # start-up included: the first step carries everything from launch to training's start
        "all_median_s": statistics.median([ends[0] - t_launch] + durations[1:]), "all_mean_s": total / n,
        "all_samples_per_s": samples_per_step * n / total,
        "durations_s": durations,
    }


# ---------------------------------------------------------------- models

def model_for(size: str) -> tuple[Path, dict]:
    """The policy directory and a description of it; the 30m model is built once and cached."""
    if not (DEMO_MODEL / "config.json").is_file() or not TRAIN_PATH.is_file():
        sys.exit("no demo model: run `.venv/bin/threefold demo-assets` first")
    if size == "demo":
        return DEMO_MODEL, {"size": "demo", "params": _count_params(DEMO_MODEL), "trained": True}
    recipe = {"base": "demo tokenizer", "seed": 0, **SIZES[size],
              "tokenizer_sha": _sha(DEMO_MODEL / "tokenizer.json")}
    out = BENCH_CACHE / f"model-{size}"
    if not ((out / "recipe.json").is_file() and json.loads((out / "recipe.json").read_text()) == recipe):
        _build_model(out, recipe)
    return out, {"size": size, "params": _count_params(out), "trained": False}


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _build_model(out: Path, recipe: dict) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    base = json.loads((DEMO_MODEL / "config.json").read_text())
    shape = {k: recipe[k] for k in SIZES["30m"]}
    drop = ("architectures", "transformers_version", "dtype", *shape)
    cfg = LlamaConfig(**{k: v for k, v in base.items() if k not in drop}, **shape)
    torch.manual_seed(recipe["seed"])
    model = LlamaForCausalLM(cfg).float()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (DEMO_MODEL / name).is_file():
            shutil.copy2(DEMO_MODEL / name, tmp / name)
    (tmp / "recipe.json").write_text(json.dumps(recipe))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"built {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, random init)", flush=True)


def _count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


# ---------------------------------------------------------------- TRL side: configuration

def trl_config_kwargs(shared: dict, out_dir: Path, bf16: bool = False) -> dict:
    """GRPOConfig(**kwargs) for the same task at TRL's best CPU settings: fp32, no vLLM, no
    gradient checkpointing, no reporting. One optimizer step sees 16 prompts × 16 samples:
    per_device_train_batch_size counts completions, steps_per_generation=1 makes the generation
    batch (per_device × steps_per_generation = 256) one step's batch. `bf16`: TRL's mixed precision
    (bf16 autocast in generation and training; --trl-precision bf16), to check fp32 is its best."""
    s = shared
    batch = s["prompts_per_step"] * s["samples_per_prompt"]
    return {
        "output_dir": str(out_dir), "max_steps": s["steps"], "seed": s["seed"], "data_seed": s["seed"],
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1,
        "num_generations": s["samples_per_prompt"], "steps_per_generation": 1, "num_iterations": 1,
        "max_completion_length": s["max_new_tokens"], "temperature": s["temperature"], "top_p": 1.0, "top_k": 0,
        "learning_rate": s["lr"], "lr_scheduler_type": "constant", "warmup_steps": 0, "optim": "adamw_torch",
        "adam_beta1": 0.9, "adam_beta2": 0.999, "weight_decay": s["weight_decay"], "max_grad_norm": s["max_grad_norm"],
        "beta": s["beta"], "epsilon": s["epsilon"], "epsilon_high": s["epsilon"],
        "loss_type": "dapo",  # token mean over the whole batch = threefold's token_mean (one process, no accumulation)
        "scale_rewards": "group",  # GRPO: (r - group mean) / group std, as threefold's grpo
        "use_vllm": False, "bf16": bf16, "fp16": False, "gradient_checkpointing": False, "use_cpu": True,
        "report_to": [], "logging_steps": s["steps"], "disable_tqdm": True, "log_completions": False,
        "save_strategy": "no", "eval_strategy": "no", "dataloader_num_workers": 0, "remove_unused_columns": False,
    }


def trl_view(kw: dict) -> dict:
    """The shared settings as the GRPOConfig kwargs state them (one process)."""
    gen_batch = kw["per_device_train_batch_size"] * kw["steps_per_generation"]  # GRPOConfig's derived default
    assert kw["epsilon_high"] == kw["epsilon"]
    assert gen_batch == kw["per_device_train_batch_size"] * kw["gradient_accumulation_steps"], "one step per batch"
    return {"steps": kw["max_steps"], "seed": kw["seed"], "prompts_per_step": gen_batch // kw["num_generations"],
            "samples_per_prompt": kw["num_generations"], "samples_per_step": gen_batch,
            "max_new_tokens": kw["max_completion_length"], "temperature": kw["temperature"], "lr": kw["learning_rate"],
            "beta": kw["beta"], "epsilon": kw["epsilon"], "max_grad_norm": kw["max_grad_norm"],
            "weight_decay": kw["weight_decay"], "updates_per_batch": kw["num_iterations"] * kw["steps_per_generation"],
            "warmup_steps": kw["warmup_steps"], "schedule": kw["lr_scheduler_type"]}


# ---------------------------------------------------------------- TRL side (parent)

def run_trl(shared: dict, model_dir: Path, work: Path, warmup: int, precision: str = "fp32",
            compile: bool = False) -> dict:
    if not (TRL_DIR / "trl").is_dir():
        sys.exit("TRL is not installed for the bench: run `bash bench/setup_trl.sh` first")
    spec = {"shared": shared, "model_dir": str(model_dir),
            "kwargs": {**trl_config_kwargs(shared, work / "trl-out", precision == "bf16"), "torch_compile": compile},
            "bf16_matmul": precision == "bf16-matmul",
            "result": str(work / "trl-result.json")}
    spec_path = work / "trl-spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRL_DIR), str(ROOT)]),
           "OMP_NUM_THREADS": str(TRL_THREADS), "MKL_NUM_THREADS": str(TRL_THREADS), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(work / "hf-datasets"), "WANDB_DISABLED": "true", "CUDA_VISIBLE_DEVICES": ""}
    log_path = work / "trl.log"
    cmd = [str(ROOT / ".venv" / "bin" / "python"), str(VS_TRL), "--trl-worker", str(spec_path)]
    print(f"[trl] GRPOTrainer in a subprocess (PYTHONPATH={TRL_DIR.relative_to(ROOT)})", flush=True)
    with open(log_path, "wb") as log:
        t_launch = time.time()
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t_exit = time.time()
    if rc != 0 or not Path(spec["result"]).is_file():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"TRL worker exited {rc}; log {log_path}:\n{tail}")
    res = json.loads(Path(spec["result"]).read_text())
    samples = shared["prompts_per_step"] * shared["samples_per_prompt"]
    stats = step_stats(t_launch, res["t_train_begin"], res["step_ends"], samples, warmup)
    return {**stats, "process_s": t_exit - t_launch,
            **{k: v for k, v in res.items() if k not in ("step_ends", "t_train_begin", "t_train_end")},
            "log": str(log_path), "note": "held-out evaluation (start and end models) runs after training, untimed"}


# ---------------------------------------------------------------- TRL side (worker, in bench/.trl's environment)

def trl_worker(spec_path: Path) -> None:
    import torch

    torch.set_num_threads(TRL_THREADS)
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rewards.math.answer import MathChecker

    spec = json.loads(spec_path.read_text())
    shared, model_dir = spec["shared"], spec["model_dir"]
    if spec.get("bf16_matmul"):  # what threefold's learner.matmul_precision reduced sets, for the whole process
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    checker = MathChecker(timeout_s=shared["reward_timeout_s"])  # what the `math` source's verifiers run

    def math_reward(completions, answer, **_):
        return [r.score for r in checker.score(list(completions), [str(a) for a in answer])]

    math_reward.__name__ = "math"  # the name TRL logs the reward under

    train = Dataset.from_list([json.loads(x) for x in open(TRAIN_PATH) if x.strip()])
    eval_rows = [json.loads(x) for x in open(EVAL_PATH) if x.strip()][: shared["eval_size"]]

    class Clock(TrainerCallback):
        def __init__(self):
            self.begin, self.ends = None, []

        def on_train_begin(self, args, state, control, **kw):
            self.begin = time.time()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.time())

    clock = Clock()
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left", truncation_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=math_reward, args=GRPOConfig(**spec["kwargs"]), train_dataset=train,
                          processing_class=tok, callbacks=[clock])
    trainer.train()
    t_end = time.time()
    logs = [h for h in trainer.state.log_history if "reward" in h or "rewards/math/mean" in h]
    acc_end = greedy_accuracy(trainer.model, tok, eval_rows, shared["max_new_tokens"], checker)
    acc_start = greedy_accuracy(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tok, eval_rows,
                                shared["max_new_tokens"], checker)
    checker.close()
    Path(spec["result"]).write_text(json.dumps({
        "t_train_begin": clock.begin, "step_ends": clock.ends, "t_train_end": t_end,
        "eval_accuracy_start": acc_start, "eval_accuracy_end": acc_end,
        "reward_mean_last": logs[-1].get("reward") if logs else None, "kl_last": logs[-1].get("kl") if logs else None,
        "trl_version": trl.__version__, "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
        "global_steps": trainer.state.global_step,
    }))


def greedy_accuracy(model, tok, rows: list[dict], max_new_tokens: int, checker, batch: int = 500) -> float:
    """Share of rows whose greedy answer the checker passes (as threefold's evaluate: failures count 0)."""
    import torch

    model.eval()
    texts = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch):
            enc = tok([r["prompt"] for r in rows[i:i + batch]], return_tensors="pt", padding=True)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(r.score for r in checker.score(texts, [str(r["answer"]) for r in rows])) / len(rows)
