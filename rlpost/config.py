"""The one typed configuration schema: frozen dataclasses, one per recipe section, each field documented once.

Every field is documented once, here, in the comment string beside it; `rlpost train --help-config` and the README
table are generated from these (`all_fields`). Defaults live only in this file; a closed choice is typed by its
`Literal` from rlpost/choices.py, the one list of its values, and a number's allowed interval is given to `doc` as
`range=` (`entries=` for each number of a list or mapping). Loading a recipe (inheritance, presets, overrides,
errors that name key and file) is in rlpost/recipes.py; checks of values beyond the types are in
rlpost/recipe_checks.py. This module imports neither, nor OmegaConf. Leaves out: the GPU colocation knobs (later
issues add them as fields here).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from rlpost.choices import (
    AdvantageStd,
    AllocatorKind,
    AllocatorSchedule,
    AttnImplementation,
    Backend,
    Baseline,
    ChatTemplate,
    DataSource,
    Dtype,
    DynamicSamplingMetric,
    GradNorm,
    KlEstimator,
    LoraSync,
    LossAggregation,
    MemoryExtract,
    OnGenRoundsExhausted,
    PartialLoss,
    PlacementStrategy,
    PolicyLoss,
    Preset,
    RatioLevel,
    RolloutMode,
    SamplerKind,
    SingletonRule,
    StdDdof,
    SweepScheduler,
    TisLevel,
    ToolFormatKind,
    Transport,
    ZeroStage,
    is_choice,
    values_of,
)
from rlpost.embedded.tasks import SOURCES as DEFAULT_EMBEDDED_SOURCES

# Upper bounds on counts, lengths and times only keep absurd values (`samples_per_prompt: 1e29`) away from Ray, vLLM
# and the OS; they sit far above any run rlpost can do, so raise one if a real run needs it.
MAX_STEPS = 10_000_000
MAX_ACTORS = 4096  # actors of one role, or GPUs of one vLLM engine
MAX_COUNT = 1_000_000  # prompts, samples, sequences, rounds
MAX_TOKENS = 10_000_000
MAX_SECONDS = 10_000_000  # about 115 days; Python's own timeouts overflow near 9.2e9 s
MAX_SEED = 2**32 - 1  # numpy's limit; torch and vLLM take it too
MAX_RESOURCE = 1_000_000  # Ray CPUs, GPUs or custom resources per actor; MiB of a buffer or memory limit
MAX_SAMPLES_PER_STEP = 10_000_000  # prompts_per_step x samples_per_prompt: a bound on memory, not on taste


def doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING, *,
        range: str | None = None, entries: str | None = None) -> Any:
    """A dataclass field carrying its one-line documentation, and for numbers its allowed interval, in metadata.

    Every int and float field gives `range`, its interval ("[lo, hi]"; "(" and ")" leave a bound out, "inf" is no
    bound); a list or mapping of numbers gives `entries`, the interval of each entry. Floats must be finite too: nan
    and inf are refused everywhere. rlpost/recipe_checks.py checks them; a test fails for a numeric field without
    one."""
    metadata = {"doc": text}
    if range is not None:
        metadata["range"] = range
    if entries is not None:
        metadata["entries"] = entries
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ModelConfig:
    path: str = doc("Hugging Face model id or local directory; 'embedded' builds (once) the tiny character-level "
                    "base model into .cache/base_model, 'embedded_trace' the reasoning-trace task's into "
                    ".cache/base_model_trace, 'embedded_tool' the tool-use task's into .cache/base_model_tool",
                    "embedded")
    dtype: Dtype = doc("parameter dtype in vLLM and the learner: float32 or bfloat16 (never float16 on CPU)",
                       "float32")
    trust_remote_code: bool = doc("passed to transformers and vLLM when loading the model", False)
    attn_implementation: AttnImplementation = doc(
        "attention kernel of the learner's model (transformers' attn_implementation; vLLM picks its own): 'auto' "
        "keeps transformers' default (sdpa); 'eager' trains faster in bf16 on a CPU (README, Throughput); "
        "'flash_attention_2' (GPU, flash-attn installed) lets packed rows (learner.packing) skip masked pairs", "auto")
    lora_rank: int = doc("LoRA (PEFT) rank r of the adapters the learner trains instead of every weight; 0 = full "
                         "weights. The base stays frozen, the reference policy is the base with the adapter off, and "
                         "weight sync sends the adapter only (sync.lora)", 0, range=f"[0, {MAX_TOKENS}]")
    lora_alpha: int = doc("LoRA alpha: the adapter's update is scaled by alpha / rank", 16, range=f"[1, {MAX_TOKENS}]")
    lora_dropout: float = doc("dropout on the adapters' input while training (0 keeps the learner's logprobs equal "
                              "to vLLM's)", 0.0, range="[0, 1)")
    lora_target_modules: list[str] = doc("modules that get adapters (names of the model's linear layers)",
                                         factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"])
    load_in_4bit: bool = doc("QLoRA: the frozen base is loaded in 4-bit NF4 on the learner (bitsandbytes, GPU only; "
                             "needs lora_rank > 0)", False)


@dataclass(frozen=True)
class DataConfig:
    source: DataSource = doc("where prompts come from: 'embedded' (synthetic suite), 'jsonl' or 'parquet' (local file) "
                             "or 'hf' (a Hugging Face dataset)", "embedded")
    path: str = doc("jsonl/parquet file (may contain '{split}') or Hugging Face dataset id (unused for 'embedded')",
                    "")
    name: str = doc("Hugging Face dataset configuration name (e.g. 'main' for gsm8k)", "")
    train_split: str = doc("split name for training prompts ('hf' and 'embedded')", "train")
    eval_split: str = doc("split name for held-out evaluation ('hf' and 'embedded'); empty disables eval", "test")
    prompt_key: str = doc("column holding the prompt text", "prompt")
    answer_key: str = doc("column holding the reference answer, passed to reward functions", "answer")
    source_key: str = doc("column holding the distribution tag (data_source)", "data_source")
    columns: dict[str, str] = doc("rename columns before use: {name rlpost and reward functions see: column in the "
                                  "data}, e.g. {answer: solution}", factory=dict)
    chat_template: ChatTemplate = doc("'auto': wrap each prompt in the tokenizer's chat template when it has one "
                                      "(and always for prompts given as message lists); 'none': tokenize the text "
                                      "as is", "auto")
    system_prompt: str = doc("system message put before each prompt when a chat template is applied", "")
    n_train_per_source: int = doc("embedded suite: training prompts generated per distribution", 2000,
                                  range=f"[1, {MAX_COUNT}]")
    n_eval_per_source: int = doc("embedded suite / eval: held-out prompts per distribution (0 = all)", 200,
                                 range=f"[0, {MAX_COUNT}]")
    max_prompt_tokens: int = doc("prompts longer than this are reported as an error, never silently cut", 48,
                                 range=f"[1, {MAX_TOKENS}]")
    seed: int = doc("seed of the embedded generator and of prompt shuffling", 0, range=f"[0, {MAX_SEED}]")
    embedded_sources: list[str] = doc("embedded suite: its distributions, 'sumK' = sums of K digits (K 1-18), or "
                                      "'traceK' = the same sums answered after a trace of partial sums (K 1-8, "
                                      "model.path embedded_trace, reward trace_answer); the "
                                      "default five are the quickstart's; recipes/dump_graded.yaml lists a "
                                      "harder, graded suite of twelve for curriculum experiments",
                                      factory=lambda: list(DEFAULT_EMBEDDED_SOURCES))


@dataclass(frozen=True)
class RolloutConfig:
    num_engines: int = doc("number of vLLM rollout actors", 1, range=f"[1, {MAX_ACTORS}]")
    samples_per_prompt: int = doc("G: completions sampled per prompt (the group size)", 8, range=f"[1, {MAX_COUNT}]")
    temperature: float = doc("sampling temperature for training rollouts", 1.0, range="(0, inf)")
    top_p: float = doc("nucleus sampling for training rollouts", 1.0, range="(0, 1]")
    max_new_tokens: int = doc("maximum completion length in tokens", 12, range=f"[1, {MAX_TOKENS}]")
    max_model_len: int = doc("vLLM context length (prompt + completion)", 64, range=f"[2, {MAX_TOKENS}]")
    cpu_kv_cache_gib: int = doc("VLLM_CPU_KVCACHE_SPACE on CPU machines", 1,
                                range="[1, 65536]")  # vLLM reads 0 as a KV cache of 0 bytes
    gpu_memory_utilization: float = doc("vLLM gpu_memory_utilization on GPU machines", 0.5, range="(0, 1]")
    tensor_parallel_size: int = doc("vLLM tensor parallel size per engine (GPU only)", 1, range=f"[1, {MAX_ACTORS}]")
    enforce_eager: bool = doc("disable CUDA graphs / compilation in vLLM (faster start for small runs)", True)
    seed: int = doc("base seed of vLLM sampling; each step offsets it", 0, range=f"[0, {MAX_SEED}]")
    mode: RolloutMode = doc("'sync': a step's batch is generated with the weights of the step before (no overlap); "
                            "'one_step_off': step t+1's batch is generated while step t trains, with the weights "
                            "after step t-1; 'async': generation runs max_staleness steps ahead. Off sync, the loss is "
                            "corrected for the older weights (README, 'Asynchronous rollouts')", "sync")
    max_staleness: int = doc("async: policy versions a batch is generated ahead of the step that trains on it (the "
                             "weights of step t-1-k generate step t's batch; 0 = sync)", 2, range="[0, 64]")
    partial_max_tokens: int = doc("partial rollouts (Kimi k1.5): a pass generates at most this many tokens of a "
                                  "completion; one still unfinished is parked with its group and continued in the "
                                  "next step with the weights of then (0 = off)", 0, range=f"[0, {MAX_TOKENS}]")
    partial_loss: PartialLoss = doc("partial rollouts: which segments of a continued completion enter the loss, "
                                    "'all' or the 'latest' (the freshest weights') only", "all")
    stop_on_repeat: int = doc("partial rollouts: end a completion whose tail is one block of up to 16 tokens "
                              "repeated this many times (n >= 2) instead of continuing it (finish_reason 'repeat'; "
                              "0 = off)",
                              0, range="[0, 1024]")
    max_turns: int = doc("multi-turn episodes (environment section): model turns per episode; a tool call in the "
                         "last one is not run. max_new_tokens is the budget of the whole episode, model and "
                         "environment tokens together", 4, range=f"[1, {MAX_COUNT}]")


@dataclass(frozen=True)
class RewardConfig:
    functions: list[str] = doc("reward functions, summed with weights: built-in names, installed 'rlpost.rewards' "
                               "entry points, 'pkg.module:fn' or 'path/file.py:fn'; the first is the accuracy",
                               factory=lambda: ["exact_match"])
    weights: list[float] = doc("one weight per function; empty means all 1.0", factory=list, entries="(-inf, inf)")
    args: dict[str, Any] = doc("keyword arguments per function, by its name (the built-in name or the part after "
                               "':'), e.g. reward.args.boxed_math.mode=independent", factory=dict)
    num_workers: int = doc("reward worker actors (each runs calls in its own child process)", 1,
                           range=f"[1, {MAX_ACTORS}]")
    chunk_size: int = doc("completions per reward-worker call (whole prompt groups; at least one group)", 64,
                          range=f"[1, {MAX_COUNT}]")
    timeout_s: float = doc("timeout of one reward function call; a hung call is killed, retried once, then scored "
                           "by on_error", 60.0, range=f"(0, {MAX_SECONDS}]")
    memory_mb: int = doc("memory limit of each reward child process in MiB (RLIMIT_DATA; 0 = none)", 4096,
                         range=f"[0, {MAX_RESOURCE}]")
    on_error: str = doc("what a call that fails twice (raises, hangs, crashes, bad output) gives its samples: "
                        "'raise' (stop with the plugin's traceback), 'skip' (leave them out of training) or a "
                        "number (that function's score); failures are always counted", "skip")
    max_error_rate: float = doc("stop the run when a scoring pass has more than this fraction of completions that "
                                "failed even after the retry", 0.1, range="[0, 1]")


@dataclass(frozen=True)
class AlgorithmConfig:
    preset: Preset = doc("named set of the switches below ('grpo', 'dr_grpo', 'dapo', 'gspo'; empty = none): applied "
                         "under the recipe, so keys the recipe or command line set win", "")
    prompts_per_step: int = doc("B: prompts per training step (groups kept, with dynamic sampling)", 32,
                                range=f"[1, {MAX_COUNT}]")
    baseline: Baseline = doc("advantage baseline: 'mean' of the group (GRPO), 'rloo' (mean of the other samples) or "
                             "'raft' (no baseline: advantage max(reward, 0) per response, RAFT's rejection sampling; "
                             "needs advantage_std 'none')", "mean")
    advantage_std: AdvantageStd = doc("divide centred rewards by the std of the 'group' (GRPO), of the 'batch' (TRL "
                                      "scale_rewards=batch) or 'none' (Dr. GRPO)", "group")
    advantage_std_ddof: StdDdof = doc("degrees of freedom of the std: 1 = unbiased (verl, TRL), 0 = population", 1)
    advantage_eps: float = doc("added to the std before dividing", 1e-6, range="[0, inf)")
    singleton_rule: SingletonRule = doc("advantage of a group with one sample: 'raw' (its reward, as verl), 'zero', "
                                        "or 'drop' the group", "raw")
    loss_aggregation: LossAggregation = doc("how per-token losses are combined over a mini-batch: 'token-mean' "
                                            "(DAPO), 'seq-mean-token-mean' (original GRPO), 'seq-mean-token-sum', "
                                            "'constant' (Dr. GRPO: sum / (sequences * loss_constant))", "token-mean")
    loss_constant: int = doc("normaliser of the 'constant' aggregation (0 = rollout.max_new_tokens)", 0,
                             range=f"[0, {MAX_TOKENS}]")
    clip_eps_low: float = doc("PPO clip: ratio lower bound is 1 - clip_eps_low", 0.2, range="[0, 1]")
    clip_eps_high: float = doc("PPO clip: ratio upper bound is 1 + clip_eps_high (DAPO clip-higher: 0.28)", 0.2,
                               range="[0, inf)")
    dual_clip_c: float = doc("dual clip for negative advantages: loss capped at c*|A| (verl: 3.0); 0 disables", 0.0,
                             range="[0, inf)")
    policy_loss: PolicyLoss = doc("per-token policy term: 'ppo' (clipped importance ratio, dual clip when set) or "
                                  "'vanilla' (-A log pi: RAFT, REINFORCE; no ratio, no clip)", "ppo")
    ratio_level: RatioLevel = doc("importance ratio per 'token' (PPO/GRPO) or per 'sequence' (GSPO: exp of the mean "
                                  "token log-ratio)", "token")
    kl_coef: float = doc("beta of the KL to the reference (initial) policy; 0 loads no reference model anywhere", 0.0,
                         range="[0, inf)")
    kl_estimator: KlEstimator = doc("KL estimator: 'k1' (log ratio), 'k2' (squared log ratio / 2), 'k3' (GRPO's)", "k3")
    kl_in_reward: bool = doc("subtract beta * (summed KL of the completion) from its reward instead of adding "
                             "beta * KL to the loss", False)
    entropy_coef: float = doc("entropy bonus: the loss subtracts coef * entropy, aggregated like the loss", 0.0,
                              range="[0, inf)")
    updates_per_batch: int = doc("mini-batches per epoch, one optimizer step each; >1 makes the clip active", 1,
                                 range=f"[1, {MAX_COUNT}]")
    epochs: int = doc("passes over each generated batch (old logprobs come from the learner before the first)", 1,
                      range=f"[1, {MAX_COUNT}]")
    tis_level: TisLevel = doc("truncated importance sampling for the vLLM-vs-learner mismatch: 'none', 'token' or "
                              "'sequence' weight min(pi_old / pi_vllm, tis_cap) on the policy loss (with "
                              "rollout.mode off sync, 'none' means 'token': stale samples are always corrected)",
                              "none")
    tis_cap: float = doc("cap of the truncated importance weight", 2.0, range="(0, inf)")
    dynamic_sampling: bool = doc("DAPO: drop groups whose dynamic_sampling_metric is all equal and generate more "
                                 "prompts until prompts_per_step groups are kept", False)
    dynamic_sampling_metric: DynamicSamplingMetric = doc("what must vary within a kept group: 'reward' (total) or "
                                                         "'accuracy' (the first reward function)", "reward")
    max_gen_rounds: int = doc("dynamic sampling: most generation rounds per step (the first included)", 4,
                              range=f"[1, {MAX_COUNT}]")
    on_gen_rounds_exhausted: OnGenRoundsExhausted = doc("when max_gen_rounds is hit: 'train' on the groups kept so "
                                                        "far (with a warning) or 'error'", "train")
    overlong_shaping: bool = doc("DAPO overlong reward shaping: completions longer than max_new_tokens - "
                                 "overlong_buffer lose up to overlong_penalty at the cap", False)
    overlong_buffer: int = doc("overlong shaping buffer in tokens (0 = max_new_tokens // 5, DAPO's ratio)", 0,
                               range=f"[0, {MAX_TOKENS}]")
    overlong_penalty: float = doc("overlong shaping factor (reward lost at the cap)", 1.0, range="[0, inf)")
    mask_truncated: bool = doc("completions cut by max_new_tokens get no loss (they still count as sequences)", False)


@dataclass(frozen=True)
class LearnerConfig:
    world_size: int = doc("DeepSpeed data-parallel ranks (learner actors)", 2, range=f"[1, {MAX_ACTORS}]")
    zero_stage: ZeroStage = doc("DeepSpeed ZeRO stage 0-3", 1)
    lr: float = doc("AdamW learning rate (constant)", 1e-4, range="(0, inf)")
    betas: list[float] = doc("AdamW betas", factory=lambda: [0.9, 0.99], entries="[0, 1)")
    adam_eps: float = doc("AdamW epsilon", 1e-8, range="(0, inf)")
    weight_decay: float = doc("AdamW weight decay", 0.0, range="[0, inf)")
    grad_clip: float = doc("global gradient-norm clip (0 disables)", 1.0, range="[0, inf)")
    micro_batch_size: int = doc("sequences per forward/backward on one rank", 64, range=f"[1, {MAX_COUNT}]")
    max_tokens_per_micro: int = doc("token budget of one micro-batch, padding included (rows x longest row): rows "
                                    "sorted by length fill micro-batches up to it, so short rows are not padded to "
                                    "long ones; 0 cuts micro_batch_size rows in order. 1024 suits a CPU core (larger "
                                    "micro-batches run no faster there); a GPU wants ~16k", 1024,
                                    range=f"[0, {MAX_TOKENS}]")
    packing: bool = doc("pack each micro-batch's sequences end to end into one row without padding (the model gets "
                        "position ids and attends within each sequence); max_tokens_per_micro then counts their own "
                        "tokens. It pays where attention takes packed rows natively (flash-attention varlen on GPU); "
                        "on CPU transformers masks the packed row: exact, but no faster (README)", False)
    backend: Backend = doc("torch.distributed backend: 'auto' picks nccl with GPUs, gloo otherwise", "auto")
    seed: int = doc("torch seed of the learner ranks", 0, range=f"[0, {MAX_SEED}]")
    deepspeed: dict[str, Any] = doc("extra DeepSpeed config merged over the generated one (nested keys merge), e.g. "
                                    "{zero_optimization: {offload_optimizer: {device: cpu}}}; batch sizes and "
                                    "accumulation stay rlpost's", factory=dict)


@dataclass(frozen=True)
class SyncConfig:
    transport: Transport = doc("weight sync: 'auto' (cpu without GPUs, nccl with), 'cpu' (Ray object store into vLLM "
                               "load_weights), 'nccl' or 'ipc' (vLLM's native weight-transfer API)", "auto")
    bucket_mb: int = doc("CPU transport: tensors are shipped in buckets of about this many MB", 64,
                         range=f"[1, {MAX_RESOURCE}]")
    probe_sequences: int = doc("fixed token sequences whose vLLM and learner logprobs are compared after each sync",
                               4, range=f"[0, {MAX_COUNT}]")
    lora: LoraSync = doc("with model.lora_rank: 'adapter' sends only the adapter each sync and vLLM serves the base "
                         "with it (vLLM's LoRA support); 'merged' sends full weights with the adapter merged in on "
                         "the fly (for engines that cannot serve LoRA; the learner's base is never changed)",
                         "adapter")


@dataclass(frozen=True)
class ResourcesConfig:
    address: str = doc("Ray address; empty connects to RAY_ADDRESS if set, else starts a local Ray", "")
    local_num_cpus: int = doc("logical CPUs of a locally started Ray (0 = enough for all actors)", 0,
                              range=f"[0, {MAX_RESOURCE}]")
    rollout_cpus: float = doc("CPUs per rollout actor", 1.0, range=f"[0, {MAX_RESOURCE}]")
    rollout_gpus: float = doc("GPUs per rollout actor", 0.0, range=f"[0, {MAX_RESOURCE}]")
    learner_cpus: float = doc("CPUs per learner rank", 1.0, range=f"[0, {MAX_RESOURCE}]")
    learner_gpus: float = doc("GPUs per learner rank", 0.0, range=f"[0, {MAX_RESOURCE}]")
    reward_cpus: float = doc("CPUs per reward worker", 1.0, range=f"[0, {MAX_RESOURCE}]")
    rollout_custom: dict[str, float] = doc("custom Ray resources per rollout actor, e.g. a node label given to "
                                           "`ray start --resources` ({rollout_node: 1} puts vLLM on that node)",
                                           factory=dict, entries=f"[0, {MAX_RESOURCE}]")
    learner_custom: dict[str, float] = doc("custom Ray resources per learner rank (see rollout_custom)", factory=dict,
                                           entries=f"[0, {MAX_RESOURCE}]")
    reward_custom: dict[str, float] = doc("custom Ray resources per reward worker (see rollout_custom)", factory=dict,
                                          entries=f"[0, {MAX_RESOURCE}]")
    strategy: PlacementStrategy = doc("placement group strategy per role: PACK, SPREAD, STRICT_PACK or "
                                      "STRICT_SPREAD", "PACK")
    placement_timeout_s: float = doc("seconds to wait for resources before failing with what is missing", 60.0,
                                     range=f"(0, {MAX_SECONDS}]")
    call_timeout_s: float = doc("timeout of every Ray call from the driver (a named error when it passes)", 900.0,
                                range=f"(0, {MAX_SECONDS}]")


@dataclass(frozen=True)
class SamplerConfig:
    kind: SamplerKind = doc("which prompts each step trains on: 'uniform' (without replacement), 'mixture' (fixed "
                            "weights per data_source), 'dump' (UCB over each source's mean |advantage|), "
                            "'prioritised' (Kimi: probability 1 - success rate per prompt) or 'staged' (all data, "
                            "then staged_sources)", "uniform")
    mixture_weights: dict[str, float] = doc("mixture: weight per data_source (renormalised; sources not named get 0)",
                                            factory=dict, entries="[0, inf)")
    dump_window: int = doc("dump: responses per source in the learnability window (DUMP: 300)", 300,
                           range=f"[1, {MAX_COUNT}]")
    dump_exploration: float = doc("dump: UCB exploration weight c (DUMP: 1.0)", 1.0, range="[0, inf)")
    dump_temperature: float = doc("dump: softmax temperature over UCB scores (DUMP: 0.1)", 0.1, range="(0, inf)")
    success_threshold: float = doc("prioritised and rif_k: a rollout succeeds when the first reward function is at "
                                   "least this", 1.0, range="(-inf, inf)")
    prioritised_initial: float = doc("prioritised: success rate assumed for a prompt not yet seen", 0.0, range="[0, 1]")
    staged_sources: list[str] = doc("staged: the data_sources trained on from staged_from_step on", factory=list)
    staged_from_step: int = doc("staged: first step that samples only staged_sources", 0, range=f"[0, {MAX_STEPS}]")
    rif_k: int = doc("RIF-RFT filter before training: roll out each training prompt rif_k times and drop those with "
                     "no successful rollout (0 = off)", 0, range=f"[0, {MAX_COUNT}]")
    rif_drop_all_correct: bool = doc("RIF-RFT filter: also drop prompts whose rif_k rollouts all succeed", False)
    budget_initial: float = doc("Train-Long-Think-Short length budget B0 in tokens; reward functions get "
                                "B(t) = max(budget_min, B0 * budget_decay^floor(t / budget_interval)) as the column "
                                "'length_budget' (0 = off)", 0.0, range=f"[0, {MAX_TOKENS}]")
    budget_decay: float = doc("length budget: decay factor gamma per interval", 0.7, range="(0, 1]")
    budget_interval: int = doc("length budget: steps between decays (T)", 10, range=f"[1, {MAX_STEPS}]")
    budget_min: float = doc("length budget: floor B_min in tokens", 1.0, range=f"[0, {MAX_TOKENS}]")
    budget_caps_rollout: bool = doc("length budget: also cap rollout.max_new_tokens at ceil(B(t))", False)


@dataclass(frozen=True)
class AllocatorConfig:
    kind: AllocatorKind = doc("samples per prompt: 'fixed' (rollout.samples_per_prompt each), 'gvm' (GVM: a "
                              "pre-pass of prepass_samples per prompt measures acceptance p_i and gradient norm G_i, "
                              "then n_i is proportional to G_i / sqrt(p_i + alpha / p_i^(beta-1)) within the same "
                              "total) or 'gvm_online' (the same rule on estimates from each prompt's earlier "
                              "rollouts, no pre-pass)", "fixed")
    prepass_samples: int = doc("gvm: rollouts per prompt in the pre-pass (N')", 8, range=f"[1, {MAX_COUNT}]")
    schedule: AllocatorSchedule = doc("gvm: when the pre-pass runs: every 'step' on its prompts, or once per "
                                      "'iteration' (GVM's code) over the prompts of the next iteration_steps steps, "
                                      "drawn together, whose n_i then hold for those steps", "step")
    iteration_steps: int = doc("gvm, schedule 'iteration': steps per iteration (GVM's scripts: about 9)", 9,
                               range=f"[1, {MAX_STEPS}]")
    train_prepass: bool = doc("gvm: also train on the pre-pass samples, joined to their prompt's group at its step "
                              "(GVM's code does not; a prompt given no samples drops its pre-pass; not with "
                              "partial rollouts)", False)
    accept_threshold: float = doc("gvm: a sample is accepted when the first reward function exceeds this", 0.5,
                                  range="(-inf, inf)")
    alpha: float = doc("gvm: regulariser alpha (paper: 1e-3)", 1e-3, range="[0, inf)")
    beta: float = doc("gvm: regulariser exponent beta (paper: 2.0)", 2.0, range="(-inf, inf)")
    grad_norm: GradNorm = doc("gvm: G_i from the input-embedding gradient ('embedding', the paper's) or the output "
                              "head only ('lm_head': one forward, cheaper, not the paper's quantity)", "embedding")
    # A Beta prior: both open at 0, since a prior of 0 and 0 divides 0 by 0.
    prior_a: float = doc("gvm_online: Beta prior successes for a prompt's acceptance rate", 1.0, range="(0, inf)")
    prior_b: float = doc("gvm_online: Beta prior failures for a prompt's acceptance rate", 1.0, range="(0, inf)")
    min_samples: int = doc("gvm_online: fewest samples any prompt gets (2 keeps a group baseline)", 2,
                           range=f"[0, {MAX_COUNT}]")


@dataclass(frozen=True)
class MemoryConfig:
    exploit_weight: float = doc("Memory-R+ exploit reward weight: 1 - (normalised distance of a completion's "
                                "reasoning to the successful reasoning stored for the nearest questions); 0 = off",
                                0.0, range="[0, inf)")
    explore_weight: float = doc("Memory-R+ explore reward weight: normalised novelty against the failed reasoning "
                                "stored for the nearest questions; 0 = off", 0.0, range="[0, inf)")
    k: int = doc("nearest questions whose stored reasoning a completion is compared with", 1,
                 range=f"[1, {MAX_COUNT}]")
    max_keys: int = doc("questions each memory keeps (oldest dropped first)", 10_000, range=f"[1, {MAX_COUNT}]")
    max_values: int = doc("reasoning texts kept per question (oldest dropped first)", 100, range=f"[1, {MAX_COUNT}]")
    history: int = doc("raw scores the min-max normalisation looks back over", 100, range=f"[1, {MAX_COUNT}]")
    explore_phase: int = doc("the explore reward is 0 until the failure memory holds this many questions", 500,
                             range=f"[0, {MAX_COUNT}]")
    embedder: str = doc("'hashed' (character n-grams, offline; 'hashed:<dim>') or a sentence-transformers model "
                        "name (the paper's: sentence-transformers/all-MiniLM-L6-v2)", "hashed")
    extract: MemoryExtract = doc("the reasoning stored and compared: 'trace' (text before the last '#'), 'tag' "
                                 "(inside <reasoning>...</reasoning> or <think>...</think>), 'all' (the completion)",
                                 "trace")
    threshold: float = doc("a completion is right (exploit memory) when its accuracy, the first reward function's "
                           "value, is at least this; else wrong (explore memory)", 0.5, range="(-inf, inf)")


@dataclass(frozen=True)
class EnvironmentConfig:
    factory: str = doc("TRL environment_factory: a class (or zero-argument callable) whose instances are episodes' "
                       "environments, 'pkg.module:Class' or 'path/file.py:Class'; its public methods are tools, "
                       "reset(**row) starts an episode, get_reward() scores it; empty = none", "")
    factories: dict[str, str] = doc("several environments by name (specs as in factory); each row's 'environment' "
                                    "column picks one", factory=dict)
    tools: list[str] = doc("plain tool functions ('pkg.module:fn', 'path/file.py:fn'), offered in every episode",
                           factory=list)
    format: ToolFormatKind = doc("how the model calls tools: 'chat' (the tokenizer's chat template with tools, "
                                 "<tool_call> JSON), 'tag' ('[name:argument]' answered by '[=result]', for models "
                                 "without one) or 'auto' (chat when the template supports tools)", "auto")
    timeout_s: float = doc("timeout of one reset, tool call or get_reward; a hung one is killed and counted as an "
                           "error", 10.0, range=f"(0, {MAX_SECONDS}]")
    memory_mb: int = doc("memory limit of each environment child process in MiB (RLIMIT_DATA; 0 = none)", 4096,
                         range=f"[0, {MAX_RESOURCE}]")
    chat_template_kwargs: dict[str, Any] = doc("keyword arguments for every chat-template render, e.g. "
                                               "{enable_thinking: false} for Qwen3", factory=dict)

    @property
    def enabled(self) -> bool:
        """Whether rollouts are multi-turn episodes."""
        return bool(self.factory or self.factories or self.tools)


@dataclass(frozen=True)
class RunConfig:
    name: str = doc("run name; the run directory is output_dir/name-<timestamp>", "run")
    output_dir: str = doc("parent directory of run directories", "runs")
    steps: int = doc("training steps", 60, range=f"[1, {MAX_STEPS}]")
    max_train_minutes: float = doc("stop training after this wall time (0 = no limit); the last step finishes", 0.0,
                                   range="[0, inf)")
    eval_every: int = doc("held-out eval every N steps, greedy and sampled (eval/*, eval/sampled/*; 0 = greedy, "
                          "only before and after training)", 0, range=f"[0, {MAX_STEPS}]")
    log_samples_every: int = doc("every N steps write a few completions per data_source (prompt, completion, "
                                 "each reward, advantage, length) to run_dir/samples.jsonl and TensorBoard; 0 = "
                                 "never", 50, range=f"[0, {MAX_STEPS}]")
    log_samples_per_source: int = doc("completions per data_source in each samples.jsonl record", 2,
                                      range=f"[1, {MAX_COUNT}]")
    eval_samples: int = doc("completions per held-out prompt in the sampled eval (eval/sampled/*): its accuracy "
                            "is their mean, and eval/sampled/se/mean its standard error over prompts", 1,
                            range=f"[1, {MAX_COUNT}]")
    eval_max_new_tokens: int = doc("generation cap in held-out eval", 12, range=f"[1, {MAX_TOKENS}]")
    save_final: bool = doc("write a Hugging Face checkpoint of the final policy into run_dir/final", True)
    tensorboard: bool = doc("false turns TensorBoard off even when run.loggers lists it (the older switch)", True)
    loggers: list[str] = doc("experiment trackers that get every step's metrics and logged completions: "
                             "'tensorboard' (run_dir/tb), 'wandb', 'mlflow' (optional packages: pip install "
                             "\"rlpost[track]\"; their own environment variables say where data goes)",
                             factory=lambda: ["tensorboard"])
    progress_bar: bool = doc("show a progress bar while training", True)
    seed: int = doc("seed of the driver (prompt sampling)", 0, range=f"[0, {MAX_SEED}]")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = doc("save a checkpoint (learner state with optimizer, driver state, Hugging Face weights) every N "
                     "steps (0 = never; SIGTERM still saves one)", 0, range=f"[0, {MAX_STEPS}]")
    keep_last: int = doc("complete checkpoints kept per run (older ones are deleted once a newer one is in place)", 2,
                         range=f"[1, {MAX_COUNT}]")
    save_merged: bool = doc("with model.lora_rank: also write the merged model (full weights) as 'merged/' beside "
                            "the adapter in every checkpoint and in run_dir/final", False)
    on_sigterm: bool = doc("on SIGTERM, finish the step in flight, save a checkpoint and stop", True)
    stop_grace_s: int = doc("with `rlpost submit`: seconds `ray job stop` waits after its SIGTERM (the step in flight "
                            "and the checkpoint) before it sends SIGKILL; Ray's own default is 3", 600,
                            range=f"[0, {MAX_SECONDS}]")
    resume: str = doc("'auto': continue the newest run directory of run.name under run.output_dir from its newest "
                      "complete checkpoint, or start fresh when there is none; or a run directory or checkpoint "
                      "path (an error when it has no complete checkpoint); '' starts fresh (`resume=auto` works as "
                      "a short form)", "")


@dataclass(frozen=True)
class SweepConfig:
    scheduler: SweepScheduler = doc("`rlpost sweep` early stopping: 'lcpfn' stops a trial when LC-PFN's predicted "
                                    "probability that its final metric beats the best finished trial's falls below "
                                    "sweep.threshold; 'asha' is Ray Tune's ASHA; 'none' runs every trial to the end",
                                    "lcpfn")
    metric: str = doc("held-out metric that drives stopping and picks the best trial (higher is better, within "
                      "[0, 1]); reported every run.eval_every steps", "eval/sampled/mean")
    min_steps: int = doc("no trial is stopped before this many training steps", 0, range=f"[0, {MAX_STEPS}]")
    threshold: float = doc("lcpfn: stop when P(final metric > best finished trial's) is below this", 0.05,
                           range="(0, 1)")
    lcpfn_falling: float = doc("lcpfn: share of the extrapolator's training curves that fall instead of rise (0 = "
                               "the paper's prior, rising curves only; an RL run that collapses is a falling curve)",
                               0.2, range="[0, 1]")
    reduction_factor: int = doc("asha: keep the top 1/reduction_factor of trials at each rung", 3,
                                range=f"[2, {MAX_COUNT}]")
    num_samples: int = doc("times the search space is sampled (each grid combination that many times, with fresh "
                           "draws of the random keys)", 1, range=f"[1, {MAX_COUNT}]")
    max_concurrent: int = doc("trials running at once (0 = as many as the Ray cluster holds; the others queue)", 0,
                              range=f"[0, {MAX_COUNT}]")
    seed: int = doc("seed of the random draws of the search space", 0, range=f"[0, {MAX_SEED}]")


@dataclass(frozen=True)
class RootConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


SECTIONS = tuple(f.name for f in dataclasses.fields(RootConfig))


class RecipeError(ValueError):
    """A recipe or override that does not fit the schema; the message names the key path and the file."""


def reward_name(spec: str) -> str:
    """The short name of a reward spec, used for metrics (`reward/<name>`), `reward.args.<name>` and components:
    the built-in or entry-point name as given, else the function name after ':'. Part of the recipe's language
    (reward.args is keyed by it), so the checks and the plugin loader (rewards/) share this one definition."""
    return spec.rsplit(":", 1)[-1] if ":" in spec else spec


def leaf_types(section: str) -> dict[str, Any]:
    """The resolved type of each field of a section ('algorithm' -> {'baseline': Literal['mean', 'rloo'], ...})."""
    return typing.get_type_hints(typing.get_type_hints(RootConfig)[section])


def all_fields() -> list[tuple[str, str, Any, str]]:
    """(key path, type name, default, doc) for every leaf field, in schema order: the source of CLI help. A choice
    shows the type of its values (str, int); the values themselves are in the doc."""
    rows = []
    for section, section_type in typing.get_type_hints(RootConfig).items():
        types = typing.get_type_hints(section_type)
        for leaf in dataclasses.fields(section_type):
            default = leaf.default_factory() if callable(leaf.default_factory) else leaf.default
            if is_choice(types[leaf.name]):
                type_name = type(values_of(types[leaf.name])[0]).__name__
            else:
                type_name = leaf.type if isinstance(leaf.type, str) else getattr(leaf.type, "__name__", str(leaf.type))
            rows.append((f"{section}.{leaf.name}", type_name, default, leaf.metadata.get("doc", "")))
    return rows


def choice_fields() -> dict[str, tuple[Any, ...]]:
    """Every choice-typed leaf as 'section.key': its allowed values, in schema order (recipe_checks.CHOICES)."""
    return {f"{section}.{name}": values_of(kind) for section in SECTIONS
            for name, kind in leaf_types(section).items() if is_choice(kind)}


def range_fields(kind: typing.Literal["range", "entries"] = "range") -> dict[str, str]:
    """Every leaf declaring an interval as 'section.key': its interval, in schema order. 'range' gives the numeric
    keys (recipe_checks.RANGES), 'entries' the lists and mappings of numbers (recipe_checks.ENTRY_RANGES)."""
    section_types = typing.get_type_hints(RootConfig)
    return {f"{section}.{leaf.name}": leaf.metadata[kind] for section in SECTIONS
            for leaf in dataclasses.fields(section_types[section]) if kind in leaf.metadata}
