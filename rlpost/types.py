"""What crosses process boundaries: prompts, samples, groups and learner batches, and the actors' interfaces.

Vocabulary used everywhere: a *prompt* is one dataset row; a *sample* is one completion of it; a *group* is all
samples of one prompt; a *batch* is what one learner rank trains on. Shape suffixes: B = sequences, T = tokens.
The Protocols are the seams: what the driver's loop calls (rollout, learner, reward, weight sync; `actors/build.py`
implements them over Ray actors) and what it is built from (prompt sampler, allocator). Leaves out: partial
rollouts and multi-turn samples (later issues).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # torch stays out of processes that only exchange these records (reward children)
    from rlpost.losses import LossSpec


@dataclass
class Prompt:
    """One dataset row, tokenized once by the driver."""

    uid: int
    text: str
    token_ids: list[int]
    answer: str
    data_source: str
    columns: dict[str, Any] = field(default_factory=dict)  # every dataset column, passed to reward functions
    messages: list[dict[str, Any]] | None = None  # the row's chat messages when its prompt is a message list


@dataclass
class GenerationRequest:
    """Ask a rollout engine for `n` completions of one prompt."""

    prompt_uid: int
    token_ids: list[int]
    n: int
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    prefix_len: int = 0  # partial rollouts: the last prefix_len ids are a completion to continue (text covers them)
    stop: tuple[str, ...] = ()  # stop strings that also end the completion (kept in it): a tool call's end


@dataclass
class Sample:
    """One completion, with the logprobs vLLM sampled it with. The rollout actor hands both over as numpy arrays
    (int32 ids, float32 logprobs: a few bytes a token through Ray and in the driver, where lists cost ~70); code
    that builds samples itself may pass lists. Read them with len, indexing, slicing and iteration only."""

    prompt_uid: int
    token_ids: Any  # int32 [n] array, or a list of ints
    logprobs: Any  # float32 [n] array, or a list of floats
    text: str
    finish_reason: str  # 'stop' (EOS) or 'length' (truncated)
    reward: float = float("nan")
    reward_components: dict[str, float] = field(default_factory=dict)
    version: int = 0  # the policy version (learner updates so far) of the engine weights that generated it
    # partial rollouts: (first token, policy version) of each segment when it was generated in several; empty: one
    segments: list[tuple[int, int]] = field(default_factory=list)
    # multi-turn episodes (rlpost/multiturn.py): False at environment tokens, which get no loss (None: all model)
    env_mask: Any = None
    episode: dict[str, float] = field(default_factory=dict)  # turns, tool calls and errors, tokens by role
    env_reward: float | None = None  # the environment's get_reward(), added as a reward component
    messages: list[dict[str, Any]] | None = None  # chat episodes: the turns as messages (what reward functions get)

    @property
    def accuracy(self) -> float:
        """The first reward function's value (rlpost's accuracy convention), else the total reward."""
        return next(iter(self.reward_components.values())) if self.reward_components else self.reward


@dataclass
class Group:
    """All samples of one prompt; advantages are computed within it."""

    prompt: Prompt
    samples: list[Sample]
    advantages: list[float] = field(default_factory=list)


@dataclass
class RewardRequest:
    """A chunk of completions to score: the dataset columns of their prompts (one entry per completion), the run
    columns (scalars: step, max_new_tokens, length_budget) and how many consecutive completions share a prompt.
    Prompts and completions are in the form reward functions receive (rewards/protocol.py): strings for plain-text
    data; for chat data the prompt's message list and `[{"role": "assistant", "content": text}]`."""

    prompts: list[Any]
    completions: list[Any]
    completion_ids: list[list[int]]
    columns: dict[str, list[Any]]
    run: dict[str, Any] = field(default_factory=dict)
    group_sizes: list[int] = field(default_factory=list)  # empty: every completion is its own group

    def groups(self) -> list[tuple[int, int]]:
        """[lo, hi) bounds of each prompt group."""
        sizes = self.group_sizes or [1] * len(self.completions)
        bounds, lo = [], 0
        for size in sizes:
            bounds.append((lo, lo + size))
            lo += size
        if lo != len(self.completions):
            raise ValueError(f"group_sizes add up to {lo}, not {len(self.completions)} completions")
        return bounds

    def chunks(self, size: int) -> list[tuple[int, int]]:
        """[lo, hi) bounds of consecutive whole groups holding about `size` completions each (at least one group)."""
        chunks, lo, count = [], 0, 0
        for a, b in self.groups():
            count += b - a
            if count >= size:
                chunks.append((lo, b))
                lo, count = b, 0
        if count:
            chunks.append((lo, len(self.completions)))
        return chunks

    def slice(self, lo: int, hi: int) -> RewardRequest:
        """Completions lo:hi, which must start and end on group boundaries."""
        bounds = [(a - lo, b - lo) for a, b in self.groups() if lo <= a and b <= hi]
        return RewardRequest(self.prompts[lo:hi], self.completions[lo:hi], self.completion_ids[lo:hi],
                             {c: v[lo:hi] for c, v in self.columns.items()}, dict(self.run),
                             [b - a for a, b in bounds])


@dataclass
class RewardResult:
    """Per-completion total reward (NaN: leave the sample out), per-function components (NaN: no score), and the
    health of the call: completions whose scoring failed even after the retry, retries, timeouts, crashes; the
    plugins' health gauges (largest value when results merge) and the sums and counts of what they passed to
    `log_metric`."""

    rewards: list[float]
    components: dict[str, list[float]]
    failed: list[bool] = field(default_factory=list)
    first_error: str = ""
    retries: int = 0
    timeouts: int = 0
    crashes: int = 0
    replaced_workers: int = 0  # reward-worker actors that died and were replaced while scoring this request
    gauges: dict[str, float] = field(default_factory=dict)
    logged: dict[str, tuple[float, int]] = field(default_factory=dict)  # log_metric name -> (sum, count)

    @property
    def errors(self) -> int:
        return sum(self.failed)

    def extend(self, other: RewardResult) -> None:
        """Append another chunk's result (chunks arrive in order)."""
        self.rewards += other.rewards
        for name, values in other.components.items():
            self.components.setdefault(name, []).extend(values)
        self.failed += other.failed or [False] * len(other.rewards)
        self.first_error = self.first_error or other.first_error
        self.retries += other.retries
        self.timeouts += other.timeouts
        self.crashes += other.crashes
        self.replaced_workers += other.replaced_workers
        for key, value in other.gauges.items():
            self.gauges[key] = max(value, self.gauges.get(key, value))
        for key, (total, count) in other.logged.items():
            mine = self.logged.get(key, (0.0, 0))
            self.logged[key] = (mine[0] + total, mine[1] + count)


@dataclass
class LearnerBatch:
    """One rank's share of a training step: padded token rows plus per-token loss inputs.

    `loss_weights_BT` already holds the aggregation of each global mini-batch (e.g. 1 / its completion tokens for
    token-mean), so the learner's loss is a plain weighted sum and is invariant to how the batch is split.
    `metric_weights_BT` is a token-mean over the whole global batch, for metrics. A packed batch
    (rlpost/batching.py `pack_rows`) holds several sequences end to end in one row, with `position_ids_BT` restarting
    at 0 at each; the model then gets position ids instead of an attention mask, and attends within each sequence.
    """

    input_ids_BT: Any  # torch.long [B, T]
    attention_mask_BT: Any  # torch.long [B, T]
    loss_mask_BT: Any  # torch.float [B, T-1]: 1 on trained completion tokens (predicting position t+1)
    advantages_BT: Any  # torch.float [B, T-1]
    loss_weights_BT: Any  # torch.float [B, T-1]
    rollout_logprobs_BT: Any  # torch.float [B, T-1]: vLLM's sampled logprobs (mismatch metric, TIS)
    metric_weights_BT: Any  # torch.float [B, T-1]
    position_ids_BT: Any = None  # torch.long [B, T], packed batches only

    PER_TOKEN: ClassVar[tuple[str, ...]] = ("loss_mask_BT", "advantages_BT", "loss_weights_BT",
                                            "rollout_logprobs_BT", "metric_weights_BT")

    def rows(self, lo: int, hi: int) -> LearnerBatch:
        """Rows lo:hi, with padding columns past the longest row trimmed (padded batches only)."""
        width = max(2, int(self.attention_mask_BT[lo:hi].sum(dim=1).max()))
        return LearnerBatch(self.input_ids_BT[lo:hi, :width], self.attention_mask_BT[lo:hi, :width],
                            *(getattr(self, k)[lo:hi, : width - 1] for k in self.PER_TOKEN))

    def take(self, index: list[int]) -> LearnerBatch:
        """The rows at `index`, in that order, with padding columns past the longest trimmed (padded batches only)."""
        rows = list(index)
        width = max(2, int(self.attention_mask_BT[rows].sum(dim=1).max()))
        return LearnerBatch(self.input_ids_BT[rows, :width], self.attention_mask_BT[rows, :width],
                            *(getattr(self, k)[rows, : width - 1] for k in self.PER_TOKEN))

    def masked_row(self) -> LearnerBatch:
        """A one-row batch that trains nothing (keeps ranks' collective counts equal)."""
        zeros = {k: getattr(self, k)[:1] * 0 for k in self.PER_TOKEN}
        positions = None if self.position_ids_BT is None else self.position_ids_BT[:1]
        return LearnerBatch(self.input_ids_BT[:1], self.attention_mask_BT[:1], **zeros, position_ids_BT=positions)

    def to(self, device: Any) -> LearnerBatch:
        positions = None if self.position_ids_BT is None else self.position_ids_BT.to(device)
        return LearnerBatch(self.input_ids_BT.to(device), self.attention_mask_BT.to(device),
                            **{k: getattr(self, k).to(device) for k in self.PER_TOKEN}, position_ids_BT=positions)

    def sequence_lengths(self) -> list[int]:
        """Token count of each sequence the batch holds (a packed row holds several)."""
        if self.position_ids_BT is None:
            return [int(n) for n in self.attention_mask_BT.sum(dim=1)]
        starts = (self.position_ids_BT == 0).nonzero().tolist()  # (row, column) of each sequence's first token
        width = self.position_ids_BT.shape[1]
        return [(starts[i + 1][1] if i + 1 < len(starts) and starts[i + 1][0] == row else width) - col
                for i, (row, col) in enumerate(starts)]


@dataclass(frozen=True)
class CompactShard:
    """One rank's share of a training step as it crosses to the learner: every row's tokens end to end, without
    padding, plus what is constant along a row (rlpost/batching.py `compact_shards`; `expand_shard` pads it into a
    LearnerBatch on the learner). Arrays are numpy, so Ray passes them as buffers rather than pickled objects."""

    token_ids: Any  # int32 [sum of row lengths]: each row's prompt then completion
    prompt_lens: Any  # int64 [B]
    completion_lens: Any  # int64 [B]
    advantages: Any  # float32 [B]
    loss_weights: Any  # float64 [B]: the aggregation weight of each trained completion token of the row
    trained: Any  # bool [B]: False when the row's completion gets no loss (masked truncation, a filler row)
    rollout_logprobs: Any  # float32 [sum of completion lengths]: vLLM's sampled logprobs
    total_tokens: float  # trained completion tokens of the whole step (metrics are token means over it)
    pad_id: int
    loss_starts: Any  # int64 [B]: completion tokens before this index get no loss (partial_loss 'latest'; else 0)
    env_mask: Any = None  # bool [sum of completion lengths]: False at environment tokens (None: no episodes)

    def lengths(self) -> list[int]:
        """Each row's token count."""
        return [int(n) for n in self.prompt_lens + self.completion_lens]


@dataclass
class PromptStats:
    """What an allocator knows about one prompt when it allocates: acceptance rate and mean gradient norm."""

    accept_rate: float
    grad_norm: float


class PromptSampler(Protocol):
    """Which prompts each step trains on (rlpost/sampling.py). Drawn lazily, updated after the step's advantages."""

    def next_batch(self, step: int | None = None) -> list[Prompt]: ...

    def update(self, groups: list[Group]) -> None: ...

    def metrics(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Allocator(Protocol):
    """How many samples each prompt of a step gets (rlpost/allocators.py). `needs_prepass`: the collector runs a
    pre-pass and hands its statistics to `allocate`; `learns_from_rollouts`: it feeds each round to `update`."""

    needs_prepass: bool
    learns_from_rollouts: bool

    def estimates(self, prompts: list[Prompt]) -> list[PromptStats] | None: ...

    def allocate(self, prompts: list[Prompt], stats: list[PromptStats] | None = None) -> list[int]: ...

    def update(self, prompts: list[Prompt], stats: list[PromptStats], counts: list[int]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RolloutEngine(Protocol):
    """The vLLM engines, seen as one: completions per request; the probe's logprobs from every engine."""

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]: ...

    def sequence_logprobs(self, sequences: list[list[int]], base: bool = False) -> list[list[list[float]]]:
        """Per engine, per sequence, the logprob of each token after the first (`base`: without a LoRA adapter)."""
        ...


class LearnerGroup(Protocol):
    """The DeepSpeed ranks, seen as one (rank 0's answer where every rank computes the same)."""

    def train(self, shards: list[CompactShard], loss: LossSpec, micro_batches: int,
              max_tokens_per_micro: int = 0) -> dict[str, float]: ...

    def submit_train(self, shards: list[CompactShard], loss: LossSpec, micro_batches: int,
                     max_tokens_per_micro: int = 0) -> Callable[[], dict[str, float]]:
        """`train`, started: every rank has the call queued when this returns (so a learner call made later, from
        any thread, runs after it); calling the result waits for the metrics."""
        ...

    def sequence_logprobs(self, sequences: list[list[int]], base: bool = False) -> list[list[float]]: ...

    def reference_kl(self, sequences: list[list[int]], prompt_lens: list[int], estimator: str) -> list[float]: ...

    def grad_norms(self, sequences: list[list[int]], prompt_lens: list[int], kind: str) -> list[float]: ...

    def save_hf(self, path: str, merged: bool = False) -> None: ...

    def save_state(self, path: str) -> None: ...

    def load_state(self, path: str) -> None: ...


class RewardPool(Protocol):
    """The reward workers, seen as one: every completion of a request scored, in order."""

    def score(self, request: RewardRequest) -> RewardResult: ...


class EnvironmentPool(Protocol):
    """Environments of multi-turn episodes on the reward workers (actors/env_host.py), one instance per episode key:
    `open` resets (observation, error), `step` runs tool calls (value, error for the model, detail for the logs),
    `finish` returns get_reward (reward or None, error) and drops the instance."""

    def env_open(self, items: list[tuple[int, str, dict[str, Any]]]) -> list[tuple[str | None, str]]: ...

    def env_step(self, items: list[tuple[int, str, dict[str, Any], str | None]]
                 ) -> list[tuple[str | None, str, str]]: ...

    def env_finish(self, keys: list[int]) -> list[tuple[float | None, str]]: ...


class WeightSync(Protocol):
    """Learner weights into every vLLM engine; `rejoin(slot)` brings a replacement engine into the transfer."""

    def sync(self) -> dict[str, float]: ...

    def rejoin(self, slot: int) -> dict[str, float]: ...


class EpisodicMemory(Protocol):
    """Memory-R+'s memories (actors/memory.py): one stateful actor, called in sample order, so its insertions are
    deterministic; `score` inserts then scores each completion, giving (exploit, explore) per completion."""

    def score(self, questions: list[str], reasonings: list[str], correct: list[bool]) -> list[tuple[float, float]]: ...

    def sizes(self) -> tuple[int, int]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Workers:
    """Everything the driver's loop calls, built by actors/build.py (or by hand, with stand-ins, in unit tests)."""

    rollout: RolloutEngine
    learner: LearnerGroup
    reward: RewardPool
    weight_sync: WeightSync
    memory: EpisodicMemory | None = None  # Memory-R+ (memory.exploit_weight or explore_weight)
