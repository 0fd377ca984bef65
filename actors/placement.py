"""Ray start-up and one placement group per role, with a clear error (never an endless pending) when resources lack.

Disaggregated layout only: rollout engines, learner ranks and reward workers each get their own group of bundles,
spread over nodes when the strategy asks. Leaves out: colocated fractional-GPU groups with sleep/wake (GPU issue).
"""

from __future__ import annotations

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
        return dict(num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0),
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement_group=self.group, placement_group_bundle_index=index))


def role_bundles(config: RootConfig) -> dict[str, list[dict[str, float]]]:
    """The bundles each role needs, from the recipe alone."""
    res = config.resources

    def bundle(cpus: float, gpus: float) -> dict[str, float]:
        return {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0} or {"CPU": 0.01}

    return {
        "rollout": [bundle(res.rollout_cpus, res.rollout_gpus * config.rollout.tensor_parallel_size)]
        * config.rollout.num_engines,
        "learner": [bundle(res.learner_cpus, res.learner_gpus)] * config.learner.world_size,
        "reward": [bundle(res.reward_cpus, 0)] * config.reward.num_workers,
    }


def init_ray(res: ResourcesConfig, config: RootConfig, runtime_env: dict[str, Any]) -> None:
    """Connect to the cluster named by the recipe or RAY_ADDRESS, or start a local one big enough for the actors."""
    import ray

    if ray.is_initialized():
        return
    address = res.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    needed = sum(b.get("CPU", 0) for bundles in role_bundles(config).values() for b in bundles)
    num_cpus = res.local_num_cpus or max(os.cpu_count() or 1, int(needed + 0.999) + 1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=True, configure_logging=True, logging_level="WARNING")


def check_feasible(config: RootConfig) -> None:
    """Fail at once when the recipe's totals exceed the connected cluster's (before any actor starts)."""
    import ray

    total = ray.cluster_resources()
    for resource in ("CPU", "GPU"):
        need = sum(b.get(resource, 0) for bundles in role_bundles(config).values() for b in bundles)
        have = total.get(resource, 0)
        if need > have + 1e-9:
            raise PlacementError(
                f"the recipe needs {need:g} {resource} in all (rollout + learner + reward bundles) but the Ray "
                f"cluster has {have:g}; lower resources.*_{resource.lower()}s or the actor counts, or add nodes")


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
