"""The verifier pool on a real local Ray cluster: spreading, resizing, and surviving a lost actor."""
import threading
import time

import pytest
import ray

from cluster.verifier_pool import VerifierPool

pytestmark = pytest.mark.timeout(300)


def rows(n: int, sleep: float = 0.0) -> list[dict]:
    """Row i passes iff the program really adds; every third program is wrong on purpose."""
    out = []
    for i in range(n):
        op = "-" if i % 3 == 0 else "+"
        program = f"import time\ntime.sleep({sleep})\ndef add(a, b):\n    return a {op} b\n"
        tests = {"type": "function", "entry_point": "add", "cases": [{"args": [i, 2], "expected": i + 2}]}
        out.append({"id": f"r{i}", "kind": "code", "program": program, "tests": tests})
    return out


def expected_status(i: int) -> str:
    return "failed" if i % 3 == 0 else "passed"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_rows_spread_and_results_in_order(cluster):
    pool = VerifierPool(size=2, slots=2)
    got = pool.verify(rows(24), chunk=2)
    assert pool.queue_peak == 24 - 2 * 2 * 2  # 2 actors × 2 chunks in flight × 2 rows; the rest waited
    assert [g["id"] for g in got] == [f"r{i}" for i in range(24)]
    assert [g["status"] for g in got] == [expected_status(i) for i in range(24)]
    done = [i["rows_done"] for i in ray.get([a.info.remote() for a in pool.actors])]
    assert sum(done) == 24 and min(done) >= 6, done


def test_resize_between_steps(cluster):
    pool = VerifierPool(size=1, slots=2)
    assert [g["status"] for g in pool.verify(rows(6))] == [expected_status(i) for i in range(6)]
    pool.resize(3)
    assert len(pool.actors) == 3
    got = pool.verify(rows(18), chunk=2)
    assert [g["status"] for g in got] == [expected_status(i) for i in range(18)]
    assert all(i["rows_done"] > 0 for i in ray.get([a.info.remote() for a in pool.actors]))
    pool.resize(1)
    assert len(pool.actors) == 1
    assert [g["status"] for g in pool.verify(rows(3))] == [expected_status(i) for i in range(3)]


def test_lost_actor_loses_no_row(cluster):
    pool = VerifierPool(size=2, slots=2)
    victim = pool.actors[0]
    killer = threading.Thread(target=lambda: (time.sleep(1.0), ray.kill(victim)))
    killer.start()
    got = pool.verify(rows(16, sleep=0.4), chunk=2)
    killer.join()
    assert [g["status"] for g in got] == [expected_status(i) for i in range(16)]
    assert victim not in pool.actors  # replaced
    assert len(pool.actors) == 2
