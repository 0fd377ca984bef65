"""`rlpost validate` and `rlpost submit`: everything that can go wrong with a recipe found in seconds, and the
recipe handed to `ray job submit` with an upload that leaves run directories and caches behind.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlpost.config import RootConfig

# Never uploaded with a job: outputs, caches, environments and VCS data (the job gets the code and recipes only).
UPLOAD_EXCLUDES = [".git", ".venv", "venv", ".cache", "runs", "__pycache__", "*.egg-info", ".pytest_cache",
                   ".ruff_cache", "*.safetensors", "*.bin", "*.pt"]


def validate(config: RootConfig, offline: bool = False) -> list[str]:
    """Every check short of starting actors; returns one line per check that passed, raises on the first failure.

    Offline (for recipes meant for another machine, e.g. GPU ones): the schema and the reward plugins (importable,
    callable, reward.args accepted) only. Otherwise also the data (columns, prompt lengths), the model and tokenizer,
    the plugins' signatures and check hooks against the data, and the resources against the connected Ray cluster
    (resources.address or RAY_ADDRESS) or, with none, this machine. Plugins load in a child process with a time
    limit (rlpost.app.prepare.check_reward_plugins), so one that exits or hangs at import is an error naming it.
    """
    from rlpost.app.prepare import check_reward_plugins, prepare

    lines = [f"schema: ok ({len(config.reward.functions)} reward function(s), {config.run.steps} steps)"]
    if offline:
        check_reward_plugins(config, None)
        lines.append(f"reward plugins: importable and callable: {list(config.reward.functions)}")
        return lines
    setup = prepare(config)  # data, tokenizer, plugins checked against the data in a child, sampler sources
    columns = sorted(setup.train[0].columns)
    lines.append(f"data: {len(setup.train)} training prompts, {len(setup.eval)} eval prompts; columns "
                 f"{columns}")
    lines.append(f"reward plugins: {list(config.reward.functions)} accept those columns")
    lines += setup.notes  # the plugins' check hooks, e.g. which sandbox code_tests will use
    if setup.env is not None:
        offered = {name or "plain tools": sorted(entry["tools"]) for name, entry in setup.env.info.items()
                   if name or entry["tools"]}
        scored = sorted(setup.env.reward_names.values())
        lines.append(f"environments ({setup.env.format} format): tools {offered}"
                     + (f"; get_reward scores as {scored}" if scored else ""))
    lines.append(f"model and tokenizer: {setup.model_path}")
    lines.append(resources_line(config))
    return lines


def resources_line(config: RootConfig) -> str:
    """Check the recipe's resources against the connected cluster, or this machine when there is none."""
    from actors.build import actor_roles
    from actors.placement import check_feasible, local_resources, role_bundles

    roles = actor_roles(config)

    address = config.resources.address or os.environ.get("RAY_ADDRESS", "")
    needs: dict[str, float] = {}
    for bundles in role_bundles(roles).values():
        for bundle in bundles:
            for key, value in bundle.items():
                needs[key] = needs.get(key, 0.0) + value
    wanted = ", ".join(f"{v:g} {k}" for k, v in sorted(needs.items()))
    if address:
        import ray

        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        try:
            check_feasible(roles)
        finally:
            ray.shutdown()
        return f"resources: {wanted} fit the Ray cluster at {address}"
    machine = local_resources(roles, config.resources.local_num_cpus)
    check_feasible(roles, machine, [machine])
    return f"resources: {wanted} fit a local Ray on this machine ({machine.get('GPU', 0):g} GPU)"


def submit_command(recipe: str, overrides: list[str], config: RootConfig, address: str, python: str,
                   working_dir: str, wait: bool = True, cache_dir: str = "") -> list[str]:
    """The `ray job submit` command line for a recipe: working directory uploaded without outputs and caches, run
    directory made absolute (on the submitting machine's path, so a local or shared-filesystem cluster writes where
    the user looks), entrypoint run by `python` (the cluster's interpreter with rlpost installed)."""
    ray = str(Path(sys.executable).parent / "ray")
    output = Path(config.run.output_dir)
    extra = [] if output.is_absolute() else [f"run.output_dir={(Path.cwd() / output).resolve()}"]
    # `ray job stop` sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (read from the job's env): give the
    # step in flight and its checkpoint the time they need
    env_vars = {"RAY_JOB_STOP_WAIT_TIME_S": str(config.checkpoint.stop_grace_s)}
    if cache_dir:  # built artefacts (embedded model, JIT ops) are not uploaded; reuse them where the cluster sees them
        env_vars["RLPOST_CACHE_DIR"] = cache_dir
    runtime_env: dict[str, Any] = {"working_dir": working_dir, "excludes": UPLOAD_EXCLUDES, "env_vars": env_vars}
    # `ray job submit` quotes each word after '--' for the shell, so overrides with spaces or brackets survive
    return [ray, "job", "submit", f"--address={address}", f"--runtime-env-json={json.dumps(runtime_env)}",
            *([] if wait else ["--no-wait"]), "--", python, "-m", "rlpost.app.cli", "train", recipe, *overrides, *extra]


def submit(recipe: str, overrides: list[str], config: RootConfig, address: str, python: str, working_dir: str,
           wait: bool = True, cache_dir: str = "") -> int:
    """Run `ray job submit`; returns its exit code (non-zero when the job failed)."""
    command = submit_command(recipe, overrides, config, address, python, working_dir, wait, cache_dir)
    print(f"[rlpost] submitting to {address}: {shlex.join(command[command.index('--') + 1:])}", flush=True)
    return subprocess.run(command, env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")},
                          check=False).returncode


def default_address() -> str:
    """The job-submission address: RAY_ADDRESS when it is an http(s) URL, else the local dashboard's."""
    address = os.environ.get("RAY_ADDRESS", "")
    return address if address.startswith(("http://", "https://")) else "http://127.0.0.1:8265"
