"""Golden vectors for group advantages (seed-algorithms.md §10.1) and the conventions around them."""

import pytest

from rlpost.advantages import batch_advantages, centred_rewards, group_advantages


def test_grpo_unbiased_std_golden():
    adv = group_advantages([1, 0, 0, 0], std_normalize=True, ddof=1, eps=1e-6)
    assert adv == pytest.approx([1.499997, -0.499999, -0.499999, -0.499999], abs=1e-6)


def test_dr_grpo_mean_only_golden():
    assert group_advantages([1, 0, 0, 0], std_normalize="none") == pytest.approx([0.75, -0.25, -0.25, -0.25])
    assert group_advantages([1, 0, 0, 0], std_normalize=False) == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_singleton_rules():
    assert group_advantages([1.0], singleton_rule="raw") == [1.0]  # verl: mean 0, std 1
    assert group_advantages([1.0], singleton_rule="zero") == [0.0]
    assert group_advantages([1.0], singleton_rule="drop") is None
    with pytest.raises(ValueError, match="singleton_rule"):
        group_advantages([1.0], singleton_rule="nope")


def test_population_std_differs_from_unbiased():
    biased = group_advantages([1, 0], ddof=0, eps=0.0)
    unbiased = group_advantages([1, 0], ddof=1, eps=0.0)
    assert biased == pytest.approx([1.0, -1.0])
    assert unbiased == pytest.approx([0.70710678, -0.70710678])


def test_rloo_baseline_is_mean_of_the_others():
    # r = [1, 0, 0, 0]: baselines 0, 1/3, 1/3, 1/3
    assert centred_rewards([1, 0, 0, 0], "rloo") == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])
    # RLOO equals the mean-centred value scaled by n/(n-1)
    mean_c = centred_rewards([3, 1, 4, 1, 5], "mean")
    assert centred_rewards([3, 1, 4, 1, 5], "rloo") == pytest.approx([c * 5 / 4 for c in mean_c])
    assert group_advantages([2, 0], baseline="rloo", std_normalize="none") == pytest.approx([2.0, -2.0])


def test_variable_group_sizes():
    values, _ = batch_advantages([[1, 0], [1, 0, 0, 0], [0.5]], std_normalize="none")
    assert values == [pytest.approx([0.5, -0.5]), pytest.approx([0.75, -0.25, -0.25, -0.25]), [0.5]]


def test_batch_std_uses_the_std_of_all_rewards_of_the_step():
    rewards = [[1, 0, 0, 0], [1, 1, 1, 0]]
    values, _ = batch_advantages(rewards, std_normalize="batch", ddof=1, eps=0.0)
    flat = [1, 0, 0, 0, 1, 1, 1, 0]
    mean = sum(flat) / 8
    std = (sum((r - mean) ** 2 for r in flat) / 7) ** 0.5
    assert values[0] == pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std])
    assert values[1] == pytest.approx([0.25 / std, 0.25 / std, 0.25 / std, -0.75 / std])


def test_dropped_singletons_are_counted():
    values, metrics = batch_advantages([[1.0], [1, 0]], singleton_rule="drop")
    assert values[0] is None and len(values[1]) == 2
    assert metrics["adv/singletons_dropped"] == 1


def test_constant_group_has_zero_advantage_and_is_counted():
    values, metrics = batch_advantages([[1, 1, 1], [1, 0, 0]], std_normalize=True, ddof=1, eps=1e-6,
                                       singleton_rule="raw")
    assert values[0] == [0.0, 0.0, 0.0]
    assert metrics["adv/zero_signal_group_frac"] == 0.5
    assert sum(values[1]) == pytest.approx(0.0, abs=1e-9)


def test_raft_advantage_is_the_clipped_reward_of_each_response():
    """RAFT / RAFT++ (GVM's adv_estimator=raft): max(reward, 0), no baseline, whatever the group; with a 0/1 reward
    only accepted responses carry a gradient, and a group of one is just its response."""
    assert group_advantages([1.0, 0.0, -0.5, 2.0], baseline="raft", std_normalize="none") == [1.0, 0.0, 0.0, 2.0]
    assert group_advantages([0.7], baseline="raft", std_normalize="none", singleton_rule="drop") == [0.7]
    advantages, metrics = batch_advantages([[1, 1, 1], [0, 1]], baseline="raft", std_normalize="none")
    assert advantages == [[1.0, 1.0, 1.0], [0.0, 1.0]]  # an all-correct group still trains (unlike GRPO)
    with pytest.raises(ValueError, match="advantage_std to 'none'"):
        group_advantages([1.0, 0.0], baseline="raft", std_normalize="group")
