"""Judge-pool throughput and client overhead against a local server with a fixed 100 ms latency.

    .venv/bin/python bench/judge.py [--latency 0.1] [--waves 20] [--max-concurrency 64] [--no-logprobs]

The server is the OpenAI-compatible test double (tests/doubles/openai_double.py) in its own process,
answering every request after exactly --latency seconds. For each concurrency c (the judge's
max_concurrency: requests in flight), the ensemble judges c × waves / 2 pairs (both orders, so
c × waves requests) and we report requests/s against the ideal c / latency. Client overhead per
call is measured two ways: the mean call latency at c = 1 minus the server's fixed latency (the
whole round trip), that latency minus the time the server itself held the request (the client's
share: client code plus loopback HTTP), and the client process's CPU time per call (what limits
throughput when many calls are in flight).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rewards.judge.ensemble import JudgeEnsemble  # noqa: E402
from rewards.judge.config import EnsembleConfig  # noqa: E402


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/doubles/openai_double.py"), "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"test double server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


async def measure(url: str, c: int, waves: int, logprobs: bool) -> dict:
    cfg = EnsembleConfig.model_validate({"judges": [{"base_url": url, "model": "bench", "max_concurrency": c,
                                                      "timeout_s": 30, "logprobs": logprobs}]})
    ens = JudgeEnsemble(cfg)
    try:
        await ens.judge_pairs([("warm-up", "a", "b")] * max(1, c // 2))  # open the connections first
        server_time(url)  # reset the server's timer
        stats = ens.stats["bench"]
        stats.latencies.clear()
        rows = [(f"prompt {i}", f"response a {i}", f"response b {i}") for i in range(max(1, c * waves // 2))]
        cpu0, t0 = time.process_time(), time.perf_counter()
        verdicts = await ens.judge_pairs(rows)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await ens.aclose()
    calls = 2 * len(rows)
    assert all(v.winner == "tie" for v in verdicts), "the double always answers A: the swap rule must tie"
    return {"c": c, "calls": calls, "rps": calls / wall, "mean_latency": statistics.fmean(stats.latencies),
            "cpu_per_call": cpu / calls, "server_s": server_time(url)}


def server_time(url: str) -> float:
    """Mean time the server held a request since the last call (its sleep plus its own work)."""
    with urllib.request.urlopen(f"{url}/double/stats", timeout=5) as r:
        return json.load(r)["mean_handler_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.1, help="server's fixed latency in seconds (default 0.1)")
    ap.add_argument("--waves", type=int, default=20, help="requests per concurrency slot (default 20)")
    ap.add_argument("--max-concurrency", type=int, default=64)
    ap.add_argument("--no-logprobs", action="store_true", help="do not ask for log-probs (smaller replies)")
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    try:
        levels = [c for c in (1, 2, 4, 8, 16, 32, 64, 128, 256) if c <= args.max_concurrency]
        rows = [asyncio.run(measure(url, c, args.waves, not args.no_logprobs)) for c in levels]
    finally:
        proc.kill()
        proc.wait()
    print(f"judge pool vs a server with a fixed {args.latency * 1000:.0f} ms latency "
          f"(log-probs {'off' if args.no_logprobs else 'on'}; ideal = concurrency / latency)")
    print(f"{'in flight':>9}  {'calls':>6}  {'req/s':>8}  {'ideal':>8}  {'ratio':>6}  {'call latency':>12}  "
          f"{'server held':>11}  {'client overhead':>15}  {'client CPU/call':>15}")
    for r in rows:
        ideal = r["c"] / args.latency
        print(f"{r['c']:>9}  {r['calls']:>6}  {r['rps']:>8.1f}  {ideal:>8.1f}  {r['rps'] / ideal:>6.3f}  "
              f"{r['mean_latency'] * 1000:>9.1f} ms  {r['server_s'] * 1000:>8.1f} ms  "
              f"{(r['mean_latency'] - r['server_s']) * 1000:>12.2f} ms  {r['cpu_per_call'] * 1000:>12.2f} ms")
    one = rows[0]
    print(f"per call at concurrency 1: {(one['mean_latency'] - args.latency) * 1000:.2f} ms above the fixed "
          f"{args.latency * 1000:.0f} ms, of which {(one['mean_latency'] - one['server_s']) * 1000:.2f} ms outside the "
          f"server (client + loopback); client CPU {one['cpu_per_call'] * 1000:.2f} ms per call "
          f"({rows[-1]['cpu_per_call'] * 1000:.2f} ms at concurrency {rows[-1]['c']})")


if __name__ == "__main__":
    main()
