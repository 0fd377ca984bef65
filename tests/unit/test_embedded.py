"""The embedded suite and base model: deterministic, disjoint splits, verifiable answers, a loadable tiny Llama."""

import json

import pytest

from rlpost.embedded.model import BuildSettings, ensure_base_model, model_config, read_report
from rlpost.embedded.tasks import SOURCES, length, make_suite, score
from rlpost.embedded.tokenizer import VOCAB_SIZE, build_tokenizer, vocab


def test_suite_is_seeded_disjoint_and_tagged():
    a, b = make_suite(50, 20, seed=3), make_suite(50, 20, seed=3)
    assert a == b
    assert make_suite(50, 20, seed=4) != a
    assert not {r["prompt"] for r in a["train"]} & {r["prompt"] for r in a["test"]}
    assert {r["data_source"] for r in a["train"]} == set(SOURCES)
    for row in a["train"] + a["test"]:
        digits = row["prompt"].rstrip("=")
        assert len(digits) == length(row["data_source"])
        assert int(row["answer"]) == sum(map(int, digits))


def test_small_sources_keep_most_problems_for_training():
    suite = make_suite(1000, 1000, sources=("sum2",))
    assert len(suite["test"]) == 25 and len(suite["train"]) == 75


def test_score_is_exact_match():
    assert score(" 17 ", "17") == 1.0
    assert score("171", "17") == 0.0
    with pytest.raises(ValueError):
        length("add3")


def test_tokenizer_round_trips_characters():
    tok = build_tokenizer()
    ids = tok("3527=")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 6
    assert tok.decode(ids, skip_special_tokens=True) == "3527="
    assert max(vocab().values()) < VOCAB_SIZE


def test_model_config_has_vllm_cpu_head_dim():
    config = model_config()
    assert config.head_dim == 64 and config.hidden_size // config.num_attention_heads == 64


def test_tiny_build_is_cached_and_reproducible(tmp_path):
    settings = BuildSettings(sft_steps=3, warmup_steps=1, n_train_per_source=20, n_eval_per_source=4)
    path = ensure_base_model(tmp_path / "m", settings, log=lambda *_: None)
    report = read_report(path)
    assert set(report["greedy_accuracy"]) == set(SOURCES)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    ensure_base_model(tmp_path / "m", settings, log=lambda *_: None)  # cache hit: not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    again = ensure_base_model(tmp_path / "n", settings, log=lambda *_: None)
    assert (again / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    assert json.loads((path / "config.json").read_text())["head_dim"] == 64


def test_graded_suite_spans_solved_to_unreachable_lengths():
    from rlpost.embedded.tasks import GRADED, MAX_DIGITS

    suite = make_suite(30, 10, seed=0, sources=GRADED)
    assert {r["data_source"] for r in suite["test"]} == set(GRADED) and len(GRADED) == 12
    assert max(len(r["prompt"]) for r in suite["train"]) == 17  # sum16 + '='
    assert length(f"sum{MAX_DIGITS}") == MAX_DIGITS
    for bad in ("sum0", f"sum{MAX_DIGITS + 1}", "sum", "sumx"):
        with pytest.raises(ValueError, match="sumK"):
            length(bad)


def test_the_graded_recipe_is_the_graded_suite():
    from rlpost.embedded.tasks import GRADED
    from rlpost.recipes import load_config

    config = load_config("dump_graded")
    assert tuple(config.data.embedded_sources) == GRADED and config.sampler.kind == "dump"
    assert config.run.eval_samples == 4 and tuple(load_config("quickstart").data.embedded_sources) == SOURCES


def test_trace_text_full_merged_and_bare():
    from rlpost.embedded.traces import trace_text

    assert trace_text((3, 5, 2, 7)) == "3+5=8;8+2=10;10+7=17;#17"
    assert trace_text((3, 5, 2, 7), (True, False, False)) == "3+5+2=10;10+7=17;#17"
    assert trace_text((3, 5, 2, 7), (False, True, False)) == "3+5=8;8+2+7=17;#17"
    assert trace_text((3, 5, 2, 7), (True, True, False)) == "3+5+2+7=17;#17"
    assert trace_text((3, 5, 2, 7), (True, True, True)) == "#17" and trace_text((4,)) == "#4"


def test_trace_score_reads_only_the_final_answer():
    from rlpost.embedded.traces import final_answer, reasoning, score

    assert score("3+5=8;8+2=10;10+7=17;#17", "17") == 1.0
    assert score("3+5=9;#17", "17") == 1.0  # a wrong trace with the right answer still counts (answer only)
    assert score("#17 ", " 17") == 1.0 and score("17", "17") == 0.0 and score("#1#17", "17") == 1.0
    assert score("3+5=8;#18", "17") == 0.0 and final_answer("no mark") is None
    assert reasoning("3+5=8;#8") == "3+5=8;" and reasoning("8") == "8"


def test_trace_suite_and_sft_targets():
    import random

    from rlpost.embedded.traces import sft_target, trace_length

    suite = make_suite(40, 10, seed=1, sources=("trace3", "trace5"))
    assert not {r["prompt"] for r in suite["train"]} & {r["prompt"] for r in suite["test"]}
    for row in suite["train"]:
        digits = row["prompt"].rstrip("=")
        assert row["trace"].endswith(f"#{row['answer']}") and row["trace"].count(";") == len(digits) - 1
        assert len(digits) == trace_length(row["data_source"])
    rng = random.Random(0)
    targets = [sft_target("35271=", rng, merge_p=0.3, skip_p=0.1) for _ in range(2000)]
    full = "3+5=8;8+2=10;10+7=17;17+1=18;#18"
    assert all(t.endswith("#18") for t in targets)
    shares = (targets.count(full) / 2000, targets.count("#18") / 2000)
    assert 0.6 < shares[0] < 0.8 and 0.07 < shares[1] < 0.14  # 60% full + merges that happened to merge nothing
    with pytest.raises(ValueError, match="traceK"):
        trace_length("trace9")


def test_trace_recipes_are_the_trace_benchmark_arms():
    """recipes/trace_<arm>.yaml and scripts/bench_trace.py's arms are the same runs."""
    import sys
    from pathlib import Path

    from rlpost.recipes import load_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from bench_trace import ARMS

    for arm, overrides in ARMS.items():
        recipe = "trace" if arm == "grpo" else f"trace_{arm}"
        mine, theirs = load_config(recipe), load_config("trace", overrides)
        assert {k: v for k, v in vars(mine).items() if k != "run"} == \
            {k: v for k, v in vars(theirs).items() if k != "run"}, arm


def test_only_the_trace_tokenizer_has_the_answer_mark():
    """The digit-sum model's tokenizer is the one it always had (its runs stay as they were); the trace task's adds
    '#' after every other character, so every other id is the same."""
    from rlpost.embedded.tokenizer import TRACE_CHARS

    plain, trace = vocab(), vocab(TRACE_CHARS)
    assert "#" not in plain and trace["#"] == len(plain) and {k: trace[k] for k in plain} == plain
    assert build_tokenizer(TRACE_CHARS)("3+5=8;#8")["input_ids"][-2] == trace["#"]
    assert max(trace.values()) < VOCAB_SIZE
