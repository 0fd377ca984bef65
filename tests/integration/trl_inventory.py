"""A TRL environment written to TRL's documented contract (GRPOTrainer `environment_factory`), with nothing from
rlpost: a zero-argument class, `reset(**kwargs)`, typed tools with Google-style docstrings, `get_reward()`. Some
tools misbehave on purpose (raise, hang, return garbage) for tests/integration/test_environments.py."""

import time


class Inventory:
    def reset(self, **kwargs) -> str | None:
        self.items: dict[str, int] = {}
        self.answer = kwargs.get("answer")
        return None

    def add(self, item: str) -> str:
        """Add one unit of an item to the inventory.

        Args:
            item: The name of the item.
        """
        self.items[item] = self.items.get(item, 0) + 1
        return f"{item}={self.items[item]}"

    def count(self, item: str) -> int:
        """How many units of an item the inventory holds.

        Args:
            item: The name of the item.
        """
        return self.items.get(item, 0)

    def explode(self, item: str) -> str:
        """A tool that always fails.

        Args:
            item: Ignored.
        """
        raise RuntimeError(f"boom on {item}")

    def stall(self, item: str) -> str:
        """A tool that never returns in time.

        Args:
            item: Ignored.
        """
        time.sleep(120)
        return item

    def garbage(self, item: str) -> object:
        """A tool that returns something that is not a tool result.

        Args:
            item: Ignored.
        """
        return object()

    def get_reward(self) -> float:
        return float(sum(self.items.values()))
