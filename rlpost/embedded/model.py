"""The embedded base model: a tiny Llama (character tokenizer, head_dim 64 for vLLM-CPU) warm-started by a short,
seeded SFT on the task suite, so the easiest distribution is mostly solved, the middle ones partly, the hardest
rarely — the regime where RL has something to teach.

The build is cached: `ensure_base_model` reuses a folder whose report carries the same settings fingerprint.
Leaves out: multi-seed SFT (one checkpoint is shared by all runs; benchmarks say so).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlpost.embedded.traces import sft_target

if TYPE_CHECKING:
    import torch
    from transformers import LlamaConfig

BUILD_VERSION = 1  # bump when the build's code changes in a way that changes the weights


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides the base model's weights."""

    seed: int = 0
    hidden_size: int = 128
    layers: int = 2
    intermediate_size: int = 512
    sft_steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    final_lr_fraction: float = 0.3  # linear decay to this share of lr; 1.0 keeps it constant
    # share of SFT examples per source: short sums seen often, the longest never
    mixture: dict[str, float] = field(default_factory=lambda: {
        "sum3": 0.5, "sum5": 0.25, "sum7": 0.15, "sum9": 0.1, "sum13": 0.0})
    n_train_per_source: int = 2000
    n_eval_per_source: int = 200
    data_seed: int = 0
    max_new_tokens: int = 4
    task: str = "sum"  # 'sum': answer only; 'trace': a scratchpad of partial sums, then '#' and the answer
    merge_p: float = 0.0  # trace: share of SFT targets with random steps merged
    skip_p: float = 0.0  # trace: share of SFT targets with no steps ('#17')
    tool_p: float = 0.0  # tool: share of SFT targets that call the add tool (rlpost/embedded/tools.py)

    def fingerprint(self) -> str:
        settings = asdict(self)
        if self.task == "sum":  # fields added with the trace task leave the digit-sum model's fingerprint as it was
            for name in ("task", "merge_p", "skip_p"):
                settings.pop(name)
        if self.task != "tool":  # added with the tool task: the other models' fingerprints stay as they were
            settings.pop("tool_p")
        text = json.dumps({"version": BUILD_VERSION, **settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def trace_settings() -> BuildSettings:
    """The trace task's base model: mostly full traces, some merged (a fifth) and a few bare answers, so that every
    trace length can be sampled. SFT sees trace3-trace6 only: greedy accuracy about 96% on trace3-trace5, 88% on
    trace6, 8% on trace7 (never seen), so RL has a graded task; about a minute on one core."""
    return BuildSettings(task="trace", sft_steps=400, max_new_tokens=56, merge_p=0.2, skip_p=0.05,
                         mixture={"trace3": 0.2, "trace4": 0.25, "trace5": 0.3, "trace6": 0.25, "trace7": 0.0})


def tool_settings() -> BuildSettings:
    """The tool task's base model. Digit-sum prompts ('3527=', sum3-sum9) are answered directly, or with the add tool
    in 15% of SFT targets, so sampling calls it now and then and greedy decoding rarely; sum13 is never seen. The
    skill of calling (copying the digits, then the result) is taught apart, on '3527?' prompts of 3-13 digits that
    always call the tool (the 'call' share), so it is in reach when RL makes '=' prompts call."""
    return BuildSettings(task="tool", sft_steps=1500, max_new_tokens=32, tool_p=0.15,
                         mixture={"sum3": 0.25, "sum5": 0.15, "sum7": 0.1, "sum9": 0.1, "call": 0.4})


def _call_rows(settings: BuildSettings) -> list[dict[str, str]]:
    """The tool task's always-call SFT rows: '?' prompts of 3 to 13 digits."""
    from rlpost.embedded.tasks import make_rows

    rows = [r for k in range(3, 14) for r in make_rows(f"sum{k}", settings.n_train_per_source // 4,
                                                        settings.data_seed + 7)]
    return [{**r, "prompt": r["prompt"][:-1] + "?", "data_source": "call"} for r in rows]


def _target(settings: BuildSettings, prompt: str, answer: str, rng: Any) -> list[tuple[str, bool]]:
    """A prompt's SFT completion as (text, trained) parts."""
    from rlpost.embedded.tools import sft_parts

    if settings.task == "tool":
        return sft_parts(prompt, rng, settings.tool_p)
    return [(answer if settings.task == "sum" else sft_target(prompt, rng, settings.merge_p, settings.skip_p), True)]


def model_config(settings: BuildSettings | None = None) -> LlamaConfig:
    """The tiny Llama architecture (about 1M parameters)."""
    from transformers import LlamaConfig

    from rlpost.embedded.tokenizer import BOS, EOS, PAD, VOCAB_SIZE, vocab

    s = settings or BuildSettings()
    table = vocab()
    return LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.layers, num_attention_heads=s.hidden_size // 64, num_key_value_heads=s.hidden_size // 64,
        head_dim=64, max_position_embeddings=128, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=table[BOS], eos_token_id=table[EOS], pad_token_id=table[PAD], tie_word_embeddings=False)


def _sft_batches(settings: BuildSettings, tokenizer: Any, rows: list[dict[str, str]]
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless seeded batches of (input_ids, attention_mask, labels) with the loss on answer + EOS only."""
    import random

    import torch

    rng = random.Random(settings.seed)
    by_source: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_source.setdefault(row["data_source"], []).append(row)
    names = [n for n, w in settings.mixture.items() if w > 0 and n in by_source]
    weights = [settings.mixture[n] for n in names]
    while True:
        picked = [rng.choice(by_source[rng.choices(names, weights)[0]]) for _ in range(settings.batch_size)]
        seqs, labels = [], []
        for row in picked:
            prompt = tokenizer(row["prompt"])["input_ids"]
            seq, lab_row = list(prompt), [-100] * len(prompt)
            for text, trained in _target(settings, row["prompt"], row["answer"], rng):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                seq += ids
                lab_row += ids if trained else [-100] * len(ids)
            seqs.append(seq + [tokenizer.eos_token_id])
            labels.append(lab_row + [tokenizer.eos_token_id])
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
        lab = torch.full((len(seqs), width), -100)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (seq, lab_row) in enumerate(zip(seqs, labels)):
            ids[i, : len(seq)], lab[i, : len(lab_row)] = torch.tensor(seq), torch.tensor(lab_row)
            mask[i, : len(seq)] = 1
        yield ids, mask, lab


def greedy_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, str]], max_new_tokens: int,
                    batch_size: int = 256, task: str = "sum") -> dict[str, float]:
    """Greedy pass@1 per data_source, decoded in plain torch (left-padded batches)."""
    import torch

    from rlpost.embedded import tasks, traces

    score = tasks.score if task == "sum" else traces.score

    correct: dict[str, list[float]] = {}
    model.eval()
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo: lo + batch_size]
        prompts = [tokenizer(r["prompt"])["input_ids"] for r in chunk]
        width = max(map(len, prompts))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for row, text in zip(chunk, texts):
            correct.setdefault(row["data_source"], []).append(score(text, row["answer"]))
    model.train()
    return {source: sum(v) / len(v) for source, v in sorted(correct.items())}


def greedy_tool_episodes(model: Any, tokenizer: Any, rows: list[dict[str, str]], max_new_tokens: int,
                         force_call: bool = False) -> dict[str, dict[str, float]]:
    """The tool task's greedy episodes in plain torch: per data_source the accuracy and the share of episodes that
    called the tool. A model turn ends at EOS or at a ']' that closes a tag call, which the environment answers
    (rlpost/embedded/tools.py); `force_call` starts every completion with '[add:' (is the tool in reach?)."""
    import torch

    from rlpost.embedded.tools import DigitTools, score
    from rlpost.episodes import call_tag_tool, environment_tools, parse_tag_call

    tools = environment_tools(DigitTools())
    DigitTools.reset(tools["add"].__self__)  # type: ignore[attr-defined]  # the bound method's instance
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in rows]
    done = [False] * len(rows)
    completions = [tokenizer("[add:", add_special_tokens=False)["input_ids"] if force_call else [] for _ in rows]
    called = [force_call] * len(rows)
    model.eval()
    for _ in range(max_new_tokens):
        live = [i for i in range(len(rows)) if not done[i]]
        if not live:
            break
        seqs = [prompts[i] + completions[i] for i in live]
        width = max(map(len, seqs))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(q)) + q for q in seqs])
        mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in seqs])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
        for i, token in zip(live, logits[:, -1].argmax(-1).tolist()):
            if token == tokenizer.eos_token_id:
                done[i] = True
                continue
            completions[i].append(token)
            call = parse_tag_call(tokenizer.decode(completions[i])) if token == tokenizer.convert_tokens_to_ids("]") \
                else None
            if call is not None:
                called[i] = True
                completions[i] += tokenizer(call_tag_tool(tools, call)[0], add_special_tokens=False)["input_ids"]
    model.train()
    out: dict[str, dict[str, list[float]]] = {}
    for row, completion, was_called in zip(rows, completions, called):
        stats = out.setdefault(row["data_source"], {"accuracy": [], "call_rate": []})
        stats["accuracy"].append(score(tokenizer.decode(completion, skip_special_tokens=True), row["answer"]))
        stats["call_rate"].append(float(was_called))
    return {source: {k: sum(v) / len(v) for k, v in stats.items()} for source, stats in sorted(out.items())}


def build_base_model(out_dir: Path, settings: BuildSettings | None = None, log: Any = print) -> dict[str, Any]:
    """Train the base model from scratch (seeded SFT), save it in Hugging Face format, and report pass rates."""
    import torch
    from transformers import LlamaForCausalLM

    from rlpost.embedded.tasks import make_suite
    from rlpost.embedded.tokenizer import TRACE_CHARS, build_tokenizer, save_tokenizer
    from rlpost.embedded.tools import TOOL_CHARS

    s = settings or BuildSettings()
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast and keeps runs reproducible
    try:
        torch.manual_seed(s.seed)
        extra = {"trace": TRACE_CHARS, "tool": TOOL_CHARS}.get(s.task, "")
        tokenizer = build_tokenizer(extra)
        suite = (make_suite(s.n_train_per_source, s.n_eval_per_source, seed=s.data_seed) if s.task == "sum" else
                 make_suite(s.n_train_per_source, s.n_eval_per_source, seed=s.data_seed,
                            sources=tuple(k for k in s.mixture if k != "call")))
        if s.task == "tool":
            suite["train"] += _call_rows(s)
            suite["test"] += make_suite(0, s.n_eval_per_source, seed=s.data_seed, sources=("sum13",))["test"]
        model = LlamaForCausalLM(model_config(s))
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.98), weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: min(1.0, (i + 1) / s.warmup_steps)
            * (1 - (1 - s.final_lr_fraction) * i / s.sft_steps))
        batches = _sft_batches(s, tokenizer, suite["train"])
        for step in range(1, s.sft_steps + 1):
            ids, mask, labels = next(batches)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % 250 == 0:
                log(f"[base model] SFT step {step}/{s.sft_steps} loss {loss.item():.4f}")
        accuracy: dict[str, Any]
        if s.task == "tool":
            episodes = greedy_tool_episodes(model, tokenizer, suite["test"], s.max_new_tokens)
            forced = greedy_tool_episodes(model, tokenizer, suite["test"], s.max_new_tokens, force_call=True)
            accuracy = {k: {**v, "forced_call_accuracy": forced[k]["accuracy"]} for k, v in episodes.items()}
        else:
            accuracy = greedy_accuracy(model, tokenizer, suite["test"], s.max_new_tokens, task=s.task)
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(out_dir, extra)
    report = {"fingerprint": s.fingerprint(), "settings": asdict(s), "greedy_accuracy": accuracy,
              "build_seconds": round(time.perf_counter() - start, 1),
              "parameters": sum(p.numel() for p in model.parameters())}
    (out_dir / "base_model_report.json").write_text(json.dumps(report, indent=2))
    return report


def read_report(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "base_model_report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_base_model(out_dir: Path, settings: BuildSettings | None = None, force: bool = False,
                      log: Any = print) -> Path:
    """Reuse `out_dir` if it holds a model built with these settings, else build it (about a minute on 1 core).

    The build goes to a temporary folder renamed into place, so an interrupted build never looks complete.
    """
    from rlpost.atomic import build_dir_atomic

    s = settings or BuildSettings()
    report = read_report(out_dir)
    if not force and report and report.get("fingerprint") == s.fingerprint() and (out_dir / "config.json").exists():
        return out_dir
    log(f"[base model] building the embedded base model into {out_dir} (seeded SFT, cached afterwards)")
    build_dir_atomic(out_dir, lambda tmp: build_base_model(tmp, s, log))
    return out_dir
