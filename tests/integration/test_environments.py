"""A TRL environment class (tests/integration/trl_inventory.py, TRL's contract and nothing of rlpost's) named by
dotted path and run unchanged in two real reward-worker actors on a local Ray, each holding the instances in its own
environment child process: reset with the row, stateful tool calls, get_reward; a tool that raises, hangs or
returns garbage is a counted error with its detail, and a hang costs no other episode its state."""

from __future__ import annotations

from pathlib import Path

from actors.build import RewardClient
from actors.env_host import EnvSettings
from actors.reward import RewardSettings, RewardWorker

HERE = Path(__file__).parent
SPEC = "trl_inventory:Inventory"  # a dotted path: the module is found on PYTHONPATH, as a user's package would be


def _workers(tag_format: bool) -> tuple[RewardClient, list, list]:
    import ray

    settings = RewardSettings(functions=["exact_match"], weights=[], timeout_s=30.0, args={}, on_error="skip",
                              max_error_rate=1.0, memory_mb=0)
    env = EnvSettings({"default": SPEC}, [], tag_format, timeout_s=3.0, memory_mb=0)
    handles = [ray.remote(RewardWorker).options(num_cpus=0, runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}})
               .remote(settings) for _ in range(2)]
    infos = ray.get([h.env_start.remote(env) for h in handles], timeout=300)
    client = RewardClient(handles, 300.0, 64, 60.0)
    client.env_timeout_s = env.timeout_s
    return client, handles, infos


def test_a_trl_environment_runs_unchanged_in_the_reward_workers(ray_local):
    import ray

    client, handles, infos = _workers(tag_format=True)
    assert set(infos[0]["default"]["tools"]) == {"add", "count", "explode", "stall", "garbage"}
    assert infos[0]["default"]["reward"] is True
    rows = [{"prompt": f"p{k}", "answer": str(k), "data_source": "s"} for k in range(4)]
    assert client.env_open([(k, "default", rows[k]) for k in range(4)]) == [(None, "")] * 4
    # episodes 0 and 2 live on worker 0, 1 and 3 on worker 1: state is per episode
    first = client.env_step([(0, "add", {}, "apple"), (1, "add", {}, "fig"), (0, "add", {}, "apple"),
                             (2, "count", {}, "apple")])
    assert [v for v, _, _ in first] == ["apple=1", "fig=1", "apple=2", "0"]
    raised, garbage, unknown = client.env_step([(0, "explode", {}, "x"), (2, "garbage", {}, "x"),
                                                (0, "nope", {}, "x")])
    assert raised[0] is None and "boom on x" in raised[1] and "Traceback" in raised[2]
    assert garbage[0] is None and "bad result" in garbage[1] and "returned object" in garbage[2]
    assert unknown[0] is None and "unknown tool" in unknown[1]
    (hung,) = client.env_step([(3, "stall", {}, "x")])  # killed after environment.timeout_s
    assert hung[0] is None and hung[1] == "timeout" and "timed out" in hung[2]
    assert ray.get(handles[1].env_health.remote()) == {"timeouts": 1, "crashes": 0}
    # the child was replaced; episode 1, on the same worker, was rebuilt by replaying its reset and calls
    after = client.env_step([(1, "add", {}, "fig"), (3, "add", {}, "pear")])
    assert [v for v, _, _ in after] == ["fig=2", "pear=1"]
    assert client.env_finish([0, 1, 2, 3]) == [(2.0, ""), (2.0, ""), (0.0, ""), (1.0, "")]


def test_chat_format_reads_each_tool_schema_from_its_types_and_docstring(ray_local):
    _, _, infos = _workers(tag_format=False)
    schema = infos[0]["default"]["tools"]["add"]
    assert schema["function"]["name"] == "add"
    assert schema["function"]["parameters"]["properties"]["item"] == {"type": "string",
                                                                      "description": "The name of the item."}
