"""One-machine GPU check: learner tokens/s and MFU, weight packing, CUDA-IPC (and NCCL) transfer.

Run through `bash bench/gpu_check.sh [--quick]` (it checks for a GPU and bounds the run to 480 s).
Needs only torch and transformers (plus the project's torch-only `learners/`): no Ray, no vLLM.

1. Learner: a random-weight char-level Llama of the demo family scaled to ~0.5B parameters
   (the demo is hidden 128, 4 layers, 4 heads, intermediate 512, vocab 100, untied embeddings;
   here hidden 1024, 30 layers, 16 heads of 64, intermediate 4·hidden, same vocab: 503,583,744
   parameters). One timed step is what `learners/trainer.py` does for one minibatch: micro-batches
   of `token_logprobs` (with entropy) + `policy_loss` + β·k3 KL, backward, grad-norm clip, AdamW.
   Default precision: fp32 weights and optimizer state (as the learner keeps them) with the
   forward under bf16 autocast; `--precision bf16` puts weights and AdamW state in bf16.
   The reference model's no-grad forward (done once per batch in `_prepare`) is not timed.
2. Packing: every parameter cast and copied into contiguous bf16 buckets (`--bucket-mb`).
3. Transfer: process B opens process A's buckets through CUDA IPC and copies them into its own
   bf16 parameter tensors, against the same copies made inside one process; with 2+ GPUs also an
   NCCL broadcast of the buckets between two processes.
Parts 2 and 3 (and the timing helpers) are in bench/gpu_transfer.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gpu_transfer import bench_ipc, bench_nccl, bench_pack, timed  # noqa: E402

VOCAB = 100  # len(learners.char_tokenizer.build_char_tokenizer()): 4 specials + 96 characters
TARGET_PARAMS = 0.5e9
HEAD_DIM = 64

# Dense bf16 tensor-core peak (no sparsity), FLOP/s. Rules are tried in order; every substring of
# a rule must occur in the lower-cased torch.cuda.get_device_name(). NVL boards run other clocks.
PEAK_BF16 = (
    (("nvl",), None, None),
    (("h100", "pcie"), "H100 PCIe", 756e12),
    (("h100",), "H100 SXM", 989e12),  # "NVIDIA H100 80GB HBM3"
    (("h200",), "H200", 989e12),  # also GH200 (the same Hopper die and clocks as H100 SXM)
    (("a100",), "A100", 312e12),
)


def peak_flops(device_name: str, override_tflops: float | None = None) -> tuple[str | None, float | None]:
    """(label, dense bf16 FLOP/s) for a device name; (None, None) when the table does not know it."""
    if override_tflops is not None:
        return f"--peak-tflops {override_tflops:g}", override_tflops * 1e12
    name = device_name.lower()
    for needles, label, peak in PEAK_BF16:
        if all(n in name for n in needles):
            return label, peak
    return None, None


@dataclass(frozen=True)
class Shape:
    """A Llama of the demo family: MHA (kv heads = heads), SiLU MLP, RMSNorm, untied embeddings."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int = VOCAB

    def params(self) -> int:
        """Exact parameter count: per layer q,k,v,o (4h²) + gate,up,down (3hi) + 2 RMSNorms (2h);
        plus embedding and lm_head (2Vh) and the final norm (h)."""
        h = self.hidden
        return self.layers * (4 * h * h + 3 * h * self.intermediate + 2 * h) + 2 * self.vocab * h + h

    def llama_config(self, max_positions: int):
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
                           num_hidden_layers=self.layers, num_attention_heads=self.heads,
                           num_key_value_heads=self.heads, max_position_embeddings=max_positions,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                           use_cache=False, dtype="float32")


def shape_for(hidden: int = 1024, layers: int | None = None, target: float = TARGET_PARAMS) -> Shape:
    """The demo's proportions at `hidden`: heads of 64, intermediate 4·hidden; `layers` defaults
    to the count that comes nearest `target` parameters."""
    if hidden % HEAD_DIM:
        raise ValueError(f"--hidden must be a multiple of {HEAD_DIM} (heads of {HEAD_DIM}); got {hidden}")
    one = Shape(hidden, 1, hidden // HEAD_DIM, 4 * hidden)
    if layers is None:
        per_layer = one.params() - Shape(hidden, 0, one.heads, one.intermediate).params()
        layers = max(1, round((target - (one.params() - per_layer)) / per_layer))
    return Shape(hidden, layers, one.heads, one.intermediate)


def build_model(shape: Shape, seq: int, device: str | torch.device):
    """Random weights, built directly on `device` (`meta` costs nothing)."""
    from transformers import LlamaForCausalLM

    config = shape.llama_config(max(seq, 64))
    config._attn_implementation = "sdpa"
    with torch.device(device):
        return LlamaForCausalLM(config)


def flops_per_token(shape: Shape, seq: int) -> float:
    """Training FLOPs per token: 6·(N − V·h) + 12·L·h·T (PaLM, appendix B: forward 2 per weight
    of a matmul, backward twice that; attention scores and values 2·2·T·h per layer, not halved
    for the causal mask). The input embedding is a lookup, so V·h is left out; lm_head is kept.

    Demo shape at T = 512: N = 503,583,744, V·h = 102,400, 6·503,481,344 = 3,020,888,064;
    12·30·1024·512 = 188,743,680; total 3,209,631,744 FLOPs per token. A step of 256 × 512 =
    131,072 tokens is 4.2069e14 FLOPs; at 1.0 s per step that is 420.7 TFLOP/s, an MFU of
    420.7 / 989 = 42.5 % on an H100 SXM."""
    return 6 * (shape.params() - shape.vocab * shape.hidden) + 12 * shape.layers * shape.hidden * seq


def mfu(tokens_per_s: float, per_token: float, peak: float | None) -> float | None:
    return None if not peak else tokens_per_s * per_token / peak


# ---- the learner step ----------------------------------------------------------------------

def rollout_batch(batch: int, seq: int, prompt_len: int, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """RL-shaped: <s> + prompt + response per row, no padding (so SDPA takes its causal kernel);
    the loss covers the response positions. Log-prob tensors are [B, seq − 1]."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, seq), generator=g)
    ids[:, 0] = 1
    mask = torch.zeros(batch, seq - 1)
    mask[:, prompt_len - 1:] = 1.0
    adv = torch.randn(batch, 1, generator=g).expand(batch, seq - 1).contiguous()
    old = -torch.rand(batch, seq - 1, generator=g) * 5
    out = {"ids": ids, "attn": torch.ones_like(ids), "mask": mask, "adv": adv, "old": old, "ref": old - 0.01}
    return {k: v.to(device) for k, v in out.items()}


def train_step(model, opt, b: dict[str, torch.Tensor], micro: int, autocast: bool, max_new: int) -> None:
    """One minibatch step as `PolicyTrainer._minibatch` does it (kl in the loss, β = 0.01)."""
    from learners.losses import Clip, Norm, aggregate, kl_k3, policy_loss
    from learners.policy import token_logprobs

    norm = Norm.of(b["mask"], max_new)
    opt.zero_grad(set_to_none=True)
    dev = b["ids"].device.type
    for i in range(0, b["ids"].shape[0], micro):
        s = slice(i, i + micro)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
            logp, _entropy = token_logprobs(model, b["ids"][s], b["attn"][s], with_entropy=True)
        loss, _ = policy_loss(logp, b["old"][s], b["adv"][s], b["mask"][s], Clip(), "token_mean", norm)
        loss = loss + 0.01 * aggregate(kl_k3(logp, b["ref"][s]), b["mask"][s], "token_mean", norm)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def bench_learner(model, shape: Shape, a, peak: tuple[str | None, float | None]) -> None:
    bf16 = a.precision == "bf16"
    if bf16:
        model.to(torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0)
    b = rollout_batch(a.batch, a.seq, a.prompt_len, a.device)
    how = "bf16 weights + bf16 AdamW state" if bf16 else "fp32 weights + fp32 AdamW state, forward under bf16 autocast"
    print(f"learner step: {how}; batch {a.batch} x {a.seq} tokens in micro-batches of {a.micro_batch}; "
          "token_logprobs (+entropy) + policy_loss + 0.01*k3 KL, backward, grad clip 1.0, AdamW")
    secs = statistics.median(timed(lambda: train_step(model, opt, b, a.micro_batch, not bf16, a.seq - a.prompt_len),
                                   a.warmup, a.iters, a.device))
    tokens = a.batch * a.seq
    per_token = flops_per_token(shape, a.seq)
    tps = tokens / secs
    label, pk = peak
    util = mfu(tps, per_token, pk)
    share = f"MFU {100 * util:.1f}% of {label} {pk / 1e12:.0f} TFLOP/s" if util is not None else "peak unknown"
    print(f"  median {secs:.3f} s/step over {a.iters} (warm-up {a.warmup} excluded): {tps:,.0f} tokens/s, "
          f"{tps * per_token / 1e12:.1f} TFLOP/s, {share}")
    print(f"  FLOPs/token = 6*(N - V*h) + 12*L*h*T = 6*({shape.params():,} - {shape.vocab * shape.hidden:,}) "
          f"+ 12*{shape.layers}*{shape.hidden}*{a.seq} = {per_token:,.0f}")
    if torch.device(a.device).type == "cuda":
        print(f"  peak GPU memory allocated: {torch.cuda.max_memory_allocated(a.device) / 2**30:.1f} GiB")


# ---- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--hidden", type=int, default=1024, help="hidden size (heads of 64, intermediate 4x)")
    p.add_argument("--layers", type=int, default=None, help="default: nearest 0.5B parameters")
    p.add_argument("--seq", type=int, default=512, help="tokens per sequence (prompt + response)")
    p.add_argument("--prompt-len", type=int, default=None, help="default: seq/4")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 256; --quick 64)")
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 5; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 2; --quick 1)")
    p.add_argument("--quick", action="store_true", help="smaller batch and fewer iterations")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, overrides the table")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a smoke run: no transfer part)")
    p.add_argument("--precision", choices=("autocast", "bf16"), default="autocast",
                   help="autocast: fp32 weights, bf16 autocast forward; bf16: bf16 weights and AdamW state")
    p.add_argument("--bucket-mb", type=int, default=256, help="bucket size in MiB")
    a = p.parse_args(argv)
    a.batch = a.batch or (64 if a.quick else 256)
    a.iters = a.iters or (3 if a.quick else 5)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    a.prompt_len = a.prompt_len or max(1, a.seq // 4)
    if a.device == "cuda":
        a.device = "cuda:0"  # torch.cuda.set_device needs an index
    if not 1 <= a.prompt_len < a.seq:
        p.error(f"--prompt-len must be in [1, seq); got {a.prompt_len} with --seq {a.seq}")
    if min(a.batch, a.micro_batch, a.iters, a.seq - 1, a.bucket_mb) < 1 or a.warmup < 0:
        p.error("--batch, --micro-batch, --iters, --bucket-mb must be >= 1, --seq >= 2, --warmup >= 0")
    return a


def describe(a, shape: Shape) -> tuple[str | None, float | None]:
    import transformers

    cuda = torch.device(a.device).type == "cuda"
    name = torch.cuda.get_device_name(a.device) if cuda else "cpu"
    gpus = torch.cuda.device_count() if cuda else 0
    print(f"device: {name} ({a.device}), {gpus} GPU visible; torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    peak = peak_flops(name, a.peak_tflops)
    print(f"peak dense bf16: {peak[0]} {peak[1] / 1e12:.0f} TFLOP/s" if peak[1] else
          f"peak unknown for {name!r} (pass --peak-tflops); printing raw TFLOP/s")
    print(f"model: LlamaForCausalLM, random weights, hidden {shape.hidden}, {shape.layers} layers, {shape.heads} "
          f"heads of {HEAD_DIM}, intermediate {shape.intermediate}, vocab {shape.vocab}, untied: "
          f"{shape.params():,} parameters")
    return peak


def attempt(what: str, fn, *args):
    """Runs one part; a failure is printed (with its traceback) and the remaining parts still run."""
    try:
        return fn(*args), True
    except torch.cuda.OutOfMemoryError as e:
        print(f"{what}: OUT OF MEMORY ({str(e).splitlines()[0]}); try a smaller --micro-batch")
    except Exception:
        print(f"{what}: FAILED\n{traceback.format_exc()}")
    return None, False


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    start = time.perf_counter()
    cuda = torch.device(a.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing to measure", file=sys.stderr)
        return 2
    if cuda:
        torch.cuda.set_device(a.device)
    shape = shape_for(a.hidden, a.layers)
    peak = describe(a, shape)
    model = build_model(shape, a.seq, a.device)
    assert sum(p.numel() for p in model.parameters()) == shape.params()
    _, ok = attempt("learner step", bench_learner, model, shape, a, peak)
    if cuda:
        torch.cuda.empty_cache()
    packed, packed_ok = attempt("packing", bench_pack, model, a)
    ok &= packed_ok
    model = None
    if not cuda or not packed_ok:
        why = "cpu" if not cuda else "packing failed"
        print(f"cuda-ipc: skipped ({why})\nNCCL: skipped ({why})")
    else:
        torch.cuda.empty_cache()
        for what, fn in (("cuda-ipc", bench_ipc), ("NCCL", bench_nccl)):
            ok &= attempt(what, fn, *packed, a)[1]
    print(f"total: {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
