"""GPU weight sync through vLLM's native weight-transfer API (vLLM >= 0.25): NCCL between separate GPUs, CUDA IPC
when a learner rank and a vLLM worker share a GPU.

Both sides of the transport: `NativeVllmSender` is the trainer side, mixed into `LearnerWorker`; rank 0 sends, the
other ranks iterate the same source so ZeRO-3 gathers stay collective. `NativeVllmSync` is the driver side (the
`WeightSync` the loop calls). The receiver side is vLLM's own, reached through `RolloutWorker`'s
`init_weight_transfer_engine` / `update_weights` methods (actors/rollout.py). One trainer engine per rollout engine,
each with its own rendezvous port, because independent engines would otherwise claim the same NCCL ranks.
Imports neither torch, DeepSpeed nor vLLM at module level (the driver imports it). Not run in this repository's CI
(no GPU there): see README "GPU status".
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from actors.calls import call

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from rlpost.config import LearnerConfig


def free_port() -> int:
    """A TCP port free on this host right now."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class NativeVllmSender:
    """Trainer side of the native transports, mixed into `LearnerWorker` (which sets `rank`, `cfg` and `engine`)."""

    rank: int
    cfg: LearnerConfig
    engine: Any  # a DeepSpeed engine
    _transfer: list[Any]  # one vLLM trainer-side transfer engine per rollout engine

    def free_ports(self, count: int) -> list[int]:
        return [free_port() for _ in range(count)]

    def init_weight_transfer(self, backend: str, rollout_handles: list[ActorHandle], workers: list[int],
                             address: str, ports: list[int]) -> None:
        """Trainer side of vLLM's native weight transfer: one engine per rollout actor (every rank calls this)."""
        self._transfer = [self._transfer_engine(backend, handle, n_workers, address, port)
                          for handle, n_workers, port in zip(rollout_handles, workers, ports)]

    def replace_weight_transfer(self, slot: int, backend: str, handle: ActorHandle, n_workers: int, address: str,
                                port: int) -> None:
        """A replacement vLLM engine in `slot` joins the transfer (a fresh group on a fresh port; the dead
        engine's group is dropped, not torn down: its peer is gone)."""
        self._transfer[slot] = self._transfer_engine(backend, handle, n_workers, address, port)

    def _transfer_engine(self, backend: str, handle: ActorHandle, n_workers: int, address: str, port: int) -> Any:
        from vllm.distributed.weight_transfer import RayVLLMWeightSyncClient, WeightTransferTrainerFactory

        source = _zero3_source(self.engine.module) if self.cfg.zero_stage == 3 else None
        if source is None:
            from vllm.distributed.weight_transfer import ModuleSource

            source = ModuleSource(self.engine.module)
        info: Any
        if backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            info = NCCLTrainerInitInfo(master_address=address, master_port=port, world_size=1 + n_workers,
                                       rank=self.rank, packed=True)
        else:
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

            info = IPCTrainerInitInfo(rank=self.rank, packed=False)
        return WeightTransferTrainerFactory.trainer_init(info, client=RayVLLMWeightSyncClient(handle), source=source)

    def send_weights(self) -> int:
        """Every rollout engine gets this rank's part of the weights; returns the policy version sent."""
        for engine in self._transfer:
            engine.send_weights()
        return int(getattr(self, "version", 0))


def _zero3_source(module: Any) -> Any:
    """A vLLM WeightSource over a ZeRO-3 module: full shapes in metadata, one collective gather per parameter."""
    import deepspeed
    from vllm.distributed.weight_transfer import ParamMeta, WeightSource

    class Zero3Source(WeightSource):
        def metadata(self) -> list[Any]:
            return [ParamMeta(n, p.dtype, tuple(getattr(p, "ds_shape", p.shape))) for n, p in module.named_parameters()]

        def __iter__(self) -> Iterator[tuple[str, Any]]:
            for name, param in module.named_parameters():
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    tensor = param.data.clone()  # the gathered storage is freed when the context exits
                yield name, tensor

    return Zero3Source()


class NativeVllmSync:
    """`WeightSync` over vLLM's native transfer engines ('nccl' or 'ipc')."""

    def __init__(self, backend: str, learner_handles: list[ActorHandle], rollout_handles: list[ActorHandle],
                 timeout_s: float) -> None:
        if backend not in ("nccl", "ipc"):
            raise ValueError(f"sync.transport {backend!r}: the native vLLM transports are 'nccl' and 'ipc'")
        self.backend, self.timeout_s = backend, timeout_s
        self.learners, self.rollouts = learner_handles, rollout_handles
        workers, address, ports = self._endpoints(rollout_handles)
        call([h.init_weight_transfer.remote(backend, rollout_handles, workers, address, ports)
              for h in learner_handles], f"learner.init_weight_transfer ({backend})", timeout_s)

    def _endpoints(self, engines: list[ActorHandle]) -> tuple[list[int], str, list[int]]:
        """What the trainer side needs to meet `engines`: their worker counts, rank 0's address, a free port each."""
        workers = call([h.num_workers.remote() for h in engines], "rollout.num_workers", self.timeout_s)
        address, _ = call([self.learners[0].rendezvous.remote()], "learner[0].rendezvous", self.timeout_s)[0]
        ports = call([self.learners[0].free_ports.remote(len(engines))], "learner[0].free_ports", self.timeout_s)[0]
        return workers, address, ports

    def sync(self) -> dict[str, float]:
        start = time.perf_counter()
        version = call([h.send_weights.remote() for h in self.learners], "sync.send_weights (native vLLM)",
                       self.timeout_s)[0]
        call([h.set_weight_version.remote(version) for h in self.rollouts], "rollout.set_weight_version",
             self.timeout_s)
        return {"sync/send_s": time.perf_counter() - start, "sync/version": float(version)}

    def rejoin(self, slot: int) -> dict[str, float]:
        """The engine now in `slot` (a replacement; `rollout_handles` is updated in place by the rollout client)
        joins the transfer on a fresh port, then every engine gets the learner's current weights."""
        handle = self.rollouts[slot]
        (workers,), address, (port,) = self._endpoints([handle])
        call([h.replace_weight_transfer.remote(slot, self.backend, handle, workers, address, port)
              for h in self.learners], f"learner.replace_weight_transfer ({self.backend}, engine {slot})",
             self.timeout_s)
        return self.sync()
