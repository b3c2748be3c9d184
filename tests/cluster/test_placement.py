"""Placement per role: the pure rules, then a real three-node Ray cluster (a head, a node marked
verifier_node, a node marked judge_node) where pools land where the config says."""
import time
from types import SimpleNamespace

import pytest
import ray
from pydantic import ValidationError

from cluster.config import ResourcesConfig
from cluster.placement import (Placements, PlacementError, RoleSpec, actor_options, bundle, shortfall,
                               spec_for)
from cluster.verifier_pool import VerifierPool

pytestmark = pytest.mark.timeout(180)


def res(**kw) -> ResourcesConfig:
    return ResourcesConfig(**kw)


# --- rules (no Ray) --------------------------------------------------------------------------------

def test_defaults_are_the_plain_options_of_before():
    place = Placements(res())
    gens, learners = place.trainers(2, learners=2)
    assert gens == [{"num_cpus": 0.5, "num_gpus": 0.0}] * 2 and learners == [{"num_cpus": 0.5, "num_gpus": 0.0}] * 2
    assert place.role("verifiers", 0.25).options == {"num_cpus": 0.25}
    assert place.role("reward_models", 0.25, 0.0).options == {"num_cpus": 0.25, "num_gpus": 0.0}
    assert place.groups == []


def test_bundles_and_options_from_config():
    cfg = res(placement={"verifiers": "SPREAD", "timeout_s": 30}, custom={"verifiers": {"verifier_node": 0.01}})
    spec = spec_for(cfg, "verifiers", 1.0)
    assert spec == RoleSpec("verifiers", 1.0, None, {"verifier_node": 0.01}, "SPREAD", 30.0)
    assert bundle(spec) == {"CPU": 1.0, "verifier_node": 0.01}
    assert actor_options(spec) == {"num_cpus": 1.0, "resources": {"verifier_node": 0.01}}
    gpu = spec_for(res(placement={"generators": "PACK"}), "generators", 4, 1)
    assert bundle(gpu) == {"CPU": 4, "GPU": 1} and actor_options(gpu) == {"num_cpus": 4, "num_gpus": 1}
    assert bundle(spec_for(cfg, "learner", 8, 0.0)) == {"CPU": 8}  # no zero GPU in a bundle
    assert spec_for(cfg, "judges", 0.1).strategy is None


@pytest.mark.parametrize("custom, placement, message", [
    ({"verifier": {"verifier_node": 0.01}}, {"verifiers": "PACK"},
     "unknown role 'verifier'; roles: generators, learner, verifiers, judges, judge_servers, reward_models"),
    ({"verifiers": {"verifier_node": 0}}, {"verifiers": "PACK"},
     "verifiers.verifier_node: amount must be at least 0.0001"),
    ({"verifiers": {"CPU": 1}}, {"verifiers": "PACK"}, "verifiers: CPU is not a custom resource"),
    ({"judges": {"judge_node": 0.01}}, {}, "custom.judges needs placement.judges"),
    ({}, {"learner": "CLOSE"}, "PACK', 'SPREAD', 'STRICT_PACK' or 'STRICT_SPREAD'"),
])
def test_config_rejects(custom, placement, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        res(custom=custom, placement=placement)


def test_shortfall_names_what_is_missing():
    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 2.0, "verifier_node": 1.0}]
    assert shortfall([{"CPU": 1, "judge_node": 0.01}], "PACK", nodes) == "no node has judge_node"
    assert shortfall([{"CPU": 1, "GPU": 2}], "PACK", nodes) == "no single node has {CPU: 1, GPU: 2}"
    assert shortfall([{"CPU": 1}] * 3, "STRICT_SPREAD", nodes) == "STRICT_SPREAD needs 3 nodes and the cluster has 2"
    assert shortfall([{"CPU": 3}] * 2, "STRICT_PACK", nodes) == \
        "STRICT_PACK needs {CPU: 6} on one node and no node has that"
    assert shortfall([{"CPU": 2}] * 4, "SPREAD", nodes) == \
        "the group needs {CPU: 8} and the cluster has {CPU: 6} in all"
    assert shortfall([{"CPU": 2}], "PACK", nodes).startswith("the cluster has these resources, but")


# --- a real cluster --------------------------------------------------------------------------------

@ray.remote
class Where:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


@pytest.fixture(scope="module")
def nodes():
    from ray.cluster_utils import Cluster

    small = {"object_store_memory": 200 * 2**20}  # three object stores on one machine
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **small})
    verifier = c.add_node(num_cpus=2, resources={"verifier_node": 1}, **small)
    judge = c.add_node(num_cpus=2, resources={"judge_node": 1}, **small)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield SimpleNamespace(head=c.head_node.node_id, verifier=verifier.node_id, judge=judge.node_id)
    ray.shutdown()
    c.shutdown()


def where(actors) -> list[str]:
    return ray.get([a.info.remote() for a in actors])


def state(pg) -> str:
    return ray.util.placement_group_table(pg)["state"]


def test_verifier_pool_stays_on_verifier_nodes_when_resized(nodes):
    cfg = res(placement={"verifiers": "SPREAD", "judges": "PACK"},
              custom={"verifiers": {"verifier_node": 0.01}, "judges": {"judge_node": 0.01}})
    place = Placements(cfg)
    judges = place.role("judges", 0.25)
    bystanders = judges.add(2, lambda o: Where.options(**o).remote())
    assert set(ray.get([a.node.remote() for a in bystanders])) == {nodes.judge}
    pool = VerifierPool(size=2, slots=1, placement=place)
    assert {i["node"] for i in where(pool.actors)} == {nodes.verifier}
    first = pool.place.groups[0]
    pool.resize(4)
    assert {i["node"] for i in where(pool.actors)} == {nodes.verifier} and len(pool.place.groups) == 2
    second = pool.place.groups[1]
    pool.resize(1)  # the growth's group goes with its last actor; the first keeps a free bundle
    assert pool.place.groups == [first] and len(pool.place.free) == 1
    assert state(second) == "REMOVED" and state(first) == "CREATED"
    pool.resize(2)  # takes the free bundle: no new group
    assert pool.place.groups == [first] and {i["node"] for i in where(pool.actors)} == {nodes.verifier}
    assert [r.score for r in pool.score(["The answer is 4", "5", "4"], ["4", "4", "4"])] == [1.0, 0.0, 1.0]
    # the other pool was never touched by the resizes
    assert set(ray.get([a.node.remote() for a in bystanders])) == {nodes.judge} and judges.groups
    place.close()
    assert state(first) == "REMOVED"


@pytest.mark.parametrize("strategy, n_nodes", [("SPREAD", 2), ("PACK", 1)])
def test_generators_and_learner_share_one_group(nodes, strategy, n_nodes):
    place = Placements(res(generator_cpus=0.5, learner_cpus=0.5,
                           placement={"generators": strategy, "learner": strategy}))
    gens, learners = place.trainers(1)
    assert len(place.groups) == 1 and len(learners) == 1
    actors = [Where.options(**o).remote() for o in gens + learners]
    assert len(set(ray.get([a.node.remote() for a in actors]))) == n_nodes
    place.close()


def test_unplaceable_request_fails_in_time_naming_the_key(nodes):
    cfg = res(placement={"verifiers": "PACK", "timeout_s": 2}, custom={"verifiers": {"gpu_box": 0.01}})
    t0 = time.monotonic()
    with pytest.raises(PlacementError, match=r"resources\.placement\.verifiers: .*timeout_s=2 s: no node has gpu_box"):
        VerifierPool(size=1, slots=1, placement=Placements(cfg))
    assert time.monotonic() - t0 < 15
    assert not [g for g in ray.util.placement_group_table().values() if g["state"] == "PENDING"]


def test_growth_that_cannot_be_placed_leaves_the_pool_as_it_was(nodes):
    cfg = res(placement={"verifiers": "STRICT_PACK", "timeout_s": 2}, custom={"verifiers": {"verifier_node": 0.01}})
    pool = VerifierPool(size=1, slots=1, num_cpus=1, placement=Placements(cfg))
    before = list(pool.actors)
    with pytest.raises(PlacementError, match="STRICT_PACK placement group of 2 bundle"):
        pool.resize(3)  # 2 more CPUs on the 2-CPU verifier node, which already holds one
    assert pool.actors == before and len(pool.place.groups) == 1
    assert where(pool.actors)[0]["node"] == nodes.verifier
    pool.shutdown()
