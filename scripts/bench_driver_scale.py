#!/usr/bin/env python
"""How the single controller's cost grows with the step's size: the real `Trainer.step` over synthetic data and stub
workers that answer instantly, so what is measured is the driver (../shared/research/driver-scale.md, issue 17).

Data: prompts of 256 token ids over 8 data sources; 16 samples per prompt with Gamma(k=4) lengths around the chosen
mean, clipped to [16, 2 x mean] (about 4% at the cap, finish_reason 'length'); ids and logprobs are Python ints and
float32 numpy arrays, as the rollout actor hands them over (`--samples-as lists`: Python ints and floats, as it did
before issue 17); text is 4 chars per token; rewards are 0/1.
Modes, each point in its own process (peak RSS is the point's own) over `--steps` steps (reported: the median of
steps 2..n; step 1 pays first-touch page faults and actor imports):
- inprocess: the real `LocalEngine` / `LocalRewardPool` of actors/build.py over stub workers, a learner that touches
  its shards and returns {}, no weight sync: pure driver Python.
- ray: the real `RolloutClient`, `RewardClient` and `LearnerClient` over trivial Ray actors (num_cpus=0): 2 engines
  holding precomputed samples, 2 reward workers answering 0/1, 2 learner processes standing for 8 ranks.
Bytes through Ray: rollout results and reward chunks as pickled (measured after the timed steps), shards as their
tensors' bytes. Leaves out: the weight sync and the probe (refs only), the KL-in-reward and GVM paths, network time.

    python scripts/bench_driver_scale.py --quick
    python scripts/bench_driver_scale.py --points 256x512,8192x4096 --mode ray --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: a worktree given there wins

PROMPT_LEN, GROUP, SOURCES, VOCAB, CHARS_PER_TOKEN, SHAPE_K = 256, 16, 8, 151_000, 4, 4.0
DEFAULT_POINTS = "256x512,1024x4096,4096x4096,8192x4096"
QUICK_POINTS = "64x256,256x512,512x1024"
# Peak memory per completion token, all processes together, by how samples hold their tokens: lists (before issue
# 17; driver-scale.md: ~220 B in-process, ~295 B with Ray, whose actors and object store hold ~150 B more) and arrays
# (measured: the driver ~40 B, the stub engines, reward workers and object store ~60 B more); a safety factor and a
# fixed base on top.
BYTES_PER_TOKEN = {("lists", "inprocess"): 250.0, ("lists", "ray"): 300.0 + 150.0,
                   ("arrays", "inprocess"): 60.0, ("arrays", "ray"): 40.0 + 60.0}
MEMORY_MARGIN, MEMORY_BASE = 1.3, 0.8e9
PHASES = ("time/generate", "time/reward", "time/advantage", "time/train")
SHARD_BUILDERS = ("build_shards", "compact_shards")  # what rlpost/loop.py has called its shard builder


# ---------------------------------------------------------------- arguments and points


def parse_point(text: str) -> tuple[int, int]:
    """'8192x4096' -> (samples, mean completion length); samples a multiple of 16, mean at least 16."""
    try:
        samples, mean = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"point {text!r} is not SAMPLESxMEAN_LEN (e.g. 8192x4096)") from None
    if samples <= 0 or samples % GROUP:
        raise argparse.ArgumentTypeError(f"point {text!r}: samples must be a positive multiple of {GROUP}")
    if mean < 16:
        raise argparse.ArgumentTypeError(f"point {text!r}: mean length must be at least 16 (the shortest sample)")
    return samples, mean


def parse_points(text: str) -> list[tuple[int, int]]:
    return [parse_point(p) for p in text.split(",") if p.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=parse_points, default=None,
                        help=f"samples x mean length, comma-separated (default {DEFAULT_POINTS})")
    parser.add_argument("--mode", choices=("inprocess", "ray", "both"), default="ray")
    parser.add_argument("--steps", type=int, default=3, help="steps per point; the median of steps 2..n is reported")
    parser.add_argument("--out", type=Path, default=None, help="write every point's numbers here (JSON)")
    parser.add_argument("--quick", action="store_true", help=f"points {QUICK_POINTS}, both modes (< 2 minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples-as", choices=("arrays", "lists"), default="arrays",
                        help="how samples hold ids and logprobs: numpy arrays (the rollout actor today) or Python "
                             "lists (before issue 17)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per point's process")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one point, write JSON
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (step 1 is a warm-up)")
    if args.quick:
        args.points, args.mode = args.points or parse_points(QUICK_POINTS), "both"
    args.points = args.points or parse_points(DEFAULT_POINTS)
    return args


def modes(mode: str) -> list[str]:
    return ["inprocess", "ray"] if mode == "both" else [mode]


def estimate_bytes(samples: int, mean: int, mode: str, samples_as: str = "arrays") -> float:
    """Peak memory the point needs on this machine, all processes together, with margin."""
    return samples * mean * BYTES_PER_TOKEN[samples_as, mode] * MEMORY_MARGIN + MEMORY_BASE


def available_bytes() -> float:
    """MemAvailable from /proc/meminfo (inf where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


# ---------------------------------------------------------------- synthetic data


def completion_lengths(rng: np.random.Generator, n: int, mean: int) -> np.ndarray:
    """Gamma(k=4) lengths around `mean`, clipped to [16, 2 x mean]."""
    raw = rng.gamma(SHAPE_K, mean / SHAPE_K, size=n)
    return np.clip(np.rint(raw), 16, 2 * mean).astype(np.int64)


def make_prompts(count: int, seed: int) -> list[Any]:
    """`count` prompts of 256 token ids, spread over 8 data sources."""
    from rlpost.types import Prompt

    rng = np.random.default_rng([seed, 1])
    prompts = []
    for uid in range(count):
        source = f"source{uid % SOURCES}"
        prompts.append(Prompt(uid=uid, text="x" * (PROMPT_LEN * CHARS_PER_TOKEN),
                              token_ids=rng.integers(0, VOCAB, PROMPT_LEN).tolist(), answer="0",
                              data_source=source, columns={"answer": "0", "data_source": source}))
    return prompts


def make_group(seed: int, index: int, mean: int, size: int = GROUP, as_lists: bool = False) -> list[Any]:
    """One prompt's samples (the same for a given seed and index, whichever process makes them): int32 ids and
    float32 logprobs as numpy arrays, or (as_lists) the same values as Python lists."""
    from rlpost.types import Sample

    rng = np.random.default_rng([seed, 2, index])
    cap = 2 * mean
    samples = []
    for length in completion_lengths(rng, size, mean).tolist():
        ids = rng.integers(0, VOCAB, length).astype(np.int32)
        logprobs = (-rng.exponential(1.0, length)).astype(np.float32)
        samples.append(Sample(prompt_uid=index, token_ids=ids.tolist() if as_lists else ids,
                              logprobs=logprobs.tolist() if as_lists else logprobs, text="abcd" * length,
                              finish_reason="length" if length == cap else "stop"))
    return samples


def config_overrides(samples: int, mean: int) -> list[str]:
    return [f"algorithm.prompts_per_step={samples // GROUP}", f"rollout.samples_per_prompt={GROUP}",
            "learner.world_size=8", f"rollout.max_new_tokens={2 * mean}",
            f"rollout.max_model_len={PROMPT_LEN + 2 * mean + 64}", "sampler.kind=dump",
            "reward.chunk_size=64", "sync.probe_sequences=0"]


# ---------------------------------------------------------------- stub workers


class StubRollout:
    """Answers every request at once with precomputed groups (by position in the request list)."""

    def __init__(self, seed: int, mean: int, indices: list[int], as_lists: bool = False) -> None:
        self.groups = [make_group(seed, i, mean, as_lists=as_lists) for i in indices]

    def generate(self, requests: list[Any]) -> list[list[Any]]:
        if len(requests) > len(self.groups):
            raise ValueError(f"{len(requests)} requests, {len(self.groups)} precomputed groups")
        return self.groups[: len(requests)]

    def ping(self) -> bool:
        return True


class StubReward:
    """0/1 rewards, alternating, so every group of 16 has signal."""

    def score(self, request: Any) -> Any:
        from rlpost.types import RewardResult

        rewards = [float(i % 2) for i in range(len(request.completions))]
        return RewardResult(rewards=rewards, components={"accuracy": list(rewards)})


class StubLearner:
    """Touches each shard it receives and trains nothing."""

    def train(self, shards: Any, loss: Any, micro_batches: int, max_tokens_per_micro: int = 0) -> dict[str, float]:
        tensor_bytes(shards)
        return {}

    def submit_train(self, shards: Any, loss: Any, micro_batches: int,
                     max_tokens_per_micro: int = 0) -> Callable[[], dict[str, float]]:
        """In process: trains at once; the result is ready."""
        result = self.train(shards, loss, micro_batches, max_tokens_per_micro)
        return lambda: result

    def ping(self) -> bool:
        return True


class NoSync:
    def sync(self) -> dict[str, float]:
        return {}

    def rejoin(self, slot: int) -> dict[str, float]:
        return {}


def inprocess_workers(config: Any, seed: int, mean: int, groups: int) -> Any:
    from actors.build import LocalEngine, LocalRewardPool
    from rlpost.types import Workers

    return Workers(rollout=LocalEngine(StubRollout(seed, mean, list(range(groups)), AS_LISTS[0])),  # type: ignore[arg-type]
                   learner=StubLearner(), reward=LocalRewardPool(StubReward(), config.reward.chunk_size),  # type: ignore[arg-type]
                   weight_sync=NoSync())


def ray_workers(config: Any, seed: int, mean: int, groups: int) -> Any:
    import ray

    from actors.build import LearnerClient, RewardClient, RolloutClient
    from actors.calls import call
    from rlpost.types import Workers

    root = str(Path(sys.modules["rlpost"].__file__ or "").resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    remote = {cls: ray.remote(num_cpus=0)(cls) for cls in (StubRollout, StubReward, StubLearner)}
    engines = [remote[StubRollout].remote(seed, mean, list(range(i, groups, 2)), AS_LISTS[0]) for i in range(2)]
    rewards = [remote[StubReward].remote() for _ in range(2)]
    learners = [remote[StubLearner].remote() for _ in range(2)]
    call([h.ping.remote() for h in engines + learners], "stub start", 600.0)
    return Workers(rollout=RolloutClient(engines, 600.0), learner=LearnerClient(learners * 4, 600.0),
                   reward=RewardClient(rewards, 600.0, config.reward.chunk_size, 600.0), weight_sync=NoSync())


# ---------------------------------------------------------------- one point (in its own process)


def instrument(seconds: dict[str, float], state: dict[str, Any]) -> None:
    """Time the names the step's modules import (and ray.put); record shard bytes and the last step's groups."""
    import rlpost.loop
    import rlpost.rollouts

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    for module, name in ((rlpost.rollouts, "build_request"), (rlpost.rollouts, "apply_result"),
                         (rlpost.loop, "batch_advantages")):
        if hasattr(module, name):
            setattr(module, name, timed(name, getattr(module, name)))
    builder = next(n for n in SHARD_BUILDERS if hasattr(rlpost.loop, n))  # the name loop.py builds shards with
    build = getattr(rlpost.loop, builder)

    def build_shards(groups: Any, *args: Any, **kwargs: Any) -> Any:
        shards = build(groups, *args, **kwargs)
        state["shard_bytes"] = sum(tensor_bytes(s) for s in shards)
        state["groups"] = groups if state.get("keep") else None
        return shards

    setattr(rlpost.loop, builder, timed("build_shards", build_shards))
    if "ray" in sys.modules:
        import ray

        ray.put = timed("ray_put", ray.put)


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors and arrays a shard holds (what Ray's pickling of it copies, give or take headers)."""
    if hasattr(value, "element_size"):
        return int(value.numel() * value.element_size())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, dict) or hasattr(value, "__dict__"):
        return sum(tensor_bytes(v) for v in (value if isinstance(value, dict) else vars(value)).values())
    return 0


def payload_bytes(groups: list[Any], run: dict[str, Any], chunk_size: int) -> tuple[int, int]:
    """Pickled sizes of the rollout results (per group) and of the reward chunks RewardClient sends."""
    import pickle

    from rlpost.scoring import build_request

    samples = sum(len(pickle.dumps(g.samples, protocol=5)) for g in groups)
    request = build_request(groups, run)
    chunks = sum(len(pickle.dumps(request.slice(a, b), protocol=5)) for a, b in request.chunks(chunk_size))
    return samples, chunks


AS_LISTS = [False]  # the child's --samples-as, read where its stub engines are built


def run_point(samples: int, mean: int, mode: str, steps: int, seed: int) -> dict[str, Any]:
    """The point's numbers: per step driver seconds, `time/*` phases and wrapped sub-phases; bytes; peak RSS."""
    import resource

    import rlpost
    from rlpost.loop import Trainer
    from rlpost.recipes import load_config
    from rlpost.rollouts import run_columns
    from rlpost.sampling import make_sampler

    config = load_config("quickstart", config_overrides(samples, mean))
    groups = samples // GROUP
    build = ray_workers if mode == "ray" else inprocess_workers
    workers = build(config, seed, mean, groups)
    seconds: dict[str, float] = {}
    state: dict[str, Any] = {}
    instrument(seconds, state)
    sampler = make_sampler(config.sampler, make_prompts(max(64, groups), seed), groups, seed)
    trainer = Trainer(config, workers, sampler)
    per_step = []
    for step in range(1, steps + 1):
        state["keep"] = step == steps
        seconds.clear()
        start = time.perf_counter()
        metrics = trainer.step(step)
        wall = time.perf_counter() - start
        per_step.append({"driver_s": wall, "tokens": metrics["tokens/generated"],
                         **{k: v for k, v in metrics.items() if k.startswith("time/")}, **dict(seconds)})
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sample_bytes, reward_bytes = payload_bytes(state["groups"], run_columns(config, steps), config.reward.chunk_size)
    later = per_step[1:]
    median = {k: statistics.median(s.get(k, 0.0) for s in later) for k in later[0]}
    return {"samples": samples, "mean_len": mean, "mode": mode, "steps": steps, "median": median,
            "per_step": per_step, "peak_rss_bytes": peak_rss, "sample_bytes": sample_bytes,
            "reward_bytes": reward_bytes, "shard_bytes": state.get("shard_bytes", 0),
            "rlpost": str(Path(rlpost.__file__).resolve().parent)}


# ---------------------------------------------------------------- the parent: one process per point


def spawn_point(samples: int, mean: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one point in a fresh interpreter; its JSON, or a dict saying why it has none."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "point.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(result), "--points",
               f"{samples}x{mean}", "--mode", mode, "--steps", str(args.steps), "--seed", str(args.seed),
               "--samples-as", args.samples_as]
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        try:
            proc = subprocess.run(cmd, env=env, timeout=args.timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"samples": samples, "mean_len": mean, "mode": mode, "skipped": f"timed out after {args.timeout}s"}
        if proc.returncode or not result.exists():
            tail = (proc.stderr or proc.stdout)[-2000:]
            return {"samples": samples, "mean_len": mean, "mode": mode, "skipped": f"exit {proc.returncode}: {tail}"}
        return json.loads(result.read_text())


def fit(tokens: list[float], values: list[float]) -> tuple[float, float, float]:
    """Least squares values = a + b * tokens: (a, b, R^2); b is NaN with fewer than 2 distinct token counts."""
    x, y = np.asarray(tokens, dtype=float), np.asarray(values, dtype=float)
    if len(set(x.tolist())) < 2:
        return float("nan"), float("nan"), float("nan")
    (b, a) = np.polyfit(x, y, 1)
    residual = float(((y - (a + b * x)) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return float(a), float(b), 1.0 - residual / total if total > 0 else 1.0


def table_row(r: dict[str, Any]) -> list[str]:
    m = r["median"]
    put = m.get("ray_put", 0.0)
    rest = m["time/train"] - m.get("build_shards", 0.0) - put  # learners' get and the call itself
    mb = [r[k] / 1e6 for k in ("sample_bytes", "reward_bytes", "shard_bytes")]
    return [r["mode"], f"{r['samples']}x{r['mean_len']}", f"{m['tokens'] / 1e6:.2f}", f"{m['driver_s']:.3f}",
            f"{m['time/generate']:.3f}", f"{m['time/reward']:.3f}",
            f"{m.get('build_request', 0.0) + m.get('apply_result', 0.0):.3f}", f"{m['time/advantage']:.3f}",
            f"{m.get('build_shards', 0.0):.3f}", f"{put:.3f}", f"{rest:.3f}",
            f"{sum(mb):.1f} ({mb[0]:.1f}+{mb[1]:.1f}+{mb[2]:.1f})", f"{r['peak_rss_bytes'] / 1e9:.2f}"]


HEADER = ["mode", "point", "Mtok", "driver s", "generate", "reward", "req+apply", "advant", "build_shards",
          "ray.put", "learners", "Ray MB (samples+reward+shards)", "RSS GB"]


def format_table(results: list[dict[str, Any]]) -> str:
    """One line per point (median seconds per step), skipped points with their reason."""
    rows = [HEADER] + [table_row(r) for r in results if "skipped" not in r]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines += [f"skipped {r['mode']} {r['samples']}x{r['mean_len']}: {r['skipped']}" for r in results if "skipped" in r]
    return "\n".join(lines)


def format_fits(results: list[dict[str, Any]]) -> str:
    """Per mode: driver seconds and peak RSS against completion tokens."""
    lines = []
    for mode in sorted({r["mode"] for r in results if "skipped" not in r}):
        done = [r for r in results if r["mode"] == mode and "skipped" not in r]
        tokens = [r["median"]["tokens"] for r in done]
        a, b, r2 = fit(tokens, [r["median"]["driver_s"] for r in done])
        ra, rb, rr2 = fit(tokens, [r["peak_rss_bytes"] for r in done])
        lines.append(f"fit {mode} ({len(done)} points): driver {b * 1e9:.0f} ns/token + {a:.3f} s (R2 {r2:.3f}); "
                     f"peak RSS {rb:.0f} B/token + {ra / 1e9:.2f} GB (R2 {rr2:.3f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        (samples, mean), mode = args.points[0], args.mode
        AS_LISTS[0] = args.samples_as == "lists"
        Path(args.child).write_text(json.dumps(run_point(samples, mean, mode, args.steps, args.seed)))
        return 0
    results = []
    for samples, mean in args.points:
        for mode in modes(args.mode):
            need, free = estimate_bytes(samples, mean, mode, args.samples_as), available_bytes()
            if need > free:
                reason = f"needs ~{need / 1e9:.1f} GB (estimate), {free / 1e9:.1f} GB available"
                results.append({"samples": samples, "mean_len": mean, "mode": mode, "skipped": reason})
                print(f"[bench] skip {mode} {samples}x{mean}: {reason}", file=sys.stderr, flush=True)
                continue
            start = time.perf_counter()
            results.append(spawn_point(samples, mean, mode, args))
            print(f"[bench] {mode} {samples}x{mean}: {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    print(format_table(results))
    print(format_fits(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
