"""Weight sync from the learner group into the vLLM engines, behind one interface (`rlpost.types.WeightSync`).

Transports:
- object store (this module), used on CPU machines and in tests: rank 0 gathers full tensors (ZeRO-3
  collectively) and puts them in Ray's object store in buckets (`ObjectStoreSender`, the trainer side, mixed into
  `LearnerWorker`); `CpuObjectStoreSync` (the driver side) hands the bucket refs to every engine, whose worker
  streams them into vLLM's in-place reload (the receiver side, `WeightLoadExtension` in actors/rollout.py).
- native vLLM (actors/weight_sync_gpu.py): vLLM's weight-transfer API, NCCL between separate GPUs and CUDA IPC
  when colocated; written against the same interface, it needs GPUs to run.
`make_weight_sync` picks one. The driver imports this module: it imports neither torch, DeepSpeed nor vLLM.
LoRA runs send the adapter only (`AdapterSync`), or merged weights through the object store.
Leaves out: delta/sparse sync.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from actors.calls import call

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from rlpost.types import WeightSync


class ObjectStoreSender:
    """Trainer side of the object-store transport, mixed into `LearnerWorker` (which sets `rank` and `engine`)."""

    rank: int
    engine: Any  # a DeepSpeed engine

    version: int  # policy version: train calls so far (LearnerWorker)

    def named_weights(self, bucket_bytes: int) -> tuple[int, list[Any], int]:
        """The policy version, its full weights in buckets of about `bucket_bytes` put in the object store, and their
        size in bytes (rank 0 returns the refs, the others none).

        Every rank must call it: under ZeRO-3 each parameter is gathered collectively.
        """
        tensors = self._iter_full_params()
        if self.rank != 0:
            for _ in tensors:  # the gathers are collective: take part, keep nothing
                pass
            return self.version, [], 0
        refs, total = put_buckets(tensors, bucket_bytes)
        return self.version, refs, total

    def adapter_weights(self, bucket_bytes: int) -> tuple[int, list[Any], dict[str, Any], int]:
        """LoRA: the policy version, the adapter's tensors (PEFT's names) in object-store buckets, its PEFT config and
        its size in bytes (rank 0; the others return no refs). Every rank calls it (ZeRO-3 gathers)."""
        from actors.lora import adapter_config, adapter_state

        state = adapter_state(self.engine.module)
        if self.rank != 0:
            return self.version, [], {}, 0
        refs, total = put_buckets(iter(state.items()), bucket_bytes)
        return self.version, refs, adapter_config(self.engine.module), total

    def _iter_full_params(self) -> Iterator[tuple[str, Any]]:
        """(HF name, full CPU tensor) for every parameter, gathering ZeRO-3 partitions one at a time; a LoRA model
        gives its base weights with the adapter merged in (new tensors: the base is not changed)."""
        import deepspeed

        from actors.lora import is_peft, merged_params

        module = self.engine.module
        if is_peft(module):
            yield from merged_params(module)
            return
        for name, param in module.named_parameters():
            if hasattr(param, "ds_id"):
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    yield name, param.detach().to("cpu", copy=True)
            else:
                yield name, param.detach().to("cpu", copy=True)


def put_buckets(tensors: Iterator[tuple[str, Any]], bucket_bytes: int) -> tuple[list[Any], int]:
    """(name, tensor) pairs put in the object store in buckets of about `bucket_bytes`: the refs and the bytes."""
    import ray

    refs, bucket, size, total = [], [], 0, 0
    for name, tensor in tensors:
        bucket.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        total += tensor.numel() * tensor.element_size()
        if size >= bucket_bytes:
            refs.append(ray.put(bucket))
            bucket, size = [], 0
    if bucket:
        refs.append(ray.put(bucket))
    return refs, total


class CpuObjectStoreSync:
    """Ship full weights through the object store in buckets (works everywhere, including across nodes)."""

    def __init__(self, learner_handles: list[ActorHandle], rollout_handles: list[ActorHandle], bucket_mb: int,
                 timeout_s: float) -> None:
        self.learners, self.rollouts = learner_handles, rollout_handles
        self.bucket_bytes, self.timeout_s = bucket_mb * 2**20, timeout_s

    def sync(self) -> dict[str, float]:
        start = time.perf_counter()
        version, refs, size, config = self._gather()
        gathered = time.perf_counter()
        loaded = self._load(refs, version, config)
        return {"sync/gather_s": gathered - start, "sync/load_s": time.perf_counter() - gathered,
                "sync/buckets": float(len(refs)), "sync/tensors_loaded": float(min(loaded)),
                "sync/version": float(version), "sync/bytes": float(size)}

    def _gather(self) -> tuple[int, list[Any], int, dict[str, Any]]:
        """(policy version, bucket refs, bytes, what else the engines need) from every learner rank."""
        version, refs, size = call([h.named_weights.remote(self.bucket_bytes) for h in self.learners],
                                   "sync.gather (learner.named_weights)", self.timeout_s)[0]
        return version, refs, size, {}

    def _load(self, refs: list[Any], version: int, config: dict[str, Any]) -> list[int]:
        return call([h.load_weights.remote(refs, version) for h in self.rollouts],
                    "sync.load (rollout.load_weights)", self.timeout_s)

    def rejoin(self, slot: int) -> dict[str, float]:
        """A replacement engine in `slot` needs nothing set up: a full sync gives it the learner's weights."""
        return self.sync()


class AdapterSync(CpuObjectStoreSync):
    """LoRA: ship only the adapter through the object store; each engine serves the base with the new adapter."""

    def _gather(self) -> tuple[int, list[Any], int, dict[str, Any]]:
        version, refs, config, size = call([h.adapter_weights.remote(self.bucket_bytes) for h in self.learners],
                                           "sync.gather (learner.adapter_weights)", self.timeout_s)[0]
        return version, refs, size, config

    def _load(self, refs: list[Any], version: int, config: dict[str, Any]) -> list[int]:
        return call([h.load_adapter.remote(refs, version, config) for h in self.rollouts],
                    "sync.load (rollout.load_adapter)", self.timeout_s)


def make_weight_sync(transport: str, learner_handles: list[ActorHandle], rollout_handles: list[ActorHandle],
                     bucket_mb: int, timeout_s: float, lora: str = "") -> WeightSync:
    """The transport named by the recipe ('auto' was resolved by the caller); `lora` ('adapter' or 'merged', '' for
    full weights): a LoRA run sends its adapter, or its merged weights, through the object store whatever the
    transport (an adapter is small; merged weights are computed on the fly on the CPU).

    `rollout_handles` is the rollout client's own list, which it updates in place when it replaces an engine.
    """
    if lora == "adapter":
        return AdapterSync(learner_handles, rollout_handles, bucket_mb, timeout_s)
    if transport == "cpu" or lora == "merged":
        return CpuObjectStoreSync(learner_handles, rollout_handles, bucket_mb, timeout_s)
    from actors.weight_sync_gpu import NativeVllmSync

    return NativeVllmSync(transport, learner_handles, rollout_handles, timeout_s)
