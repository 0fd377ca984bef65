"""Feasibility of a recipe's placement against a cluster's resources, decided before any actor starts; every error
names the recipe keys that ask for too much."""

import pytest

from actors.build import actor_roles
from actors.placement import PlacementError, check_feasible, role_bundles
from rlpost.recipes import load_config

NODE = {"CPU": 3.0, "memory": 1e9}


def test_custom_resources_join_each_roles_bundle():
    config = load_config("quickstart", ["resources.rollout_custom={rollout_node: 1}",
                                        "resources.learner_custom={learner_node: 0.5}"])
    bundles = role_bundles(actor_roles(config))
    assert bundles["rollout"] == [{"CPU": 1.0, "rollout_node": 1.0}]
    assert bundles["learner"] == [{"CPU": 1.0, "learner_node": 0.5}] * 2 and bundles["reward"] == [{"CPU": 1.0}]
    check_feasible(actor_roles(config), {"CPU": 6, "rollout_node": 1, "learner_node": 1},
                   [{**NODE, "rollout_node": 1}, {**NODE, "learner_node": 1}])


def test_more_gpus_than_the_cluster_has_names_the_keys():
    config = load_config("quickstart", ["resources.learner_gpus=1"])
    with pytest.raises(PlacementError, match=r"needs 2 GPU in all \(resources.learner_gpus=1 x "
                                             r"learner.world_size=2\) but the Ray cluster has 1"):
        check_feasible(actor_roles(config), {"CPU": 8, "GPU": 1}, [{"CPU": 8, "GPU": 1}])


def test_a_bundle_that_fits_no_single_node_is_named():
    config = load_config("quickstart", ["resources.rollout_cpus=4"])
    with pytest.raises(PlacementError, match=r"one rollout actor needs \{resources.rollout_cpus=4\} on a single "
                                             "node"):
        check_feasible(actor_roles(config), {"CPU": 9}, [NODE, NODE, NODE])


def test_a_custom_resource_no_node_has():
    config = load_config("quickstart", ["resources.rollout_custom={rollout_node: 1}"])
    with pytest.raises(PlacementError, match=r"resources.rollout_custom.rollout_node=1 x rollout.num_engines=1"):
        check_feasible(actor_roles(config), {"CPU": 6}, [NODE, NODE])
