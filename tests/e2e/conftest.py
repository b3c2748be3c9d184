"""One Ray cluster, one set of demo assets and one pair of vLLM engines for every e2e run."""
import pytest
import ray

from cluster.demo_assets import Recipe, build


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    return build(tmp_path_factory.mktemp("demo"), Recipe(held_out=64))


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def generators(ray_cluster, assets):
    from actors.generator import RolloutGenerator

    gens = [RolloutGenerator.options(num_cpus=0.5).remote(str((assets / "model").resolve()), rank, 64)
            for rank in range(2)]
    ray.get([g.get_version.remote() for g in gens])
    return gens
