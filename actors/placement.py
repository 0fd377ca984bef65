"""Ray start-up and one placement group per role, with a clear error (never an endless pending) when resources lack.

Disaggregated layout only: rollout engines, learner ranks and reward workers each get their own group of bundles,
spread over nodes when the strategy asks, and pinned to chosen nodes through custom resources (a node started with
`ray start --resources '{"rollout_node": 1}'`, a recipe asking for `resources.rollout_custom: {rollout_node: 1}`).
Leaves out: colocated fractional-GPU groups with sleep/wake (GPU issue).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from rlpost.config import ResourcesConfig, RootConfig


class PlacementError(RuntimeError):
    """The cluster cannot hold what the recipe asks for; the message says which role and what is missing."""


@dataclass
class RolePlacement:
    role: str
    group: Any  # ray.util.placement_group.PlacementGroup
    bundles: list[dict[str, float]]

    def options(self, index: int) -> dict[str, Any]:
        """`.options(...)` for the actor on bundle `index` of this role's group."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = self.bundles[index]
        custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
        return dict(num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0), resources=custom,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement_group=self.group, placement_group_bundle_index=index))

    def nodes(self) -> list[str]:
        """The node id each bundle was placed on."""
        from ray.util.placement_group import placement_group_table

        table = placement_group_table(self.group).get("bundles_to_node_id", {})
        return [table.get(i, "?") for i in range(len(self.bundles))]


def role_bundles(config: RootConfig) -> dict[str, list[dict[str, float]]]:
    """The bundles each role needs, from the recipe alone."""
    res = config.resources

    def bundle(cpus: float, gpus: float, custom: dict[str, float]) -> dict[str, float]:
        base = {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0} or {"CPU": 0.01}
        return {**base, **{k: float(v) for k, v in custom.items() if v > 0}}

    return {
        "rollout": [bundle(res.rollout_cpus, res.rollout_gpus * config.rollout.tensor_parallel_size,
                           res.rollout_custom)] * config.rollout.num_engines,
        "learner": [bundle(res.learner_cpus, res.learner_gpus, res.learner_custom)] * config.learner.world_size,
        "reward": [bundle(res.reward_cpus, 0, res.reward_custom)] * config.reward.num_workers,
    }


# What sets each resource of a role's bundle, and how many bundles the role has: named in every error.
_KEYS = {"rollout": ("resources.rollout_{}", "rollout.num_engines"),
         "learner": ("resources.learner_{}", "learner.world_size"),
         "reward": ("resources.reward_{}", "reward.num_workers")}


def _key(role: str, resource: str) -> str:
    suffix = {"CPU": "cpus", "GPU": "gpus"}.get(resource, f"custom.{resource}")
    return _KEYS[role][0].format(suffix)


def init_ray(res: ResourcesConfig, config: RootConfig, runtime_env: dict[str, Any]) -> None:
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
    ray.init(address="local", num_cpus=int(local_resources(config)["CPU"]), include_dashboard=False,
             runtime_env=runtime_env, log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)


def local_resources(config: RootConfig) -> dict[str, float]:
    """What a Ray started here offers: enough logical CPUs for every actor (resources.local_num_cpus overrides;
    they are placement slots, not cores) and the machine's GPUs."""
    needed = sum(b.get("CPU", 0) for bundles in role_bundles(config).values() for b in bundles)
    cpus = config.resources.local_num_cpus or max(os.cpu_count() or 1, int(needed + 0.999) + 1)
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        gpus = 0
    return {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}


def check_feasible(config: RootConfig, total: dict[str, float] | None = None,
                   nodes: list[dict[str, float]] | None = None) -> None:
    """Fail at once, naming the recipe keys, when the recipe cannot fit the cluster: a resource's total over all
    roles exceeds the cluster's, or one actor's bundle fits on no single node. Defaults to the connected cluster."""
    if total is None or nodes is None:
        import ray

        total = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    bundles = role_bundles(config)
    for resource in sorted({r for role in bundles.values() for b in role for r in b}):
        parts = [(role, len(role_list), role_list[0].get(resource, 0)) for role, role_list in bundles.items()
                 if role_list and role_list[0].get(resource, 0)]
        need = sum(count * each for _, count, each in parts)
        have = total.get(resource, 0)
        if need > have + 1e-9:
            terms = " + ".join(f"{_key(role, resource)}={each:g} x {_KEYS[role][1]}={count}"
                               for role, count, each in parts)
            raise PlacementError(f"the recipe needs {need:g} {resource} in all ({terms}) but the Ray cluster has "
                                 f"{have:g}; lower those keys or add nodes that have {resource}")
    for role, role_list in bundles.items():
        if role_list and not any(all(node.get(r, 0) + 1e-9 >= v for r, v in role_list[0].items()) for node in nodes):
            keys = ", ".join(f"{_key(role, r)}={v:g}" for r, v in role_list[0].items())
            raise PlacementError(f"one {role} actor needs {{{keys}}} on a single node, and no node of the Ray "
                                 f"cluster has that much (nodes: {[_short(n) for n in nodes]})")


def _short(node: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in node.items() if not k.startswith(("node:", "memory", "object_store"))}


def place_roles(config: RootConfig) -> dict[str, RolePlacement]:
    """Create and wait for one placement group per role; a timeout names the role and its bundles."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    check_feasible(config)
    placements = {}
    for role, bundles in role_bundles(config).items():
        group = placement_group(bundles, strategy=config.resources.strategy, name=f"rlpost-{role}")
        ready, _ = ray.wait([group.ready()], timeout=config.resources.placement_timeout_s)
        if not ready:
            remove_placement_group(group)
            raise PlacementError(
                f"placement group for role '{role}' ({len(bundles)} x {bundles[0]}, strategy "
                f"{config.resources.strategy}) was not satisfied within {config.resources.placement_timeout_s:.0f}s;"
                f" cluster resources: {ray.cluster_resources()}, available: {ray.available_resources()}")
        placements[role] = RolePlacement(role, group, bundles)
    return placements


def placement_report(placements: dict[str, RolePlacement]) -> dict[str, list[str]]:
    """Role -> node id of each of its actors (saved as placement.json in the run directory)."""
    return {role: placement.nodes() for role, placement in placements.items()}
