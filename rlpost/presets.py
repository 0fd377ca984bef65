"""Named algorithm presets: each seed paper's combination of the GRPO-family switches.

A preset sits between the schema defaults and the recipe (`algorithm.preset: dapo`), so anything a recipe or the
command line sets explicitly wins. Sources: ../shared/research/seed-algorithms.md §1 (DeepSeekMath GRPO, Dr. GRPO
from understand-r1-zero, DAPO from verl's recipe) and the GSPO paper's clip range. The README table is generated
from this dict (`rlpost presets --markdown`) and a test keeps the two in sync.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {  # DeepSeekMath: std-normalised group advantage, per-sequence token mean, k3 KL in the loss
        "advantage_std": "group",
        "loss_aggregation": "seq-mean-token-mean",
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "kl_coef": 0.04,
        "kl_estimator": "k3",
        "kl_in_reward": False,
    },
    "dr_grpo": {  # Dr. GRPO: no std division, sum over tokens divided by a constant (the generation cap), no KL
        "advantage_std": "none",
        "loss_aggregation": "constant",
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "kl_coef": 0.0,
    },
    "dapo": {  # DAPO: clip-higher, token-mean, dynamic sampling on accuracy, overlong shaping, no KL
        "advantage_std": "group",
        "loss_aggregation": "token-mean",
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.28,
        "kl_coef": 0.0,
        "entropy_coef": 0.0,
        "dynamic_sampling": True,
        "dynamic_sampling_metric": "accuracy",
        "overlong_shaping": True,
        "overlong_penalty": 1.0,
    },
    "gspo": {  # GSPO: sequence-level ratio (geometric mean of token ratios), tiny clip range, no KL
        "advantage_std": "group",
        "loss_aggregation": "seq-mean-token-mean",
        "ratio_level": "sequence",
        "clip_eps_low": 3e-4,
        "clip_eps_high": 4e-4,
        "kl_coef": 0.0,
    },
    "raft": {  # RAFT (GVM's policy_loss=vanilla): -A log pi on the accepted responses, A = max(reward, 0)
        "baseline": "raft",
        "advantage_std": "none",
        "policy_loss": "vanilla",
        "loss_aggregation": "token-mean",
        "kl_coef": 0.0,
    },
    "raft_pp": {  # RAFT++ (GVM's policy_loss=plusplus): the same advantage, PPO clip 0.2, dual clip 3, token-mean
        "baseline": "raft",
        "advantage_std": "none",
        "policy_loss": "ppo",
        "loss_aggregation": "token-mean",
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.2,
        "dual_clip_c": 3.0,
        "kl_coef": 0.0,
    },
}

PRESET_NOTES = {
    "grpo": "DeepSeekMath GRPO (arXiv 2402.03300)",
    "dr_grpo": "Dr. GRPO (arXiv 2503.20783, understand-r1-zero)",
    "dapo": "DAPO (arXiv 2503.14476, verl recipe/dapo)",
    "gspo": "GSPO (arXiv 2507.18071); use with updates_per_batch > 1",
    "raft": "RAFT (arXiv 2304.06767) as in GVM's code (arXiv 2505.02391, RLHFlow/GVM)",
    "raft_pp": "RAFT++ as in GVM's code (policy_loss=plusplus); use with updates_per_batch > 1",
}


def presets_markdown() -> str:
    """The README's preset table: one column per preset, one row per switch any preset sets."""
    keys: list[str] = []
    for values in PRESETS.values():
        keys += [k for k in values if k not in keys]
    names = list(PRESETS)
    lines = ["| key | " + " | ".join(f"`{n}`" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in keys:
        cells = [f"`{PRESETS[n][key]}`" if key in PRESETS[n] else "default" for n in names]
        lines.append(f"| `algorithm.{key}` | " + " | ".join(cells) + " |")
    lines.append("| source | " + " | ".join(PRESET_NOTES[n] for n in names) + " |")
    return "\n".join(lines)
