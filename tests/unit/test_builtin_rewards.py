"""Built-in rewards: golden vectors (research notes §10.5, §10.7, §10.9), math_verify answers, format, length."""

import threading

import pytest

from rewards.format import think_answer_format
from rewards.length import dapo_overlong, kimi_length_penalty, length_budget_reward
from rewards.math import boxed_math, gsm8k_final_number, math_accuracy
from rewards.protocol import style_of


def _call(fn, completions=None, ids=None, **columns):
    """Call a reward the way the worker does: keyword arguments only, one prompt per completion."""
    if completions is None:
        completions = ["x"] * len(ids)
    if ids is None:
        ids = [[0]] * len(completions)
    return fn(prompts=["p"] * len(completions), completions=completions, completion_ids=ids, **columns)


def _tokens(*lengths):
    return [[0] * n for n in lengths]


# --- math ------------------------------------------------------------------------------------------------------------

def test_math_accuracy_compares_values_not_strings():
    completions = ["So the answer is \\boxed{1/2}.", "Total: \\boxed{1234}", "The answer is 1,234.",
                   "I get \\boxed{7}", "\\boxed{\\frac{\\sqrt{3}}{2}}"]
    answer = ["0.5", "He pays 1,000 + 234 = 1,234 dollars.\n#### 1,234", "#### 1234", "8", "\\frac{\\sqrt{3}}{2}"]
    assert _call(math_accuracy, completions, answer=answer) == [1.0, 1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("gold", ["", "???", "#### "])
def test_math_accuracy_unparseable_gold_gives_no_score(gold):
    assert _call(math_accuracy, ["\\boxed{1}", "\\boxed{2}"], answer=[gold, "2"]) == [None, 1.0]


def test_math_accuracy_works_off_the_main_thread():
    # math_verify's default signal.alarm timeout raises in threads (verl/TRL reports); rlpost disables it
    results, errors = [], []

    def work():
        try:
            results.append(_call(math_accuracy, ["\\boxed{\\frac{1}{2}}"], answer=["0.5"]))
        except Exception as error:  # reported by the assert below
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert errors == [] and results == [[1.0]]


def test_boxed_math_mix_golden_10_9():
    # (correct, boxed) → 1; (wrong, boxed) → −0.5; (correct, unboxed) → −1; (wrong, unboxed) → −1
    completions = ["\\boxed{4}", "\\boxed{5}", "the answer is 4", "the answer is 5"]
    assert _call(boxed_math, completions, answer=["4"] * 4) == [1.0, -0.5, -1.0, -1.0]
    assert _call(boxed_math, completions, answer=["4"] * 4, mode="mix") == [1.0, -0.5, -1.0, -1.0]


def test_boxed_math_other_modes_and_arguments():
    completions = ["\\boxed{4}", "\\boxed{5}", "the answer is 4", "the answer is 5"]
    answer = ["4"] * 4
    assert _call(boxed_math, completions, answer=answer, mode="independent") == [1.0, -0.5, 0.5, -1.0]
    assert _call(boxed_math, completions, answer=answer, mode="correct_only") == [1.0, 0.0, 1.0, 0.0]
    assert _call(boxed_math, completions, answer=answer, format_penalty=-2.0, wrong_boxed=0.0) == [1, 0, -2, -2]
    # the last box decides; a box cut off by the length cap does not count as boxed
    assert _call(boxed_math, ["\\boxed{5} no wait \\boxed{4}", "\\boxed{4"], answer=["4", "4"]) == [1.0, -1.0]
    assert _call(boxed_math, ["\\boxed{4}"], answer=[""]) == [None]
    with pytest.raises(ValueError, match="correct_only, mix, independent"):
        _call(boxed_math, completions, answer=answer, mode="strict")


def test_gsm8k_final_number_still_works():
    assert _call(gsm8k_final_number, ["so 1,234.", "so 12"], answer=["#### 1234", "#### 13"]) == [1.0, 0.0]


# --- format ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, expected", [
    ("<think>2+2 is 4</think><answer>4</answer>", 1.0),
    ("  <think>\nhmm\n</think>\n\n<answer> 4 </answer>\n", 1.0),
    ("<answer>4</answer><think>late</think>", 0.0),
    ("<think>a</think>", 0.0),
    ("<answer>4</answer>", 0.0),
    ("Sure! <think>a</think><answer>4</answer>", 0.0),
    ("<think>a</think><answer>4</answer> extra", 0.0),
    ("<think>a</think> between <answer>4</answer>", 0.0),
    ("<think>a</think><answer>4</answer><answer>5</answer>", 0.0),
    ("<think><think>a</think></think><answer>4</answer>", 0.0),
])
def test_think_answer_format(completion, expected):
    assert _call(think_answer_format, [completion]) == [expected]


def test_think_answer_format_with_prefilled_think():
    completions = ["reasoning...</think><answer>4</answer>", "<think>again</think><answer>4</answer>",
                   "reasoning <answer>4</answer>"]
    assert _call(think_answer_format, completions, think_prefilled=True) == [1.0, 0.0, 0.0]
    assert _call(think_answer_format, completions) == [0.0, 1.0, 0.0]


# --- length ----------------------------------------------------------------------------------------------------------

def test_kimi_length_penalty_golden_10_5():
    assert style_of(kimi_length_penalty).group
    values = _call(kimi_length_penalty, ids=_tokens(100, 200, 300, 400),
                   components={"math_accuracy": [1.0, 0.0, 1.0, 0.0]}, step=3)
    assert values == pytest.approx([0.5, 0.0, -0.1667, -0.5], abs=1e-4)
    same = _call(kimi_length_penalty, ids=_tokens(50, 50, 50), components={"acc": [1.0, 0.0, 1.0]})
    assert same == [0.0, 0.0, 0.0]


def test_kimi_length_penalty_reads_the_named_component_and_threshold():
    components = {"fmt": [1.0, 1.0, 1.0, 1.0], "acc": [0.9, 0.2, float("nan"), 0.7]}
    values = _call(kimi_length_penalty, ids=_tokens(100, 200, 300, 400), components=components, accuracy="acc",
                   threshold=0.8)
    assert values == pytest.approx([0.5, 0.0, -1 / 6, -0.5])
    with pytest.raises(ValueError, match="'nope'"):
        _call(kimi_length_penalty, ids=_tokens(1, 2), components=components, accuracy="nope")


def test_kimi_length_penalty_warmup_and_missing_components():
    kwargs = {"ids": _tokens(100, 200), "components": {"acc": [1.0, 1.0]}, "warmup_steps": 10}
    assert _call(kimi_length_penalty, step=9, **kwargs) == [0.0, 0.0]
    assert _call(kimi_length_penalty, step=10, **kwargs) == [0.5, -0.5]
    assert _call(kimi_length_penalty, **kwargs) == [0.5, -0.5]  # no step column: no warm-up
    for components in ({}, None):
        with pytest.raises(ValueError, match="accuracy reward listed before it in reward.functions"):
            _call(kimi_length_penalty, ids=_tokens(1, 2), components=components)


def test_dapo_overlong_golden_10_7():
    ids = _tokens(100, 16384, 18432, 20480)
    assert _call(dapo_overlong, ids=ids, max_length=20480, buffer=4096) == [0.0, 0.0, -0.5, -1.0]
    # max_length from the run's max_new_tokens column, buffer defaulting to a fifth of it
    assert _call(dapo_overlong, ids=ids, max_new_tokens=20480) == pytest.approx([0.0, 0.0, -0.5, -1.0], abs=1e-3)
    assert _call(dapo_overlong, ids=_tokens(90, 100), max_new_tokens=100, factor=0.5) == [-0.25, -0.5]
    with pytest.raises(ValueError, match="max_new_tokens"):
        _call(dapo_overlong, ids=ids)


@pytest.mark.parametrize("shape, expected", [
    ("within", [1.0, 1.0, 0.5, 0.0, 0.0]),
    ("triangular", [0.5, 1.0, 0.5, 0.0, 0.0]),
    ("step", [1.0, 1.0, 0.0, 0.0, 0.0]),
])
def test_length_budget_shapes(shape, expected):
    ids = _tokens(50, 100, 150, 200, 400)
    assert _call(length_budget_reward, ids=ids, length_budget=100.0, shape=shape) == pytest.approx(expected)


def test_length_budget_needs_the_curriculum_column():
    assert _call(length_budget_reward, ids=_tokens(10), length_budget=179.2) == [1.0]
    with pytest.raises(ValueError, match="sampler.budget_initial"):
        _call(length_budget_reward, ids=_tokens(10), step=0, max_new_tokens=64)
    with pytest.raises(ValueError, match="within, triangular, step"):
        _call(length_budget_reward, ids=_tokens(10), length_budget=100.0, shape="gaussian")


# --- both forms of the contract --------------------------------------------------------------------------------------

def test_every_builtin_but_code_scores_chat_completions_as_their_text():
    """Chat data sends message lists (rewards/protocol.py); each built-in gives the same values as on the text."""
    from rewards.synthetic import exact_match

    texts = ["<think>a</think><answer>4</answer>", "So \\boxed{4}", "the answer is 5"]
    chat = [[{"role": "assistant", "content": t}] for t in texts]
    messages = [[{"role": "user", "content": "2+2?"}]] * 3
    ids, answer = _tokens(3, 5, 9), ["4"] * 3
    cases = [(math_accuracy, {"answer": answer}), (boxed_math, {"answer": answer}),
             (gsm8k_final_number, {"answer": ["#### 4"] * 3}), (think_answer_format, {}),
             (exact_match, {"answer": ["the answer is 5"] * 3}), (dapo_overlong, {"max_length": 8, "buffer": 4}),
             (length_budget_reward, {"length_budget": 4.0}),
             (kimi_length_penalty, {"components": {"acc": [1.0, 0.0, 1.0]}})]
    for fn, columns in cases:
        plain = fn(prompts=["2+2?"] * 3, completions=texts, completion_ids=ids, **columns)
        assert fn(prompts=messages, completions=chat, completion_ids=ids, **columns) == plain, fn.__name__
        assert len(set(map(str, plain))) > 1, fn.__name__  # values that differ, so a wrong reading shows
