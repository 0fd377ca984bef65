"""`rlpost eval`: a checkpoint on a recipe's held-out data: greedy accuracy and pass@k per data_source.

The same pieces as training, without Ray: a vLLM engine and a reward worker (with its child process) in this
process (actors/build.py `local_engines`), generating and scoring through `Rollouts` with the recipe's reward
functions; the first function is the accuracy, and a sample counts as solved when it reaches
sampler.success_threshold. pass@k uses the unbiased estimator over n >= k samples per prompt (Chen et al. 2021):
1 - C(n - c, k) / C(n, k).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rlpost.config import RootConfig
from rlpost.rollouts import Rollouts
from rlpost.types import GenerationRequest, Group


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate_checkpoint(config: RootConfig, checkpoint: str, ks: list[int], samples: int,
                        split: str | None = None) -> dict[str, dict[str, float]]:
    """Per data_source (and 'mean' over sources): greedy accuracy, mean sampled accuracy and pass@k for each k."""
    from transformers import AutoTokenizer

    from actors.build import local_engines
    from rlpost.app.environments import check_environments, episode_rollouts
    from rlpost.data import DataError, load_rows, per_source, to_prompts

    split = split or config.data.eval_split or config.data.train_split
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise DataError(f"checkpoint {checkpoint!r}: cannot load its tokenizer: {str(err).splitlines()[0]}") from None
    env = check_environments(config, tokenizer)
    tools = env.schemas() if env is not None and env.format == "chat" else None
    prompts = per_source(to_prompts(load_rows(config.data, split), config.data, tokenizer, split, tools),
                         config.data.n_eval_per_source)
    n = max([samples, *ks])
    engine, pool = local_engines(config, checkpoint, env.settings if env else None)
    rollouts = (Rollouts(config, engine, pool) if env is None
                else episode_rollouts(config, engine, pool, env, tokenizer))
    run = {"step": 0, "max_new_tokens": config.rollout.max_new_tokens}
    greedy = [GenerationRequest(p.uid, p.token_ids, 1, config.run.eval_max_new_tokens, 0.0, 1.0, i)
              for i, p in enumerate(prompts)]
    sampled = [GenerationRequest(p.uid, p.token_ids, n, config.rollout.max_new_tokens, config.rollout.temperature,
                                 config.rollout.top_p, config.rollout.seed + i) for i, p in enumerate(prompts)]
    # reward errors are counted and can stop the eval too
    greedy_groups = rollouts.score(rollouts.generate(prompts, greedy), run, "eval")
    sampled_groups = rollouts.score(rollouts.generate(prompts, sampled), run, "eval")
    return _table(greedy_groups, sampled_groups, ks, config.sampler.success_threshold)


def _table(greedy_groups: list[Group], sampled_groups: list[Group], ks: list[int],
           threshold: float) -> dict[str, dict[str, float]]:
    """Per data_source and their mean: greedy accuracy, mean sampled accuracy, pass@k."""
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for group in greedy_groups:
        rows[group.prompt.data_source]["greedy_acc"].append(group.samples[0].accuracy)
    for group in sampled_groups:
        values = [s.accuracy for s in group.samples]
        correct = sum(v >= threshold for v in values)
        row = rows[group.prompt.data_source]
        row["sample_acc"].append(sum(values) / len(values))
        for k in ks:
            if len(values) >= k:  # a sample skipped by the reward's error policy can leave fewer than k
                row[f"pass@{k}"].append(pass_at_k(len(values), correct, k))
    table = {src: {key: sum(v) / len(v) for key, v in sorted(cols.items()) if v} for src, cols in sorted(rows.items())}
    keys = sorted({key for cols in table.values() for key in cols})
    table["mean"] = {key: sum(t[key] for t in table.values() if key in t) / sum(key in t for t in table.values())
                     for key in keys}
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A fixed-width table: one row per data_source, one column per metric, in percent."""
    keys = sorted({key for cols in table.values() for key in cols}, key=lambda k: (k.startswith("pass@"), k))
    lines = [f"{'data_source':14s}" + "".join(f"{key:>12s}" for key in keys)]
    for source, cols in table.items():
        lines.append(f"{source:14s}" + "".join(f"{100 * cols[key]:11.1f}%" if key in cols else f"{'-':>12s}"
                                               for key in keys))
    return "\n".join(lines)


def run_eval(config: RootConfig, checkpoint: str, ks: list[int], samples: int, split: str | None,
             out: str | None) -> dict[str, Any]:
    """The CLI's eval: evaluate, print the table, write the JSON (to `out`, if given)."""
    start = time.perf_counter()
    table = evaluate_checkpoint(config, checkpoint, ks, samples, split)
    print(format_table(table), flush=True)
    report = {"checkpoint": checkpoint, "split": split or config.data.eval_split or config.data.train_split,
              "samples_per_prompt": max([samples, *ks]), "results": table,
              "seconds": round(time.perf_counter() - start, 1)}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
        print(f"[rlpost] wrote {out}", flush=True)
    return report
