"""Process environment shared by every rlpost actor: accelerator choice, caches, quieter libraries.

Must run before deepspeed or vllm are imported (they read these variables at import time).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_CACHE = Path(__file__).resolve().parent.parent / ".cache"


def cache_dir() -> Path:
    """Where slow-to-build artefacts live (JIT extensions, the embedded model): RLPOST_CACHE_DIR or <repo>/.cache."""
    return Path(os.environ.get("RLPOST_CACHE_DIR", str(REPO_CACHE)))


def has_cuda() -> bool:
    """True when an NVIDIA driver is visible, decided without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def configure_process_env() -> None:
    """Set defaults (never overriding the user's) for DeepSpeed, torch extensions and tokenizers."""
    if not has_cuda():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # one line per step on the console: vLLM's per-sync INFO/WARNING lines and library deprecation noise go away
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")


FORWARDED = ("DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY",
             "HF_HUB_DISABLE_PROGRESS_BARS", "VLLM_LOGGING_LEVEL", "PYTHONWARNINGS", "RAY_AUTH_MODE",
             "RLPOST_INJECT_FAULT", "OMP_WAIT_POLICY")


def actor_env_vars(overlapped: bool = False) -> dict[str, str]:
    """The variables every actor needs, for Ray's runtime_env (after `configure_process_env`).

    `overlapped`: generation and training run at once (rollout.mode off sync). On CPUs they then share cores, and
    OpenMP threads that spin while they wait for work (libgomp's default) take the cores from each other: on 2
    cores one_step_off took 8.9 to 12.9 s a step with spinning threads, against 7.8 s in sync (README,
    'Asynchronous rollouts'). So the actors' threads sleep instead (OMP_WAIT_POLICY=PASSIVE), unless the user chose
    a policy.
    """
    env = {k: os.environ[k] for k in FORWARDED if k in os.environ}
    env["RLPOST_CACHE_DIR"] = str(cache_dir().resolve())
    if overlapped and not has_cuda():
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


_FAULT_CALLS: dict[str, int] = {}


def injected_fault(point: str) -> None:
    """Chaos testing: when RLPOST_INJECT_FAULT names this call point as `point:action[@n]` (e.g.
    'rollout.generate:hang', 'learner.train.rank1:exit@3', 'reward.score:exit@2', 'driver.step_done:hang@3'),
    misbehave at its n-th call in each process (default the first) the way clusters do: 'hang' never returns, 'exit'
    kills the process. A replacement actor counts afresh. Points: rollout.generate, learner.train.rank<i>,
    reward.score (actors), driver.step_done (the driver, right after a step's metrics are written and flushed: a
    test that kills the run there knows which steps it logged, however fast the machine) and sweep.trial_done (a
    sweep's driver, right after a trial ended). Unset (always, outside resilience tests), it does nothing."""
    spec = os.environ.get("RLPOST_INJECT_FAULT", "")
    if not spec or spec.split(":")[0] != point:
        return
    action, _, nth = (spec.split(":", 1)[1] if ":" in spec else "hang").partition("@")
    _FAULT_CALLS[point] = _FAULT_CALLS.get(point, 0) + 1
    if _FAULT_CALLS[point] != int(nth or 1):
        return
    if action == "exit":
        os._exit(17)
    import time

    while True:
        time.sleep(3600)
