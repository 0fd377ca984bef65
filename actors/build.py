"""All wiring: Ray start-up, placement, the actors, the clients the driver calls and the weight sync between them.

`start_cluster` gives the driver a `Cluster` whose `workers` implement the Protocols of rlpost/types.py over Ray
actors; `local_engines` gives `rlpost eval` the rollout and reward interfaces over in-process objects. Each client
wraps a role's actor handles behind typed methods; every call waits with a timeout and raises a named error saying
which actor and which phase (actors/calls.py). A vLLM engine or reward worker that dies is replaced in its placement
bundle (a new engine rejoins the weight transfer first) and the call retried; a learner rank that dies ends the call
with ActorDiedError (rlpost/app/run.py stops the run and names the last checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from actors.calls import ActorDiedError, call, replace_dead
from actors.placement import Role, RolePlacement, place_roles
from actors.weight_sync import make_weight_sync
from rlpost.config import RewardConfig, RootConfig
from rlpost.losses import LossSpec
from rlpost.pipeline import rollout_lag
from rlpost.types import (
    CompactShard,
    GenerationRequest,
    RewardRequest,
    RewardResult,
    RolloutEngine,
    Sample,
    Workers,
)

if TYPE_CHECKING:  # the actor modules import torch, vLLM or DeepSpeed; the driver imports them only when it builds
    from actors.env_host import EnvSettings
    from actors.reward import RewardSettings, RewardWorker
    from actors.rollout import RolloutWorker


class RolloutClient:
    """Spreads generation requests over the vLLM engines (round-robin by prompt). An engine whose actor dies is
    replaced through `factory(slot)` (in place in `handles`, the list the weight sync also holds), joined to the
    weight transfer and given the learner's current weights through `rejoin(slot)`, and asked again; `replaced`
    counts it."""

    def __init__(self, handles: list[Any], timeout_s: float, factory: Callable[[int], Any] | None = None,
                 rejoin: Callable[[int], Any] | None = None) -> None:
        self.handles, self.timeout_s, self.factory, self.rejoin = handles, timeout_s, factory, rejoin
        self.replaced = 0

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        k = len(self.handles)
        parts = [(i, requests[i::k]) for i in range(k) if requests[i::k]]
        sent = [(self.handles[i], self.handles[i].generate.remote(p)) for i, p in parts]
        merged: list[list[Sample]] = [[] for _ in requests]
        for (i, part), (handle, ref) in zip(parts, sent):
            try:
                result = call([ref], "rollout.generate", self.timeout_s)[0]
            except ActorDiedError:
                if self.factory is None or self.rejoin is None:
                    raise
                self._replace(i, handle)
                result = call([self.handles[i].generate.remote(part)],
                              f"rollout.generate (engine {i} replaced after it died)", self.timeout_s)[0]
            for j, samples in enumerate(result):
                merged[i + j * k] = samples
        return merged

    def _replace(self, slot: int, dead: Any) -> None:
        assert self.factory is not None and self.rejoin is not None
        replace_dead(self.handles, slot, dead, self.factory, f"vLLM engine {slot}", self.timeout_s,
                     "it is replaced by a new one with the learner's weights")
        self.rejoin(slot)
        self.replaced += 1

    def sequence_logprobs(self, sequences: list[list[int]], base: bool = False) -> list[list[list[float]]]:
        """Per engine, the logprobs of the sequences (the probe compares every engine)."""
        return call([h.sequence_logprobs.remote(sequences, base) for h in self.handles], "rollout.sequence_logprobs",
                    self.timeout_s)


class LearnerClient:
    """Fans a step out to every learner rank and adds up their metric sums."""

    def __init__(self, handles: list[Any], timeout_s: float) -> None:
        self.handles, self.timeout_s = handles, timeout_s

    def train(self, shards: list[CompactShard], loss: LossSpec, micro_batches: int,
              max_tokens_per_micro: int = 0) -> dict[str, float]:
        return self.submit_train(shards, loss, micro_batches, max_tokens_per_micro)()

    def submit_train(self, shards: list[CompactShard], loss: LossSpec, micro_batches: int,
                     max_tokens_per_micro: int = 0) -> Callable[[], dict[str, float]]:
        """Every rank's train call queued (Ray runs one caller's calls to an actor in order); the result waits."""
        import ray

        refs = [h.train.remote(ray.put(s), loss, micro_batches, max_tokens_per_micro)
                for h, s in zip(self.handles, shards)]

        def wait() -> dict[str, float]:
            total: dict[str, float] = {}
            for metrics in call(refs, "learner.train", self.timeout_s):
                for key, value in metrics.items():
                    total[key] = (max(total.get(key, value), value) if key.endswith("_max")
                                  else total.get(key, 0) + value)
            return total

        return wait

    def sequence_logprobs(self, sequences: list[list[int]], base: bool = False) -> list[list[float]]:
        return call([h.sequence_logprobs.remote(sequences, base) for h in self.handles], "learner.sequence_logprobs",
                    self.timeout_s)[0]

    def reference_kl(self, sequences: list[list[int]], prompt_lens: list[int], estimator: str) -> list[float]:
        return call([h.reference_kl.remote(sequences, prompt_lens, estimator) for h in self.handles],
                    "learner.reference_kl", self.timeout_s)[0]

    def grad_norms(self, sequences: list[list[int]], prompt_lens: list[int], kind: str) -> list[float]:
        """GVM's per-sample gradient norms (every rank runs them: ZeRO-3 forwards are collective)."""
        return call([h.grad_norms.remote(sequences, prompt_lens, kind) for h in self.handles],
                    "learner.grad_norms", self.timeout_s)[0]

    def has_reference(self) -> list[bool]:
        """Per rank, whether a reference model is loaded (tests check none is when kl_coef is 0)."""
        return call([h.has_reference.remote() for h in self.handles], "learner.has_reference", self.timeout_s)

    def save_hf(self, path: str, merged: bool = False) -> None:
        call([h.save_hf.remote(path, merged) for h in self.handles], "learner.save_hf", self.timeout_s)

    def save_state(self, path: str) -> None:
        call([h.save_state.remote(path) for h in self.handles], "learner.save_state", self.timeout_s)

    def load_state(self, path: str) -> None:
        call([h.load_state.remote(path) for h in self.handles], "learner.load_state", self.timeout_s)


class RewardClient:
    """Cuts a reward request into chunks of whole prompt groups (about `chunk_size` completions), deals them to the
    workers in turn and joins the results in order. A worker actor that dies (OOM killer, node loss) is replaced
    through `factory(slot)` and its chunks are scored again on the new one; the replacement is counted."""

    def __init__(self, handles: list[Any], timeout_s: float, chunk_size: int, worst_call_s: float,
                 factory: Callable[[int], Any] | None = None) -> None:
        self.handles, self.timeout_s, self.chunk_size = handles, timeout_s, chunk_size
        self.worst_call_s = worst_call_s  # one chunk's worst case: retries and one-by-one isolation included
        self.factory = factory
        self.env_timeout_s = 0.0  # environment.timeout_s when the recipe has environments

    def score(self, request: RewardRequest) -> RewardResult:
        chunks = [request.slice(a, b) for a, b in request.chunks(self.chunk_size)]
        k = len(self.handles)
        sent = [(self.handles[i % k], self.handles[i % k].score.remote(c)) for i, c in enumerate(chunks)]
        # Each worker enforces its own per-call timeouts; the driver's bound only guards against a dead actor.
        bound = self.timeout_s + -(-len(chunks) // k) * self.worst_call_s
        merged, replaced = RewardResult(rewards=[], components={}), 0
        for i, (handle, ref) in enumerate(sent):
            try:
                result = call([ref], "reward.score", bound)[0]
            except ActorDiedError:
                if self.factory is None:
                    raise
                slot = i % k
                if self.handles[slot] is handle:  # not replaced yet by an earlier chunk of the same worker
                    replace_dead(self.handles, slot, handle, self.factory, f"reward worker {slot}", self.timeout_s,
                                 "replaced, its chunks scored again")
                    replaced += 1
                result = call([self.handles[slot].score.remote(chunks[i])],
                              f"reward.score (worker {slot} replaced after it died)", bound)[0]
            merged.extend(result)
        merged.replaced_workers = replaced
        return merged


    # ---- environments of multi-turn episodes: episode `key` lives on worker key % k ----------------------------------
    def env_open(self, items: list[tuple[int, str, dict[str, Any]]]) -> list[tuple[str | None, str]]:
        return self._env("env_open", items, lambda item: item[0])

    def env_step(self, items: list[tuple[int, str, dict[str, Any], str | None]]
                 ) -> list[tuple[str | None, str, str]]:
        return self._env("env_step", items, lambda item: item[0])

    def env_finish(self, keys: list[int]) -> list[tuple[float | None, str]]:
        return self._env("env_finish", keys, lambda key: key)

    def _env(self, method: str, items: list[Any], key_of: Callable[[Any], int]) -> list[Any]:
        """Send each worker its episodes' items in one call (all workers at once) and join the answers in order.
        Each worker bounds every reset and call by environment.timeout_s; this bound only guards a dead actor."""
        k = len(self.handles)
        slots = [[i for i, item in enumerate(items) if key_of(item) % k == w] for w in range(k)]
        sent = [(w, getattr(self.handles[w], method).remote([items[i] for i in slots[w]])) for w in range(k)
                if slots[w]]
        out: list[Any] = [None] * len(items)
        for w, ref in sent:
            bound = self.timeout_s + 4 * len(slots[w]) * (self.env_timeout_s + 30.0)
            for i, answer in zip(slots[w], call([ref], f"reward.{method} (environments)", bound)[0]):
                out[i] = answer
        return out


@dataclass
class Cluster:
    """What `start_cluster` built: the driver's workers, and the actor handles and placements behind them."""

    workers: Workers
    rollout_handles: list[Any]
    learner_handles: list[Any]
    placements: dict[str, RolePlacement]
    transport: str

    @property
    def rollout(self) -> RolloutClient:
        return cast(RolloutClient, self.workers.rollout)

    @property
    def learner(self) -> LearnerClient:
        return cast(LearnerClient, self.workers.learner)

    @property
    def reward(self) -> RewardClient:
        return cast(RewardClient, self.workers.reward)

    def close(self) -> None:
        """Kill every actor this cluster started, so their resources are free at once (a sweep trial's, for the
        next trial; a process that exits frees them anyway, since it owns them)."""
        import ray

        memory = getattr(self.workers.memory, "handle", None) if self.workers.memory is not None else None
        for handle in [*self.rollout_handles, *self.learner_handles, *self.reward.handles, memory]:
            if handle is not None:
                try:
                    ray.kill(handle, no_restart=True)
                except Exception:  # already dead: nothing to free
                    pass


def worst_chunk_s(reward: RewardConfig) -> float:
    """Longest a worker may take over one chunk when every call hangs: each function's call and its retry, the
    one-by-one pass up to the error budget, and a child restart (plugin load) after each timeout."""
    calls = 2 + max(1, math.ceil(reward.max_error_rate * reward.chunk_size))
    return len(reward.functions) * calls * (reward.timeout_s + 30.0)


def lora_mode(config: RootConfig) -> str:
    """What a LoRA run's weight sync sends ('adapter' or 'merged'); '' for full-weight runs."""
    return config.sync.lora if config.model.lora_rank else ""


def resolve_transport(config: RootConfig) -> str:
    """sync.transport with 'auto' resolved: NCCL when this machine has CUDA and the engines get GPUs, else CPU."""
    from actors.runtime import has_cuda

    if config.sync.transport != "auto":
        return config.sync.transport
    return "nccl" if has_cuda() and config.resources.rollout_gpus > 0 else "cpu"


def actor_roles(config: RootConfig) -> list[Role]:
    """Every kind of actor a run starts, how many, and what each needs (from the recipe's resources section)."""
    res = config.resources
    return [Role("rollout", config.rollout.num_engines, "rollout.num_engines", res.rollout_cpus,
                 res.rollout_gpus * config.rollout.tensor_parallel_size, res.rollout_custom),
            Role("learner", config.learner.world_size, "learner.world_size", res.learner_cpus, res.learner_gpus,
                 res.learner_custom),
            Role("reward", config.reward.num_workers, "reward.num_workers", res.reward_cpus, 0, res.reward_custom)]


def start_cluster(config: RootConfig, model_path: str, env: EnvSettings | None = None) -> Cluster:
    """Ray (local, or the cluster at resources.address), then every actor and the weight sync; `env`: the reward
    workers also host the recipe's environments."""
    from actors.placement import init_ray
    from actors.runtime import actor_env_vars, configure_process_env

    configure_process_env()
    init_ray(config.resources, actor_roles(config), {"env_vars": actor_env_vars(rollout_lag(config) > 0)})
    return build_workers(config, model_path, resolve_transport(config), env)


def build_workers(config: RootConfig, model_path: str, transport: str, env: EnvSettings | None = None) -> Cluster:
    """Place and start every actor on a running Ray; the learner group meets at rank 0's address, then the weight
    sync joins the learner ranks to the engines."""
    import ray

    from actors.learner import LearnerWorker
    from actors.reward import RewardWorker
    from actors.rollout import RolloutWorker

    timeout = config.resources.call_timeout_s
    placements = place_roles(actor_roles(config), config.resources)
    rollout_cls, learner_cls = ray.remote(RolloutWorker), ray.remote(LearnerWorker)
    reward_cls = ray.remote(RewardWorker)
    learners: list[Any] = [learner_cls.options(**placements["learner"].options(r), name=None).remote(
        r, config.learner.world_size, config.model, config.learner, model_path, config.algorithm.kl_coef != 0)
        for r in range(config.learner.world_size)]

    def rollout_engine(slot: int) -> Any:
        return rollout_cls.options(**placements["rollout"].options(slot)).remote(
            model_path, config.model, config.rollout, slot, transport, lora_mode(config))

    def reward_worker(slot: int, replacement: bool = True) -> Any:
        handle = reward_cls.options(**placements["reward"].options(slot)).remote(reward_settings(config.reward))
        if env is not None and replacement:  # queued behind the constructor; a failure shows at its next call
            handle.env_start.remote(env)  # type: ignore[union-attr]  # a Ray actor handle's method
        return handle

    rollouts: list[Any] = [rollout_engine(i) for i in range(config.rollout.num_engines)]
    rewards = [reward_worker(i, replacement=False) for i in range(config.reward.num_workers)]
    addr, port = call([learners[0].rendezvous.remote()], "learner[0].rendezvous", timeout)[0]
    call([h.init.remote(addr, port, timeout) for h in learners], "learner.init (DeepSpeed)", timeout)
    call([h.ping.remote() for h in rollouts], "rollout start (vLLM)", timeout)
    call([h.ping.remote() for h in rewards], "reward worker start", timeout)
    if env is not None:
        call([h.env_start.remote(env) for h in rewards], "reward worker environments start", timeout)
    sync = make_weight_sync(transport, learners, rollouts, config.sync.bucket_mb, timeout, lora_mode(config))
    workers = Workers(
        rollout=RolloutClient(rollouts, timeout, rollout_engine, rejoin=sync.rejoin),
        learner=LearnerClient(learners, timeout),
        reward=RewardClient(rewards, timeout, config.reward.chunk_size, worst_chunk_s(config.reward), reward_worker),
        weight_sync=sync)
    cast(RewardClient, workers.reward).env_timeout_s = config.environment.timeout_s
    if config.memory.exploit_weight or config.memory.explore_weight:
        from actors.memory import start_memory

        workers.memory = start_memory(config.memory, timeout)
    return Cluster(workers, rollouts, learners, placements, transport)


class LocalEngine:
    """One in-process vLLM engine behind the `RolloutEngine` interface (`rlpost eval`)."""

    def __init__(self, worker: RolloutWorker) -> None:
        self.worker = worker

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        return self.worker.generate(requests)

    def sequence_logprobs(self, sequences: list[list[int]], base: bool = False) -> list[list[list[float]]]:
        return [self.worker.sequence_logprobs(sequences, base)]


class LocalRewardPool:
    """One in-process reward worker (its plugins still run in its child process), fed whole-group chunks."""

    def __init__(self, worker: RewardWorker, chunk_size: int) -> None:
        self.worker, self.chunk_size = worker, chunk_size

    def score(self, request: RewardRequest) -> RewardResult:
        result = RewardResult(rewards=[], components={})
        for lo, hi in request.chunks(self.chunk_size):
            result.extend(self.worker.score(request.slice(lo, hi)))
        return result

    def env_open(self, items: list[tuple[int, str, dict[str, Any]]]) -> list[tuple[str | None, str]]:
        return self.worker.env_open(items)

    def env_step(self, items: list[tuple[int, str, dict[str, Any], str | None]]
                 ) -> list[tuple[str | None, str, str]]:
        return self.worker.env_step(items)

    def env_finish(self, keys: list[int]) -> list[tuple[float | None, str]]:
        return self.worker.env_finish(keys)


def local_engines(config: RootConfig, model_path: str, env: EnvSettings | None = None
                  ) -> tuple[RolloutEngine, LocalRewardPool]:
    """A vLLM engine and a reward worker in this process, without Ray (no learner, no weight sync); `env`: the
    worker also hosts the recipe's environments."""
    from actors.reward import RewardWorker
    from actors.rollout import RolloutWorker

    worker = RewardWorker(reward_settings(config.reward))
    if env is not None:
        worker.env_start(env)
    adapter = Path(model_path) / "adapter_config.json"
    if adapter.is_file():  # a LoRA checkpoint: its base model with the saved adapter
        import dataclasses
        import json

        saved = json.loads(adapter.read_text())
        model = dataclasses.replace(config.model, lora_rank=int(saved["r"]))
        engine = RolloutWorker(saved["base_model_name_or_path"], model, config.rollout, 0, lora="adapter",
                               adapter_path=model_path)
    else:
        engine = RolloutWorker(model_path, config.model, config.rollout, 0)
    return LocalEngine(engine), LocalRewardPool(worker, config.reward.chunk_size)


def reward_settings(reward: RewardConfig) -> RewardSettings:
    """The reward worker's settings from the recipe's reward section."""
    from actors.reward import RewardSettings

    return RewardSettings.from_config(reward)
