"""Weight sync from the learner group into the vLLM engines, behind one interface (`WeightSync.sync`).

Transports:
- `CpuObjectStoreSync`: rank 0 gathers full tensors (ZeRO-3 collectively), puts buckets in Ray's object store, and
  each engine loads them through its worker's `load_weights`. Used on CPU machines and in tests.
- `NativeVllmSync`: vLLM's native weight-transfer API (NCCL between separate GPUs, CUDA IPC when colocated); see
  actors/weight_sync_gpu.py. Written against the same interface; it needs GPUs to run.
Leaves out: delta/sparse sync and LoRA adapters.
"""

from __future__ import annotations

import time
from typing import Any

from actors.calls import call


class CpuObjectStoreSync:
    """Ship full weights through the object store in buckets (works everywhere, including across nodes)."""

    def __init__(self, learner_handles: list[Any], rollout_handles: list[Any], bucket_mb: int,
                 timeout_s: float) -> None:
        self.learners, self.rollouts = learner_handles, rollout_handles
        self.bucket_bytes, self.timeout_s = bucket_mb * 2**20, timeout_s

    def sync(self) -> dict[str, float]:
        start = time.perf_counter()
        per_rank = call([h.named_weights.remote(self.bucket_bytes) for h in self.learners],
                        "sync.gather (learner.named_weights)", self.timeout_s)
        refs = per_rank[0]
        gathered = time.perf_counter()
        loaded = call([h.load_weights.remote(refs) for h in self.rollouts], "sync.load (rollout.load_weights)",
                      self.timeout_s)
        return {"sync/gather_s": gathered - start, "sync/load_s": time.perf_counter() - gathered,
                "sync/buckets": float(len(refs)), "sync/tensors_loaded": float(min(loaded))}

    def rejoin(self, slot: int) -> dict[str, float]:
        """A replacement engine in `slot` needs nothing set up: a full sync gives it the learner's weights."""
        return self.sync()


def make_weight_sync(transport: str, learner_handles: list[Any], rollout_handles: list[Any], bucket_mb: int,
                     timeout_s: float) -> Any:
    """The transport named by the recipe ('auto' was resolved by the caller)."""
    if transport == "cpu":
        return CpuObjectStoreSync(learner_handles, rollout_handles, bucket_mb, timeout_s)
    from actors.weight_sync_gpu import NativeVllmSync

    return NativeVllmSync(transport, learner_handles, rollout_handles, timeout_s)
