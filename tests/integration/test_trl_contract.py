"""TRL's reward functions, named by dotted path and unchanged, on a chat-formatted dataset through the real path:
the recipe's data through `prepare()` (plugins checked in a child process against the data's columns), the driver's
request (rlpost/scoring.py) and two reward-worker actors on a local Ray, each with its plugin child process.
No vLLM or learner: the completions are fixed texts, so the expected scores are known."""

from __future__ import annotations

import json

import pytest

TRL = ["trl.rewards:accuracy_reward", "trl.rewards:think_format_reward"]

FORM = '''
from rewards import reward

@reward(health=lambda **kw: {"form_ready": 1.0})
def form(prompts, completions, completion_ids, trainer_state, **kw):
    """1.0 when both arrive in TRL's conversational form, the prompt as the dataset holds it."""
    ok = [isinstance(p, list) and p[-1]["role"] == "user" and c == [{"role": "assistant", "content": c[0]["content"]}]
          for p, c in zip(prompts, completions)]
    return [float(o) + trainer_state.global_step for o in ok]
'''


def _chat_recipe(tmp_path, functions):
    """A recipe on a jsonl file of message-list prompts, with a character tokenizer given a chat template."""
    from rlpost.embedded.model import model_config
    from rlpost.embedded.tokenizer import build_tokenizer
    from rlpost.recipes import load_config

    model = tmp_path / "model"
    model_config().save_pretrained(model)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }};{% endfor %}"
    tokenizer.save_pretrained(str(model))
    rows = [{"prompt": [{"role": "system", "content": "think first."}, {"role": "user", "content": f"{a}+1=?"}],
             "answer": str(a + 1), "solution": f"${a + 1}$"} for a in range(4)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = tmp_path / "chat.jsonl"
    return load_config("quickstart", [f"model.path={model}", "data.source=jsonl", f"data.path={data}",
                                      "data.eval_split=''", f"reward.functions=[{','.join(functions)}]"])


def test_trl_rewards_score_chat_data_through_ray_reward_workers(tmp_path, ray_local):
    import ray

    from actors.build import RewardClient
    from actors.reward import RewardSettings, RewardWorker
    from rlpost.app.prepare import prepare
    from rlpost.scoring import RewardHealth, apply_result, build_request
    from rlpost.types import Group, Sample

    (tmp_path / "form.py").write_text(FORM)
    config = _chat_recipe(tmp_path, [*TRL, f"{tmp_path / 'form.py'}:form"])
    setup = prepare(config)
    prompts = setup.train
    assert prompts[0].messages == [{"role": "system", "content": "think first."}, {"role": "user", "content": "0+1=?"}]
    texts = lambda a: [f"<think>\nadd one\n</think>\nSo \\boxed{{{a + 1}}}", f"\\boxed{{{a + 2}}}"]  # noqa: E731
    groups = [Group(p, [Sample(p.uid, [5], [0.0], t, "stop") for t in texts(int(p.answer) - 1)]) for p in prompts]

    settings = RewardSettings.from_config(config.reward)
    handles = [ray.remote(RewardWorker).options(num_cpus=0).remote(settings) for _ in range(2)]
    result = RewardClient(handles, 120, 2, 120).score(build_request(groups, {"step": 3, "max_new_tokens": 8}))
    assert result.errors == 0, result.first_error
    assert result.components["accuracy_reward"] == [1.0, 0.0] * 4
    assert result.components["think_format_reward"] == [1.0, 0.0] * 4
    assert result.components["form"] == [3.0] * 8  # conversational form, and TRL's global_step at step 3
    health = RewardHealth(config.reward.max_error_rate, config.reward.on_error)
    health.record(apply_result(groups, result)[1], result.first_error, "step 3")
    assert health.metrics()["reward_health/form_ready"] == 1.0  # the health hook's gauge, from both workers
    for handle in handles:
        ray.kill(handle)


def test_chat_and_text_prompts_mixed_are_refused_before_actors(tmp_path):
    from rlpost.app.prepare import prepare
    from rlpost.data import DataError

    config = _chat_recipe(tmp_path, TRL)
    data = tmp_path / "chat.jsonl"
    data.write_text(data.read_text() + "\n" + json.dumps({"prompt": "4+1=?", "answer": "5", "solution": "$5$"}))
    with pytest.raises(DataError, match="mixes chat-message prompts .* and plain-text prompts .*row 4"):
        prepare(config)
