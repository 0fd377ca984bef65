"""End-to-end helpers: run the `rlpost` console script as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RLPOST = str(Path(sys.executable).parent / "rlpost")


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run([RLPOST, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
