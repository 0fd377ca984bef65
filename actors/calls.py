"""Calls into Ray actors with a deadline and named errors, and the replacement of an actor that died.

Every client (actors/build.py) and the weight syncs go through `call`, so a stuck or dead actor always surfaces as
an `ActorCallError` saying which role, which method and why.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


class ActorCallError(RuntimeError):
    """A Ray call failed or timed out; the message names the role, the method and the cause."""


class ActorDiedError(ActorCallError):
    """The actor serving a call died (killed, out of memory, node lost)."""


def call(refs: list[Any], what: str, timeout_s: float) -> list[Any]:
    """`ray.get` with a timeout and an error that names the call, unwrapping the remote traceback's cause."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    try:
        deadline, pending = time.monotonic() + timeout_s, list(refs)
        position = {ref: i for i, ref in enumerate(refs)}
        values: list[Any] = [None] * len(refs)
        while pending:  # fail as soon as any call fails, not when the slowest (maybe stuck on the failed one) ends
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise GetTimeoutError
            values[position[ready[0]]] = ray.get(ready[0])  # each result fetched and deserialised once
        return values
    except GetTimeoutError:
        raise ActorCallError(f"{what}: no answer within {timeout_s:.0f}s (resources.call_timeout_s)") from None
    except RayTaskError as err:
        cause = err.cause if getattr(err, "cause", None) is not None else err
        raise ActorCallError(f"{what} failed: {type(cause).__name__}: {cause}") from cause
    except RayActorError as err:
        raise ActorDiedError(f"{what}: the actor died ({err})") from None


def replace_dead(handles: list[Any], slot: int, dead: Any, factory: Callable[[int], Any], who: str,
                 timeout_s: float, then: str) -> None:
    """Put a new actor from `factory(slot)` (same placement bundle) in `handles[slot]` and wait until it answers;
    the dead one is killed for good so Ray does not restart it behind our back."""
    import ray

    ray.kill(dead, no_restart=True)
    print(f"[rlpost] warning: {who} died; {then}", file=sys.stderr, flush=True)
    handles[slot] = factory(slot)
    call([handles[slot].ping.remote()], f"{who} start (replacement)", timeout_s)
