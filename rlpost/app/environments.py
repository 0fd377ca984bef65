"""The environment section of a recipe as a run uses it: checked before any actor starts (the environments and
tools imported and probed in a child process, as reward plugins are), the tool-call format resolved, and the
driver's episode runner built over the engines and the reward workers that host the environments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlpost.config import RecipeError, RootConfig

if TYPE_CHECKING:
    from actors.env_host import EnvSettings
    from rlpost.rollouts import Rollouts
    from rlpost.types import RolloutEngine


@dataclass
class EnvPlan:
    """What the check found: the workers' settings, each environment's tools (name -> JSON schema, None in the tag
    format) and whether it has get_reward, the resolved format, and the reward component name of each get_reward."""

    settings: EnvSettings
    info: dict[str, Any]
    format: str  # 'tag' or 'chat'
    reward_names: dict[str, str]

    def schemas(self) -> dict[str, list[dict[str, Any]]]:
        """Per environment, the schemas its prompts list (its tools and the plain tools)."""
        plain = [s for s in self.info[""]["tools"].values() if s]
        return {name: [*[s for s in entry["tools"].values() if s], *plain]
                for name, entry in self.info.items() if name} or {"default": plain}


def factories(config: RootConfig) -> dict[str, str]:
    """Environment name -> spec: `factories`, or the single `factory` as 'default'."""
    env = config.environment
    if env.factory and env.factories:
        raise RecipeError("keys 'environment.factory' and 'environment.factories' are both set; give one (a dict "
                          "of factories picks one per row by the 'environment' column)")
    return dict(env.factories) if env.factories else ({"default": env.factory} if env.factory else {})


def resolve_format(config: RootConfig, tokenizer: Any) -> str:
    """'tag' or 'chat': environment.format, with 'auto' choosing chat when the chat template supports tools."""
    from rlpost.tool_formats import supports_tools

    kind = config.environment.format
    has_template = bool(getattr(tokenizer, "chat_template", None)) and config.data.chat_template == "auto"
    if kind == "auto":
        return "chat" if has_template and supports_tools(tokenizer) else "tag"
    if kind == "chat" and not (has_template and supports_tools(tokenizer)):
        raise RecipeError("key 'environment.format' is 'chat' but the tokenizer's chat template does not render "
                          "tool calls and tool results (set 'tag', or use a chat model whose template supports tools)")
    return kind


def check_environments(config: RootConfig, tokenizer: Any) -> EnvPlan | None:
    """Import and probe the recipe's environments and tools in a child process; None without any. A class that
    cannot be imported or built, a tool without type hints and docstring (chat) or with an argument the tag format
    cannot pass is a RewardPluginError naming it."""
    from actors.env_host import EnvHost, EnvSettings

    if not config.environment.enabled:
        return None
    specs, kind = factories(config), resolve_format(config, tokenizer)
    settings = EnvSettings(specs, list(config.environment.tools), kind == "tag", config.environment.timeout_s,
                           config.environment.memory_mb)
    host = EnvHost(settings)
    try:
        info = dict(host.info)
    finally:
        host.close()
    names = {name: spec.rsplit(":", 1)[-1].rsplit(".", 1)[-1] for name, spec in specs.items()
             if info.get(name, {}).get("reward")}
    if not config.reward.functions and not names:
        raise RecipeError("key 'reward.functions' is empty and no environment has get_reward(): nothing would score "
                          "the episodes")
    return EnvPlan(settings, info, kind, names)


def episode_rollouts(config: RootConfig, engine: RolloutEngine, pool: Any, plan: EnvPlan, tokenizer: Any
                     ) -> Rollouts:
    """Rollouts whose samples are episodes, with environments on the reward workers (`pool`: a RewardPool that is
    also an EnvironmentPool)."""
    from rlpost.multiturn import EpisodeRunner
    from rlpost.rollouts import Rollouts
    from rlpost.tool_formats import make_format

    fmt = make_format(plan.format, tokenizer, [s for group in plan.schemas().values() for s in group] or None,
                      dict(config.environment.chat_template_kwargs))
    runner = EpisodeRunner(engine, pool, fmt, tokenizer, config.rollout.max_turns, config.rollout.max_model_len,
                           chat=plan.format == "chat")
    return Rollouts(config, engine, pool, runner, plan.reward_names)
