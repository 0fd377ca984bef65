"""Import hygiene: the driver-side packages load without Ray, vLLM or DeepSpeed (heavy imports live in actors/)."""

import subprocess
import sys


def test_rlpost_and_rewards_import_without_heavy_dependencies():
    code = ("import sys, rlpost.app.cli, rlpost.app.run, rlpost.app.prepare, rlpost.app.commands, rlpost.app.evaluate, "
            "rlpost.loop, rlpost.collect, rlpost.rollouts, rlpost.prepass, rlpost.config, rlpost.recipes, "
            "rlpost.advantages, rewards, rewards.synthetic, rewards.math; "
            "heavy = [m for m in ('ray', 'vllm', 'deepspeed') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
