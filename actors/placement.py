"""Ray start-up and one placement group per role, with a clear error (never an endless pending) when resources lack.

The roles come from the wiring (actors/build.py `actor_roles`: rollout engines, learner ranks, reward workers); this
module knows none by name. Disaggregated layout only: each role gets its own group of bundles, spread over nodes
when the strategy asks, and pinned to chosen nodes through custom resources (a node started with
`ray start --resources '{"rollout_node": 1}'`, a recipe asking for `resources.rollout_custom: {rollout_node: 1}`).
Leaves out: colocated fractional-GPU groups with sleep/wake (GPU issue).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlpost.config import ResourcesConfig


class PlacementError(RuntimeError):
    """The cluster cannot hold what the recipe asks for; the message says which role and what is missing."""


@dataclass
class RolePlacement:
    role: str
    group: Any  # ray.util.placement_group.PlacementGroup
    bundles: list[dict[str, float]]
    offset: int = 0  # index of the role's first bundle in `group` (a sweep trial's group holds every role)

    def options(self, index: int) -> dict[str, Any]:
        """`.options(...)` for the actor on bundle `index` of this role's group."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = self.bundles[index]
        custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
        return dict(num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0), resources=custom,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement_group=self.group, placement_group_bundle_index=self.offset + index))

    def nodes(self) -> list[str]:
        """The node id each bundle was placed on."""
        from ray.util.placement_group import placement_group_table

        table = placement_group_table(self.group).get("bundles_to_node_id", {})
        return [table.get(self.offset + i, "?") for i in range(len(self.bundles))]


TRIAL_HEAD = {"CPU": 1.0}  # a sweep trial's own bundle (its driver), before the roles' bundles in its group
_host: list[Any] = []  # the placement group of the sweep trial this process drives, when it is one


def host_in_group(group: Any) -> None:
    """Place this process's roles in `group` (a Ray Tune trial's, laid out by `trial_bundles`) instead of groups
    of their own: the sweep reserved the resources when it started the trial."""
    _host[:] = [group]


def trial_bundles(roles: Sequence[Role]) -> list[dict[str, float]]:
    """A sweep trial's bundles: its driver's, then every role's, in the order `place_roles` reads them."""
    return [dict(TRIAL_HEAD)] + [b for bundles in role_bundles([r for r in roles if r.count]).values()
                                 for b in bundles]


@dataclass(frozen=True)
class Role:
    """One kind of actor of a run: how many, and what each one needs. Its resources are set by the recipe keys
    `resources.<name>_cpus`, `_gpus` and `_custom`, and its count by `count_key`; errors name those keys."""

    name: str
    count: int
    count_key: str
    cpus: float
    gpus: float
    custom: Mapping[str, float]

    def bundle(self) -> dict[str, float]:
        """One actor's placement bundle (a CPU-less, GPU-less actor still takes a sliver of CPU to be placed)."""
        base = {k: v for k, v in (("CPU", self.cpus), ("GPU", self.gpus)) if v > 0} or {"CPU": 0.01}
        return {**base, **{k: float(v) for k, v in self.custom.items() if v > 0}}

    def key(self, resource: str) -> str:
        """The recipe key that sets `resource` in this role's bundle."""
        return f"resources.{self.name}_" + {"CPU": "cpus", "GPU": "gpus"}.get(resource, f"custom.{resource}")


def role_bundles(roles: Sequence[Role]) -> dict[str, list[dict[str, float]]]:
    """The bundles each role needs."""
    return {role.name: [role.bundle()] * role.count for role in roles}


def init_ray(res: ResourcesConfig, roles: Sequence[Role], runtime_env: dict[str, Any]) -> None:
    """Connect to the cluster named by the recipe or RAY_ADDRESS, or start a local one big enough for the actors."""
    import ray

    if ray.is_initialized():
        return
    address = res.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        # Inside a Ray job whose runtime env already sets env vars (rlpost submit, or the user's own), merge ours
        # into it instead of failing on the overlap.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=int(local_resources(roles, res.local_num_cpus)["CPU"]), include_dashboard=False,
             runtime_env=runtime_env, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)


def local_resources(roles: Sequence[Role], local_num_cpus: int = 0) -> dict[str, float]:
    """What a Ray started here offers: enough logical CPUs for every actor (resources.local_num_cpus overrides;
    they are placement slots, not cores) and the machine's GPUs."""
    needed = sum(b.get("CPU", 0) for bundles in role_bundles(roles).values() for b in bundles)
    cpus = local_num_cpus or max(os.cpu_count() or 1, int(needed + 0.999) + 1)
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        gpus = 0
    return {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}


def check_feasible(roles: Sequence[Role], total: dict[str, float] | None = None,
                   nodes: list[dict[str, float]] | None = None) -> None:
    """Fail at once, naming the recipe keys, when the recipe cannot fit the cluster: a resource's total over all
    roles exceeds the cluster's, or one actor's bundle fits on no single node. Defaults to the connected cluster."""
    if total is None or nodes is None:
        import ray

        total = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    present = [role for role in roles if role.count]
    for resource in sorted({r for role in present for r in role.bundle()}):
        parts = [(role, role.bundle().get(resource, 0)) for role in present if role.bundle().get(resource, 0)]
        need = sum(role.count * each for role, each in parts)
        have = total.get(resource, 0)
        if need > have + 1e-9:
            terms = " + ".join(f"{role.key(resource)}={each:g} x {role.count_key}={role.count}"
                               for role, each in parts)
            raise PlacementError(f"the recipe needs {need:g} {resource} in all ({terms}) but the Ray cluster has "
                                 f"{have:g}; lower those keys or add nodes that have {resource}")
    for role in present:
        if not any(all(node.get(r, 0) + 1e-9 >= v for r, v in role.bundle().items()) for node in nodes):
            keys = ", ".join(f"{role.key(r)}={v:g}" for r, v in role.bundle().items())
            raise PlacementError(f"one {role.name} actor needs {{{keys}}} on a single node, and no node of the Ray "
                                 f"cluster has that much (nodes: {[_short(n) for n in nodes]})")


def _short(node: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in node.items() if not k.startswith(("node:", "memory", "object_store"))}


def place_roles(roles: Sequence[Role], res: ResourcesConfig) -> dict[str, RolePlacement]:
    """Create and wait for one placement group per role that has actors (resources.strategy,
    resources.placement_timeout_s); a timeout names the role and its bundles."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    if _host:
        offset, placements = 1, {}
        for role, bundles in role_bundles([r for r in roles if r.count]).items():
            placements[role] = RolePlacement(role, _host[0], bundles, offset)
            offset += len(bundles)
        return placements
    check_feasible(roles)
    placements = {}
    for role, bundles in role_bundles([r for r in roles if r.count]).items():
        group = placement_group(bundles, strategy=res.strategy, name=f"rlpost-{role}")
        ready, _ = ray.wait([group.ready()], timeout=res.placement_timeout_s)
        if not ready:
            remove_placement_group(group)
            raise PlacementError(
                f"placement group for role '{role}' ({len(bundles)} x {bundles[0]}, strategy "
                f"{res.strategy}) was not satisfied within {res.placement_timeout_s:.0f}s;"
                f" cluster resources: {ray.cluster_resources()}, available: {ray.available_resources()}")
        placements[role] = RolePlacement(role, group, bundles)
    return placements


def placement_report(placements: dict[str, RolePlacement]) -> dict[str, list[str]]:
    """Role -> node id of each of its actors (saved as placement.json in the run directory)."""
    return {role: placement.nodes() for role, placement in placements.items()}
