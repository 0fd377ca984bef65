"""Episodes (model and environment turns), TRL's environment contract and the tag tool-call format."""

from __future__ import annotations

import pytest

from rlpost.episodes import Episode, ToolCall, Turn, call_tag_tool, environment_tools, parse_tag_call, tool_schema


class SumEnv:
    """Written to TRL's documented contract: reset, typed tool methods with docstrings, get_reward."""

    def reset(self, **row) -> str | None:
        self.calls, self.answer = 0, row.get("answer")
        return None

    def add(self, digits: str) -> int:
        """Add the digits of a number.

        Args:
            digits: the digits to add, e.g. "3527"
        """
        self.calls += 1
        return sum(int(d) for d in digits)

    def get_reward(self) -> float:
        return float(self.calls > 0)

    def _private(self) -> None:
        pass


def test_episode_reassembly_and_loss_mask():
    episode = Episode([Turn("model", [5, 6, 7], [-0.1, -0.2, -0.3]), Turn("env", [8, 9]),
                       Turn("model", [10], [-0.4])])
    assert episode.completion_ids() == [5, 6, 7, 8, 9, 10]
    assert episode.loss_mask() == [1, 1, 1, 0, 0, 1]  # no environment token is trained on
    assert episode.logprobs() == [-0.1, -0.2, -0.3, 0.0, 0.0, -0.4]
    assert episode.counts() == {"turns": 2, "env_turns": 1, "model_tokens": 4, "env_tokens": 2}
    with pytest.raises(ValueError, match="one logprob per token"):
        Turn("model", [1, 2], [-0.1])
    with pytest.raises(ValueError, match="no sampling logprobs"):
        Turn("env", [1], [-0.1])


def test_environment_tools_follow_trls_contract():
    env = SumEnv()
    env.reset(answer="17")
    tools = environment_tools(env)
    assert sorted(tools) == ["add"]  # reset, get_reward and private methods are not tools
    schema = tool_schema("add", tools["add"])
    assert schema["function"]["name"] == "add"
    assert schema["function"]["parameters"]["properties"]["digits"]["type"] == "string"

    def untyped(x):
        return x

    with pytest.raises(ValueError, match="tool 'untyped'"):
        tool_schema("untyped", untyped)


def test_tag_calls_parse_run_and_report_errors():
    env = SumEnv()
    env.reset()
    tools = environment_tools(env)
    assert parse_tag_call("3527=[add:3527]") == ToolCall("add", "3527")
    assert parse_tag_call("3527=17") is None and parse_tag_call("[add:35]17") is None  # only at the turn's end
    assert call_tag_tool(tools, ToolCall("add", "3527")) == ("[=17]", None)
    assert env.get_reward() == 1.0
    reply, error = call_tag_tool(tools, ToolCall("mul", "35"))
    assert reply == "[!unknown tool mul]" and "unknown tool 'mul'" in error and "add" in error

    def boom(x: int) -> int:
        raise RuntimeError("tool broke")

    def garbage(x: str) -> object:
        return object()

    def typed(n: int) -> int:
        return n * 2

    reply, error = call_tag_tool({"boom": boom}, ToolCall("boom", "1"))
    assert reply == "[!runtimeerror]" and "Traceback" in error and "tool broke" in error
    reply, error = call_tag_tool({"garbage": garbage}, ToolCall("garbage", "1"))
    assert reply.startswith("[!bad result") and "returned object" in error
    assert call_tag_tool({"typed": typed}, ToolCall("typed", "21")) == ("[=42]", None)
    reply, error = call_tag_tool({"typed": typed}, ToolCall("typed", "x"))
    assert reply.startswith("[!bad argument") and "'x' is not int" in error
