"""Weight-sync seconds on CPU against a plain in-memory copy of the same bytes, in the same run.

For the demo model and random-weight models of the same family (~30M and ~500M parameters), a
real Learner actor and a real vLLM RolloutGenerator actor on a local Ray cluster; one sync is what
a training step does: the learner hands out its weights as buckets (learners/weight_pack.py), the
transport carries them (rollout.sync_transport: Ray's object store, or a broadcast in a gloo group of
their own), the generator reloads them with one call. The bound is one
`copy_` of a flat buffer of the same size in this process. Prints seconds (median and slowest of --repeats),
GB/s, the ratio to the bound, the buckets per sync and the calls per generator per sync.

Run: .venv/bin/python bench/sync.py [--sizes demo,30m,500m] [--repeats 5] [--reload inplace,vllm]
       [--transport object_store,broadcast]   (~500m needs ~12 GB RAM)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPECS = {  # hidden, layers, heads, intermediate (the demo family: Llama, char tokenizer, 4x MLP)
    "30m": (512, 8, 8, 2048),
    "500m": (1024, 30, 16, 4096),
}


def model_dir(size: str, tmp: Path) -> Path:
    if size == "demo":
        return ROOT / ".cache/demo/model"
    from learners.char_tokenizer import build_char_tokenizer
    from learners.warm_start import TinyLlamaSpec, build_tiny_llama, save_hf

    hidden, layers, heads, inter = SPECS[size]
    out = tmp / size
    tok = build_char_tokenizer()
    save_hf(build_tiny_llama(TinyLlamaSpec(hidden, layers, heads, inter, 64), tok, seed=0), tok, out)
    return out


def copy_bound(nbytes: int, repeats: int) -> float:
    import torch

    src, dst = torch.ones(nbytes // 4), torch.empty(nbytes // 4)
    dst.copy_(src)  # touch the pages once
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(size: str, tmp: Path, repeats: int, reloads: list[str], transports: list[str]) -> list[dict]:
    import ray

    from actors.generator import RolloutGenerator
    from actors.learner import Learner
    from cluster.weight_sync import STRATEGIES
    from learners.trainer import UpdateSettings

    path = str(model_dir(size, tmp))
    learner = Learner.options(num_cpus=0.5).remote(path, UpdateSettings(), 1)
    gen = RolloutGenerator.options(num_cpus=0.5).remote(path, 0, 64, 1)
    buckets = ray.get(learner.export.remote())
    nbytes = sum(b.nbytes for b in buckets)
    probe = [1] + list(range(5, 25)) + [2]
    bound = copy_bound(nbytes, repeats)
    rows = []
    for transport, reload in [(t, r) for t in transports for r in reloads]:
        sync = STRATEGIES[transport](learner, [gen], probe, 1e-3, None, reload)
        sync.push(1)  # warm-up (first mapping of the object store pages; the switch to plain weights)
        loads_before = ray.get(gen.__ray_call__.remote(lambda self: self.loads))
        times = []
        for v in range(2, 2 + repeats):
            t0 = time.perf_counter()
            sync.push(v)
            times.append(time.perf_counter() - t0)
        calls = (ray.get(gen.__ray_call__.remote(lambda self: self.loads)) - loads_before) / repeats
        how = ray.get(gen.__ray_call__.remote(lambda self: self.reloaded_by))
        seconds = statistics.median(times)
        rows.append({"size": size, "transport": transport, "reload": how, "params_M": nbytes / 4e6, "GB": nbytes / 1e9, "sync_s": seconds,
                     "slowest_s": max(times), "copy_s": bound, "ratio": seconds / bound, "buckets": len(buckets), "calls": calls,
                     "parity": sync.check_parity()})
    ray.kill(learner)
    ray.kill(gen)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="demo,30m,500m")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reload", default="inplace,vllm",
                    help="generator reload modes to measure (rollout.sync_reload), each against the same bound")
    ap.add_argument("--transport", default="object_store",
                    help="transports to measure (rollout.sync_transport: object_store, broadcast), each with every reload")
    args = ap.parse_args()
    import ray

    os.environ.setdefault("PYTHONPATH", str(ROOT))
    ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}, log_to_driver=False,
             include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory(prefix="threefold-sync-") as tmp:
        for size in args.sizes.split(","):
            for r in measure(size, Path(tmp), args.repeats, args.reload.split(","), args.transport.split(",")):
                print(f"{r['size']:>5} {r['transport']:>12} {r['reload']:>7}: {r['params_M']:7.1f}M params ({r['GB']:.3f} GB fp32)  "
                      f"sync {r['sync_s']:.3f} s (slowest {r['slowest_s']:.3f}; {r['GB'] / r['sync_s']:.2f} GB/s)  copy bound {r['copy_s']:.4f} s  "
                      f"ratio {r['ratio']:.1f}x  buckets {r['buckets']}  calls/generator/sync {r['calls']:.0f}  "
                      f"parity {r['parity']:.1e}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
