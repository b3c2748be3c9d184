"""Weight transports outside Ray's object store (learners/weight_transport.py): a real gloo group of
three ranks (a learner and two receivers on threads of this process); NCCL and CUDA IPC are marked gpu."""
import queue
import threading

import pytest
import torch

from learners.distributed import free_address
from learners.weight_pack import BUCKET_BYTES, FlatWeights, pack, unpack
from learners.weight_transport import Layout, Receiver, Sender, Snapshots, WeightGroup, layouts


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 8))


def test_a_broadcast_delivers_each_version_as_it_was_when_sent_while_the_learner_trains_on():
    m = model()
    flat = FlatWeights(m, bucket_bytes=16 * 1024)  # several buckets
    assert len(flat.flats) >= 2
    address, versions, got, errors = free_address(), 3, {1: [], 2: []}, []
    sent: list[dict[str, torch.Tensor]] = []

    def receive(rank: int) -> None:
        try:
            rx = Receiver(WeightGroup(address, rank, 3, "gloo", "test/0", timeout_s=60))
            for _ in range(versions):
                plan = ready.get()  # the layout comes another way (through Ray in a run)
                got[rank].append({k: v.clone() for k, v in unpack(rx.receive(plan))})
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    ready = queue.Queue()
    threads = [threading.Thread(target=receive, args=(r,)) for r in (1, 2)]
    for t in threads:
        t.start()
    sender = Sender(WeightGroup(address, 0, 3, "gloo", "test/0", timeout_s=60))
    for v in range(versions):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0 + v)  # an update, in place, as the optimizer makes it
        sent.append({k: t.detach().clone() for k, t in m.state_dict().items()})
        plan = sender.send(flat.buckets())
        with torch.no_grad():  # the next update starts at once, before the receivers even start
            for p in m.parameters():
                p.mul_(-3.0)
        for _ in (1, 2):
            ready.put(plan)
    sender.wait()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for rank in (1, 2):
        assert len(got[rank]) == versions
        for v in range(versions):
            assert got[rank][v].keys() == sent[v].keys()
            for k in sent[v]:
                assert torch.equal(got[rank][v][k], sent[v][k]), (rank, v, k)


def test_snapshots_keep_a_copy_until_the_ring_comes_round():
    buckets = pack([("w", torch.arange(6.0))], bucket_bytes=BUCKET_BYTES)
    ring = Snapshots(depth=2)
    first = ring.take(buckets)
    buckets[0].data[:] = 0  # the live weights change
    second = ring.take(buckets)
    assert first[0].view(torch.float32)[:6].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # (then alignment padding)
    assert second[0].view(torch.float32)[:6].tolist() == [0.0] * 6
    third = ring.take(buckets)
    assert third[0].data_ptr() == first[0].data_ptr()  # the oldest buffer is reused, not a fresh one


def test_a_layout_refuses_bytes_of_another_size():
    plan = layouts(pack([("w", torch.ones(4))]))[0]
    assert isinstance(plan, Layout) and plan.nbytes == 16
    with pytest.raises(ValueError, match="16 bytes"):
        plan.filled(torch.zeros(8, dtype=torch.uint8))


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="gloo or nccl"):
        WeightGroup(free_address(), 0, 1, "mpi", "test/bad", timeout_s=5)


# ---------------------------------------------------------------- GPU paths (skipped on CPU)

def _ipc_child(plan, handles, out) -> None:
    """Another process: open the learner's snapshot through its IPC handles and report each tensor's sum."""
    from learners.weight_transport import open_ipc

    torch.cuda.set_device(0)
    out.put({k: float(v.double().sum()) for k, v in unpack(open_ipc(plan, handles))})


@pytest.mark.gpu
def test_cuda_ipc_hands_another_process_the_snapshot_not_the_live_weights():
    import torch.multiprocessing as mp

    from learners.weight_transport import IpcExporter

    m = model().cuda()
    flat = FlatWeights(m)
    exporter = IpcExporter(depth=2)
    expected = {k: float(v.double().sum()) for k, v in m.state_dict().items()}
    plan, handles = exporter.export(flat.buckets(on_device=True))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)  # the learner trains on; the snapshot must not change
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_ipc_child, args=(plan, handles, out))
    child.start()
    got = out.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-6, abs=1e-6), k


def _nccl_rank(rank: int, address: str, plans, results) -> None:
    torch.cuda.set_device(rank)
    group = WeightGroup(address, rank, 2, "nccl", "test/nccl", timeout_s=120)
    if rank == 0:
        torch.manual_seed(0)
        buckets = pack([("a", torch.randn(1000)), ("b", torch.randn(7, 3))], device=torch.device("cuda", 0))
        results.put(("sent", {k: float(v.sum()) for k, v in unpack(buckets)}))
        plans.put(layouts(buckets))
        sender = Sender(group)
        sender.send(buckets)
        sender.wait()
    else:
        got = Receiver(group, "cuda:1").receive(plans.get(timeout=120))
        results.put(("got", {k: float(v.sum()) for k, v in unpack(got)}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="NCCL needs two GPUs")
def test_nccl_broadcast_between_two_gpus():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    plans, results = ctx.Queue(), ctx.Queue()
    address = free_address()
    ranks = [ctx.Process(target=_nccl_rank, args=(r, address, plans, results)) for r in (0, 1)]
    for r in ranks:
        r.start()
    got = dict(results.get(timeout=180) for _ in ranks)
    for r in ranks:
        r.join(timeout=60)
    assert [r.exitcode for r in ranks] == [0, 0]
    assert got["got"] == pytest.approx(got["sent"])
