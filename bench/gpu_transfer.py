"""Weight transfer part of bench/gpu_check.py: bf16 bucket packing, CUDA-IPC between two
processes, NCCL broadcast between two GPUs; also the timing helpers both parts use.

Imported by bench/gpu_check.py (as `bench.gpu_transfer`, the repository root on sys.path); needs
only torch. The spawned transfer processes find their entry functions in this module.
"""
from __future__ import annotations

import math
import socket
import statistics
import time
from dataclasses import dataclass

import torch

ALIGN = 64  # bucket offsets are multiples of 64 elements (128 bytes in bf16)
JOIN_S = 150  # a transfer child that has not finished by then is killed and reported


# ---- timing --------------------------------------------------------------------------------

def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, warmup: int, iters: int, device) -> list[float]:
    """Seconds per call of the `iters` calls after `warmup` untimed ones."""
    out = []
    for i in range(warmup + iters):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            out.append(time.perf_counter() - t)
    return out



# ---- packing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    name: str
    bucket: int
    offset: int
    numel: int
    shape: tuple[int, ...]


def plan_buckets(named_shapes: list[tuple[str, tuple[int, ...]]], bucket_numel: int) -> tuple[list[Slot], list[int]]:
    """Parameters in order into buckets of at most `bucket_numel` elements (a larger one gets a
    bucket of its own); offsets aligned to ALIGN. Returns the slots and each bucket's length."""
    slots, sizes = [], []
    fill = bucket_numel  # forces a first bucket
    for name, shape in named_shapes:
        n = math.prod(shape)
        start = -(-fill // ALIGN) * ALIGN
        if start + n > bucket_numel and fill > 0:
            sizes.append(0)
            start = 0
        slots.append(Slot(name, len(sizes) - 1, start, n, tuple(shape)))
        fill = start + n
        sizes[-1] = fill
    return slots, sizes


def new_buckets(sizes: list[int], dtype, device) -> list[torch.Tensor]:
    return [torch.empty(n, dtype=dtype, device=device) for n in sizes]


@torch.no_grad()
def pack(tensors: dict[str, torch.Tensor], slots: list[Slot], buckets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies (and casts) each tensor into its slot of the preallocated `buckets`."""
    for s in slots:
        buckets[s.bucket][s.offset:s.offset + s.numel].copy_(tensors[s.name].reshape(-1))
    return buckets


@torch.no_grad()
def unpack(buckets: list[torch.Tensor], slots: list[Slot], targets: dict[str, torch.Tensor]) -> None:
    """Copies (and casts) each slot into the target tensor of its name."""
    for s in slots:
        targets[s.name].copy_(buckets[s.bucket][s.offset:s.offset + s.numel].view(s.shape))


def payload_bytes(slots: list[Slot], dtype=torch.bfloat16) -> int:
    return sum(s.numel for s in slots) * torch.empty(0, dtype=dtype).element_size()


def bench_pack(model, a) -> tuple[list[Slot], list[torch.Tensor]]:
    params = {k: v.detach() for k, v in model.named_parameters()}
    slots, sizes = plan_buckets([(k, tuple(v.shape)) for k, v in params.items()], a.bucket_mb * 2**20 // 2)
    buckets = new_buckets(sizes, torch.bfloat16, a.device)
    secs = statistics.median(timed(lambda: pack(params, slots, buckets), a.warmup, a.iters, a.device))
    gb = payload_bytes(slots) / 1e9
    src = next(iter(params.values())).dtype
    print(f"packing: {len(slots)} tensors ({src}) -> {len(buckets)} bf16 buckets of <= {a.bucket_mb} MiB, "
          f"{gb:.3f} GB written: median {1e3 * secs:.1f} ms, {gb / secs:.1f} GB/s")
    return slots, buckets


# ---- transfer ------------------------------------------------------------------------------

def _ipc_receiver(device: str, slots: list[tuple], warmup: int, iters: int, inbox, outbox) -> None:
    """Process B: opens A's buckets (CUDA IPC handles, rebuilt by torch's multiprocessing
    reductions), copies them into its own bf16 tensors, checks them, reports the times."""
    try:
        torch.cuda.set_device(device)
        torch.empty(1, device=device)  # CUDA context before the clock starts
        slots = [Slot(*s) for s in slots]
        targets = {s.name: torch.empty(s.shape, dtype=torch.bfloat16, device=device) for s in slots}
        t = time.perf_counter()
        buckets = inbox.get()
        sync(device)
        opened = time.perf_counter() - t
        times = timed(lambda: unpack(buckets, slots, targets), warmup, iters, device)
        exact = all(torch.equal(targets[s.name].reshape(-1), buckets[s.bucket][s.offset:s.offset + s.numel])
                    for s in slots)
        buckets = None  # release A's memory before A frees it
        sync(device)
        outbox.put({"open_s": opened, "times": times, "exact": exact})
    except Exception as e:  # reported by the parent
        outbox.put({"error": f"{type(e).__name__}: {e}"})


def _spawn(target, args_list: list[tuple]):
    """Starts one spawned process per args tuple; returns them and the queue they answer on."""
    import torch.multiprocessing as mp  # registers the CUDA-IPC reductions for queues

    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, outbox), daemon=True) for args in args_list]
    for p in procs:
        p.start()
    return procs, outbox


def _answer(procs, outbox) -> dict:
    """The first answer on `outbox`, or an error when the processes die or JOIN_S passes; then
    waits for the processes (briefly after an error) and kills what is left."""
    import queue

    deadline, got = time.monotonic() + JOIN_S, None
    while got is None and time.monotonic() < deadline:
        try:
            got = outbox.get(timeout=1.0)
        except queue.Empty:
            if all(not p.is_alive() for p in procs) and outbox.empty():
                got = {"error": f"exited with code {[p.exitcode for p in procs]} without an answer"}
    got = got or {"error": f"no answer in {JOIN_S} s"}
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()) if "error" not in got else 5.0)
        if p.is_alive():
            p.kill()
    return got


def bench_ipc(slots: list[Slot], buckets: list[torch.Tensor], a) -> None:
    import torch.multiprocessing as mp

    gb = payload_bytes(slots) / 1e9
    local = {s.name: torch.empty(s.shape, dtype=torch.bfloat16, device=a.device) for s in slots}
    same = statistics.median(timed(lambda: unpack(buckets, slots, local), a.warmup, a.iters, a.device))
    flat = [torch.empty_like(x) for x in buckets]
    raw = statistics.median(timed(lambda: [f.copy_(x) for f, x in zip(flat, buckets)], a.warmup, a.iters, a.device))
    local = flat = None
    inbox = mp.get_context("spawn").Queue()
    procs, outbox = _spawn(_ipc_receiver, [(a.device, [tuple(vars(s).values()) for s in slots],
                                            a.warmup, a.iters, inbox)])
    inbox.put(buckets)  # pickled as CUDA-IPC handles; A keeps `buckets` alive until B has answered
    got = _answer(procs, outbox)
    print(f"same process: per-tensor unpack {gb / same:.1f} GB/s ({1e3 * same:.1f} ms), "
          f"one copy per bucket {gb / raw:.1f} GB/s")
    if "error" in got:
        print(f"cuda-ipc: FAILED ({got['error']})")
        return
    ipc = statistics.median(got["times"])
    print(f"cuda-ipc: process B opened {len(buckets)} buckets in {1e3 * got['open_s']:.1f} ms, copied {gb:.3f} GB "
          f"into its own tensors: median {1e3 * ipc:.1f} ms, {gb / ipc:.1f} GB/s = {same / ipc:.2f}x the "
          f"same-process unpack; bit-exact: {got['exact']}")


def _nccl_rank(rank: int, port: int, sizes: list[int], warmup: int, iters: int, outbox) -> None:
    """Rank 0 on cuda:0 broadcasts the buckets to rank 1 on cuda:1; rank 1 reports the times."""
    import datetime

    import torch.distributed as dist

    try:
        dev = f"cuda:{rank}"
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                                timeout=datetime.timedelta(seconds=JOIN_S // 2))
        buckets = [torch.full((n,), float(rank == 0), dtype=torch.bfloat16, device=dev) for n in sizes]
        times = []
        for i in range(warmup + iters):
            dist.barrier(device_ids=[rank])
            sync(dev)
            t = time.perf_counter()
            for b in buckets:
                dist.broadcast(b, src=0)
            sync(dev)
            times.append(time.perf_counter() - t)
        ok = all(bool((b == 1).all()) for b in buckets)
        dist.destroy_process_group()
        if rank == 1:
            outbox.put({"times": times[warmup:], "exact": ok})
    except Exception as e:
        outbox.put({"error": f"rank {rank}: {type(e).__name__}: {e}"})


def bench_nccl(slots: list[Slot], buckets: list[torch.Tensor], a) -> None:
    import torch.distributed as dist

    if torch.cuda.device_count() < 2:
        print(f"NCCL: skipped ({torch.cuda.device_count()} GPU)")
        return
    if not dist.is_nccl_available():
        print("NCCL: skipped (this torch has no NCCL)")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sizes = [b.numel() for b in buckets]
    procs, outbox = _spawn(_nccl_rank, [(r, port, sizes, a.warmup, a.iters) for r in (0, 1)])
    got = _answer(procs, outbox)
    if "error" in got:
        print(f"NCCL: FAILED ({got['error']})")
        return
    secs = statistics.median(got["times"])
    gb = sum(sizes) * 2 / 1e9
    print(f"NCCL: broadcast of {len(sizes)} buckets ({gb:.3f} GB) cuda:0 -> cuda:1 in another process: "
          f"median {1e3 * secs:.1f} ms, {gb / secs:.1f} GB/s; received intact: {got['exact']}")
