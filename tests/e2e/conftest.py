"""One Ray cluster, one set of demo assets and one pair of vLLM engines for every e2e run."""
import re
import time
import urllib.request

import pytest
import ray

from cluster.demo_assets import Recipe, build


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    return build(tmp_path_factory.mktemp("demo"), Recipe(held_out=64))


@pytest.fixture(scope="session")
def ray_cluster():
    # metrics reach the Prometheus endpoint within a second (default: every 10 s)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def generators(ray_cluster, assets):
    from actors.generator import RolloutGenerator

    gens = [RolloutGenerator.options(num_cpus=0.5).remote(str((assets / "model").resolve()), rank, 64)
            for rank in range(2)]
    ray.get([g.get_version.remote() for g in gens])
    return gens


@pytest.fixture(scope="session")
def prometheus(ray_cluster):
    """prometheus(run, names) → the run's threefold metrics as the cluster's Prometheus endpoint shows them."""
    return prometheus_values


def prometheus_values(run: str, names: tuple[str, ...], wait_s: float = 30.0, want: dict | None = None) -> dict:
    """{(metric, tags without run): value} for this run's ray_threefold_* samples, scraped from the
    local node's Prometheus endpoint; waits until every metric in `names` has appeared and every
    key of `want` has its value (the endpoint lags the driver by an export interval or more)."""
    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    line = re.compile(r'^ray_(threefold_\w+?)(?:_bucket|_count|_sum)?\{(.*)\} (\S+)$')
    deadline, got = time.monotonic() + wait_s, {}
    while True:
        got = {}
        for text in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
            m = line.match(text)
            if not m:
                continue
            tags = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            if tags.get("run") == run:
                keep = tuple(sorted((k, v) for k, v in tags.items() if k in ("pool", "source", "phase", "status", "mode", "judge")))
                got[(m.group(1), keep)] = float(m.group(3))
        have = all(any(n == k[0] for k in got) for n in names)
        if have and all(k in got and abs(got[k] - v) <= 1e-6 * max(1.0, abs(v)) for k, v in (want or {}).items()):
            return got
        if time.monotonic() > deadline:
            return got
        time.sleep(1.0)
