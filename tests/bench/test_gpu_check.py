"""bench/gpu_check.py on CPU: arguments, the ~0.5B shape (counted on the meta device), the FLOPs /
MFU arithmetic, the peak table, bucket packing round trips (bench/gpu_transfer.py), a tiny CPU
smoke run and the shell wrapper's no-GPU exits. The GPU run itself is the `gpu`-marked test at the end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check as gc
from bench import gpu_transfer as gt

ROOT = Path(__file__).resolve().parents[2]


def test_arguments_defaults_quick_and_overrides():
    a = gc.parse_args([])
    assert (a.hidden, a.layers, a.seq, a.batch, a.iters, a.warmup, a.prompt_len) == (1024, None, 512, 256, 5, 2, 128)
    assert (a.device, a.peak_tflops, a.precision, a.bucket_mb, a.micro_batch) == ("cuda:0", None, "autocast", 256, 16)
    q = gc.parse_args(["--quick"])
    assert (q.batch, q.iters, q.warmup) == (64, 3, 1)
    o = gc.parse_args(["--quick", "--hidden", "1536", "--layers", "12", "--seq", "256", "--batch", "32",
                       "--iters", "7", "--warmup", "0", "--peak-tflops", "500", "--device", "cuda:1"])
    assert (o.hidden, o.layers, o.seq, o.batch, o.iters, o.warmup, o.peak_tflops, o.device) == (
        1536, 12, 256, 32, 7, 0, 500.0, "cuda:1")
    assert o.prompt_len == 64


@pytest.mark.parametrize("argv", [["--seq", "8", "--prompt-len", "8"], ["--batch", "-1"], ["--warmup", "-1"],
                                  ["--precision", "fp8"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        gc.parse_args(argv)


def test_vocab_is_the_char_tokenizer():
    from learners.char_tokenizer import build_char_tokenizer

    assert gc.VOCAB == len(build_char_tokenizer()) == 100


def test_default_shape_is_half_a_billion_counted_on_meta():
    shape = gc.shape_for()
    assert (shape.hidden, shape.layers, shape.heads, shape.intermediate) == (1024, 30, 16, 4096)
    # 30 · (4·1024² + 3·1024·4096 + 2·1024) + 2·100·1024 + 1024 = 30 · 16,779,264 + 205,824
    assert shape.params() == 503_583_744
    model = gc.build_model(shape, 512, "meta")
    assert sum(p.numel() for p in model.parameters()) == shape.params()
    assert type(model).__name__ == "LlamaForCausalLM" and not model.config.tie_word_embeddings
    assert abs(shape.params() - 0.5e9) / 0.5e9 < 0.10


@pytest.mark.parametrize("hidden", [768, 1536, 2048])
def test_other_hidden_sizes_stay_near_target(hidden):
    shape = gc.shape_for(hidden)
    assert abs(shape.params() - 0.5e9) / 0.5e9 < 0.10
    assert sum(p.numel() for p in gc.build_model(shape, 64, "meta").parameters()) == shape.params()


def test_explicit_layers_and_bad_hidden():
    assert gc.shape_for(1024, 2).layers == 2
    with pytest.raises(ValueError, match="multiple of 64"):
        gc.shape_for(1000)


def test_flops_and_mfu_by_hand():
    shape = gc.shape_for()
    # 6·(503,583,744 − 100·1024) = 3,020,888,064; 12·30·1024·512 = 188,743,680
    assert gc.flops_per_token(shape, 512) == 3_020_888_064 + 188_743_680 == 3_209_631_744
    # 256 × 512 tokens in 1.0 s → 131,072 tok/s · 3,209,631,744 = 4.20692e14 FLOP/s; / 989e12 = 0.42537
    assert gc.mfu(131_072.0, 3_209_631_744, 989e12) == pytest.approx(0.425371, abs=1e-6)
    assert gc.mfu(131_072.0, 3_209_631_744, None) is None


@pytest.mark.parametrize("name,label,peak", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989e12), ("NVIDIA H100 PCIe", "H100 PCIe", 756e12),
    ("NVIDIA H200", "H200", 989e12), ("NVIDIA A100-SXM4-80GB", "A100", 312e12),
    ("NVIDIA A100 80GB PCIe", "A100", 312e12), ("NVIDIA H100 NVL", None, None), ("Tesla T4", None, None),
    ("cpu", None, None)])
def test_peak_table(name, label, peak):
    assert gc.peak_flops(name) == (label, peak)


def test_peak_override():
    assert gc.peak_flops("Tesla T4", 65.0) == ("--peak-tflops 65", 65e12)
    assert gc.peak_flops("NVIDIA H100 80GB HBM3", 900.0)[1] == 900e12


def test_bucket_plan_by_hand():
    shapes = [("a", (10,)), ("b", (7, 10)), ("c", (50,)), ("d", (2, 1000)), ("e", (3,))]
    slots, sizes = gt.plan_buckets(shapes, bucket_numel=1000)
    # a at 0; b at 64 (aligned), ends 134; c at 192, ends 242; d (2000 > 1000) alone; e starts a new one
    assert [(s.bucket, s.offset) for s in slots] == [(0, 0), (0, 64), (0, 192), (1, 0), (2, 0)]
    assert sizes == [242, 2000, 3]
    assert gt.payload_bytes(slots) == 2 * (10 + 70 + 50 + 2000 + 3)


def _tiny(dtype):
    model = gc.build_model(gc.Shape(64, 2, 1, 256), 32, "cpu").to(dtype)
    return {k: v.detach() for k, v in model.named_parameters()}


@pytest.mark.parametrize("model_dtype,bucket_dtype", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)])
def test_pack_unpack_roundtrip_is_bit_exact(model_dtype, bucket_dtype):
    params = _tiny(model_dtype)
    slots, sizes = gt.plan_buckets([(k, tuple(v.shape)) for k, v in params.items()], bucket_numel=20_000)
    assert len(sizes) > 1  # the roundtrip crosses buckets
    buckets = gt.pack(params, slots, gt.new_buckets(sizes, bucket_dtype, "cpu"))
    out = {k: torch.zeros_like(v) for k, v in params.items()}
    gt.unpack(buckets, slots, out)
    for k, v in params.items():
        assert torch.equal(out[k].view(torch.int8), v.view(torch.int8)), k


def test_fp32_weights_pack_to_their_bf16_cast():
    params = _tiny(torch.float32)
    slots, sizes = gt.plan_buckets([(k, tuple(v.shape)) for k, v in params.items()], bucket_numel=1 << 20)
    buckets = gt.pack(params, slots, gt.new_buckets(sizes, torch.bfloat16, "cpu"))
    out = {k: torch.empty(v.shape, dtype=torch.bfloat16) for k, v in params.items()}
    gt.unpack(buckets, slots, out)
    assert all(torch.equal(out[k], v.to(torch.bfloat16)) for k, v in params.items())


def test_train_step_moves_the_weights():
    shape = gc.Shape(64, 1, 1, 256)
    model = gc.build_model(shape, 16, "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gc.train_step(model, opt, gc.rollout_batch(4, 16, 4, "cpu"), micro=2, autocast=False, max_new=12)
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert sum(not torch.equal(b, p) for b, p in zip(before, after)) > len(before) // 2


def test_cpu_smoke_run(capsys):
    assert gc.main(["--device", "cpu", "--hidden", "64", "--layers", "1", "--seq", "16", "--batch", "4",
                    "--micro-batch", "2", "--iters", "1", "--warmup", "0", "--bucket-mb", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("peak unknown", "tokens/s", "FLOPs/token = 6*(N - V*h)", "packing:", "cuda-ipc: skipped (cpu)",
                   "NCCL: skipped (cpu)"):
        assert needle in out, needle


def test_a_failing_part_is_reported_and_the_rest_runs(capsys, monkeypatch):
    def boom(*_):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(gc, "bench_learner", boom)
    assert gc.main(["--device", "cpu", "--hidden", "64", "--layers", "1", "--seq", "16", "--batch", "2",
                    "--iters", "1", "--warmup", "0", "--bucket-mb", "1"]) == 1
    out = capsys.readouterr().out
    assert "learner step: FAILED" in out and "RuntimeError: kernel exploded" in out and "packing:" in out


def _answers(code: int, outbox) -> None:
    if code:
        raise SystemExit(code)
    outbox.put({"times": [0.5]})


def test_spawned_answers_and_silent_deaths_are_reported():
    assert gt._answer(*gt._spawn(_answers, [(0,)])) == {"times": [0.5]}
    assert gt._answer(*gt._spawn(_answers, [(3,)])) == {"error": "exited with code [3] without an answer"}


def _fake(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _wrapper(tmp_path, python: str, smi_rc: int):
    _fake(tmp_path, "nvidia-smi", f"exit {smi_rc}")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PYTHON": python}
    return subprocess.run(["bash", "bench/gpu_check.sh", "--quick"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_wrapper_exits_2_without_nvidia_smi_device(tmp_path):
    r = _wrapper(tmp_path, sys.executable, smi_rc=9)
    assert r.returncode == 2 and "no GPU here" in r.stderr


def test_wrapper_exits_3_without_torch(tmp_path):
    r = _wrapper(tmp_path, str(_fake(tmp_path, "py", "exit 1")), smi_rc=0)
    assert r.returncode == 3 and "cannot import torch and transformers" in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_wrapper_exits_2_when_torch_sees_no_gpu(tmp_path):
    r = _wrapper(tmp_path, sys.executable, smi_rc=0)
    assert r.returncode == 2 and "sees no CUDA GPU" in r.stderr


@pytest.mark.gpu
def test_quick_gpu_run():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "bench/gpu_check.py", "--quick"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=480)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tokens/s" in r.stdout and ("MFU" in r.stdout or "peak unknown" in r.stdout)
    assert "packing:" in r.stdout and "bit-exact: True" in r.stdout
    assert "NCCL: skipped (1 GPU)" in r.stdout or "received intact: True" in r.stdout
