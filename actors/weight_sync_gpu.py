"""GPU weight sync through vLLM's native weight-transfer API (vLLM >= 0.25): NCCL between separate GPUs, CUDA IPC
when a learner rank and a vLLM worker share a GPU.

The learner ranks own the trainer side (`LearnerWorker.init_weight_transfer` / `send_weights`); rank 0 sends, the
other ranks iterate the same source so ZeRO-3 gathers stay collective. One trainer engine per rollout engine, each
with its own rendezvous port, because independent engines would otherwise claim the same NCCL ranks.
Not run in this repository's CI (no GPU there): see README "GPU status".
"""

from __future__ import annotations

import time
from typing import Any

from actors.calls import call


class NativeVllmSync:
    """`WeightSync` over vLLM's native transfer engines ('nccl' or 'ipc')."""

    def __init__(self, backend: str, learner_handles: list[Any], rollout_handles: list[Any],
                 timeout_s: float) -> None:
        if backend not in ("nccl", "ipc"):
            raise ValueError(f"sync.transport {backend!r}: the native vLLM transports are 'nccl' and 'ipc'")
        self.backend, self.timeout_s = backend, timeout_s
        self.learners, self.rollouts = learner_handles, rollout_handles
        workers, address, ports = self._endpoints(rollout_handles)
        call([h.init_weight_transfer.remote(backend, rollout_handles, workers, address, ports)
              for h in learner_handles], f"learner.init_weight_transfer ({backend})", timeout_s)

    def _endpoints(self, engines: list[Any]) -> tuple[list[int], str, list[int]]:
        """What the trainer side needs to meet `engines`: their worker counts, rank 0's address, a free port each."""
        workers = call([h.num_workers.remote() for h in engines], "rollout.num_workers", self.timeout_s)
        address, _ = call([self.learners[0].rendezvous.remote()], "learner[0].rendezvous", self.timeout_s)[0]
        ports = call([self.learners[0].free_ports.remote(len(engines))], "learner[0].free_ports", self.timeout_s)[0]
        return workers, address, ports

    def sync(self) -> dict[str, float]:
        start = time.perf_counter()
        call([h.send_weights.remote() for h in self.learners], "sync.send_weights (native vLLM)", self.timeout_s)
        return {"sync/send_s": time.perf_counter() - start}

    def rejoin(self, slot: int) -> dict[str, float]:
        """The engine now in `slot` (a replacement; `rollout_handles` is updated in place by the rollout client)
        joins the transfer on a fresh port, then every engine gets the learner's current weights."""
        handle = self.rollouts[slot]
        (workers,), address, (port,) = self._endpoints([handle])
        call([h.replace_weight_transfer.remote(slot, self.backend, handle, workers, address, port)
              for h in self.learners], f"learner.replace_weight_transfer ({self.backend}, engine {slot})",
             self.timeout_s)
        return self.sync()
