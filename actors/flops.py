"""The learner's side of MFU: how many weight-matrix parameters its model has, and the device's peak FLOPs/s.

Peak: a GPU whose datasheet this module knows gets its dense tensor-core figure for the dtype; any other device is
measured once (a large matmul in the training dtype with the process's threads, best of a few) and the figure is
cached per machine, thread count and dtype in <cache>/peak_flops.json, so later runs and ranks reuse it. On CPUs the
measured peak is what a core sustains on one big matmul, so MFU there reads "share of what this machine can do".
Leaves out: sparsity figures, and clocks that throttle under a long load (the measurement takes about a second).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

import torch

from actors.runtime import cache_dir

# Dense FLOPs/s from NVIDIA's datasheets (SXM parts): bf16/fp16 tensor cores, and fp32 without TF32 (torch's default).
DATASHEET = {"H200": {"bfloat16": 989e12, "float32": 67e12}, "H100": {"bfloat16": 989e12, "float32": 67e12},
             "A100": {"bfloat16": 312e12, "float32": 19.5e12}, "L40S": {"bfloat16": 362e12, "float32": 91.6e12}}


def matmul_params(model: Any) -> int:
    """Parameters the forward multiplies by (every linear layer's weight, the output head included; not the input
    embedding, which is a lookup). Call it before ZeRO-3 partitions the weights."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOPs per second this device (one learner rank) could do at best in `dtype`."""
    name = _device_name(device)
    for part, peaks in DATASHEET.items():
        if device.type == "cuda" and part in name:
            return peaks["bfloat16" if dtype in (torch.bfloat16, torch.float16) else "float32"]
    key = f"{name}|threads={torch.get_num_threads()}|{dtype}"
    path = cache_dir() / "peak_flops.json"
    cached = _read(path)
    if key not in cached:
        cached = {**_read(path), key: measure_matmul_flops(device, dtype)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(cached, indent=1, sort_keys=True))
        os.replace(tmp, path)  # ranks measuring at once each write a whole file; the last one stays
    return float(cached[key])


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, repeats: int = 20) -> float:
    """Best FLOPs/s of a square matmul (4096 on a GPU, 1024 on a CPU) over `repeats` timed runs after a warm-up: the
    best, so a run that shared its core with a starting process does not lower it."""
    size = 4096 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def _read(path: Any) -> dict[str, float]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
