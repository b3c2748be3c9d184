"""Where actors run: per-role placement groups (resources.placement) and custom resources
(resources.custom). The rules (bundles, actor options, why a group was not placed) are pure; the
Ray part reserves groups, waits at most placement.timeout_s, and removes them again.

A role without a strategy gets plain options, exactly what the actors asked for before placement
existed (no group, no custom resources), so the laptop demo schedules as it always did."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.config import ResourcesConfig
from cluster.config_loader import ConfigError

log = logging.getLogger("threefold.placement")


class PlacementError(ConfigError):
    """A placement group was not placed within resources.placement.timeout_s."""


@dataclass(frozen=True)
class RoleSpec:
    role: str  # a key of resources.placement / resources.custom
    cpus: float
    gpus: float | None = None  # None: the actor never asked for GPUs, so num_gpus stays out of its options
    custom: dict[str, float] = field(default_factory=dict)
    strategy: str | None = None
    timeout_s: float = 600.0


def spec_for(res: ResourcesConfig | None, role: str, cpus: float, gpus: float | None = None) -> RoleSpec:
    if res is None:
        return RoleSpec(role, cpus, gpus)
    return RoleSpec(role, cpus, gpus, dict(res.custom.get(role, {})), getattr(res.placement, role),
                    res.placement.timeout_s)


def bundle(spec: RoleSpec) -> dict[str, float]:
    out = {"CPU": spec.cpus}
    if spec.gpus:
        out["GPU"] = spec.gpus
    return {**out, **spec.custom}


def actor_options(spec: RoleSpec) -> dict:
    """What the actor asks for, in or out of a group (an actor in a bundle takes what the bundle holds)."""
    out: dict = {"num_cpus": spec.cpus}
    if spec.gpus is not None:
        out["num_gpus"] = spec.gpus
    if spec.custom:
        out["resources"] = dict(spec.custom)
    return out


def fits(need: dict[str, float], have: dict[str, float]) -> bool:
    return all(have.get(k, 0.0) >= v for k, v in need.items() if v > 0)


def show(res: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in res.items()) + "}"


def shortfall(bundles: list[dict], strategy: str, nodes: list[dict[str, float]]) -> str:
    """Why `bundles` may not fit, judged from the alive nodes' total resources."""
    missing = sorted({k for b in bundles for k, v in b.items() if v > 0} - {k for n in nodes for k in n})
    if missing:
        return f"no node has {', '.join(missing)}"
    big = next((b for b in bundles if not any(fits(b, n) for n in nodes)), None)
    if big is not None:
        return f"no single node has {show(big)}"
    total = {k: sum(b.get(k, 0.0) for b in bundles) for b in bundles for k in b}
    if strategy == "STRICT_PACK" and not any(fits(total, n) for n in nodes):
        return f"STRICT_PACK needs {show(total)} on one node and no node has that"
    if strategy == "STRICT_SPREAD" and len(bundles) > len(nodes):
        return f"STRICT_SPREAD needs {len(bundles)} nodes and the cluster has {len(nodes)}"
    have = {k: sum(n.get(k, 0.0) for n in nodes) for k in total}
    short = {k: v for k, v in total.items() if v > have[k]}
    if short:
        return f"the group needs {show(short)} and the cluster has {show({k: have[k] for k in short})} in all"
    return "the cluster has these resources, but other actors or groups hold them"


def timeout_message(label: str, bundles: list[dict], strategy: str, timeout_s: float, reason: str) -> str:
    shapes = sorted({show(b) for b in bundles})
    return (f"{label}: a {strategy} placement group of {len(bundles)} bundle(s) {', '.join(shapes)} was not placed "
            f"within resources.placement.timeout_s={timeout_s:g} s: {reason}. Add nodes that have them, or lower "
            "what the role asks for (its CPUs/GPUs, resources.custom)")


# --- the Ray part ----------------------------------------------------------------------------------

def reserve(label: str, bundles: list[dict], strategy: str, timeout_s: float):
    """A ready placement group, or PlacementError after `timeout_s` (the pending group is removed)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group(bundles, strategy=strategy)
    if pg.wait(timeout_seconds=timeout_s):
        return pg
    remove_placement_group(pg)
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    raise PlacementError(timeout_message(label, bundles, strategy, timeout_s, shortfall(bundles, strategy, nodes)))


def in_group(options: dict, pg, index: int) -> dict:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {**options, "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)}


def remove(pg) -> None:
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(pg)
    except Exception as e:  # already gone with the cluster: nothing is held any more
        log.warning("placement group not removed: %s", e)


class RoleSlots:
    """Where one pool's actors go. Without a strategy: plain options. With one: a growth first takes
    bundles freed by earlier shrinks, then reserves one group for the rest; a group is removed when
    its last actor is, and a replacement for a lost actor takes that actor's bundle."""

    def __init__(self, spec: RoleSpec):
        self.spec, self.options = spec, actor_options(spec)
        self.held: dict = {}  # actor handle → (group, bundle index)
        self.free: list[tuple] = []
        self.groups: list = []

    @property
    def key(self) -> str:
        return f"resources.placement.{self.spec.role}"

    def add(self, n: int, make: Callable[[dict], object]) -> list:
        if n <= 0:
            return []
        if not self.spec.strategy:
            return [make(dict(self.options)) for _ in range(n)]
        slots = self.free[:n]
        if len(slots) < n:  # a failed reserve leaves the free bundles as they were
            pg = reserve(self.key, [bundle(self.spec)] * (n - len(slots)), self.spec.strategy, self.spec.timeout_s)
            self.groups.append(pg)
            slots += [(pg, i) for i in range(n - len(slots))]
        self.free = self.free[n:]
        return [self._bind(make(in_group(self.options, *slot)), slot) for slot in slots]

    def _bind(self, actor, slot: tuple):
        self.held[actor] = slot
        return actor

    def replace(self, old, make: Callable[[dict], object]):
        slot = self.held.pop(old, None)
        return make(dict(self.options)) if slot is None else self._bind(make(in_group(self.options, *slot)), slot)

    def drop(self, actor) -> None:
        """`actor` was removed from the pool: its bundle is free, its group goes if it was the last one."""
        slot = self.held.pop(actor, None)
        if slot is None:
            return
        pg = slot[0]
        if any(g is pg for g, _ in self.held.values()):
            self.free.append(slot)
            return
        self.free = [s for s in self.free if s[0] is not pg]
        self.groups = [g for g in self.groups if g is not pg]
        remove(pg)

    def close(self) -> None:
        for pg in self.groups:
            remove(pg)
        self.held, self.free, self.groups = {}, [], []


class Placements:
    """A run's placement: slots per pool, the generators' and learner's options, and every group it
    made, all removed by close(). Placements() (no config) is plain scheduling everywhere."""

    def __init__(self, res: ResourcesConfig | None = None):
        self.res = res
        self.slots: list[RoleSlots] = []
        self.groups: list = []

    def spec(self, role: str, cpus: float, gpus: float | None = None) -> RoleSpec:
        return spec_for(self.res, role, cpus, gpus)

    def role(self, role: str, cpus: float, gpus: float | None = None) -> RoleSlots:
        slots = RoleSlots(self.spec(role, cpus, gpus))
        self.slots.append(slots)
        return slots

    def group(self, specs: list[RoleSpec]) -> list[dict]:
        """Options for one actor per spec; specs with the same strategy share one group."""
        out: list[dict | None] = [None if s.strategy else actor_options(s) for s in specs]
        for strategy in dict.fromkeys(s.strategy for s in specs if s.strategy):
            idx = [i for i, s in enumerate(specs) if s.strategy == strategy]
            label = " and ".join(dict.fromkeys(f"resources.placement.{specs[i].role}" for i in idx))
            pg = reserve(label, [bundle(specs[i]) for i in idx], strategy, specs[idx[0]].timeout_s)
            self.groups.append(pg)
            for j, i in enumerate(idx):
                out[i] = in_group(actor_options(specs[i]), pg, j)
        return out

    def trainers(self, generators: int, learners: int = 1) -> tuple[list[dict], list[dict]]:
        """Options for `generators` generators and `learners` learners: one group when their strategies match."""
        res = self.res or ResourcesConfig()
        gen = self.spec("generators", res.generator_cpus, res.generator_gpus)
        learner = self.spec("learner", res.learner_cpus, res.learner_gpus)
        opts = self.group([gen] * generators + [learner] * learners)
        return opts[:generators], opts[generators:]

    def close(self) -> None:
        for slots in self.slots:
            slots.close()
        for pg in self.groups:
            remove(pg)
        self.slots, self.groups = [], []
