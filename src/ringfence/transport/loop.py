"""The event loop: uvloop when it is installed, and eager starts for the SIP hot path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Generator
from typing import Any

logger = logging.getLogger(__name__)


def install_uvloop() -> bool:
    """Make new event loops uvloop loops, if uvloop can be imported.

    Call it before the loop is created (the server entry point does); importing this
    package does not.

    Returns:
        True if uvloop's policy is now set, False if uvloop is not installed.
    """
    try:
        # Imported here, not at the top: uvloop is optional (uvicorn[standard] brings it).
        import uvloop
    except ImportError:
        logger.info("uvloop not installed; using the asyncio event loop")
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coro` at once, up to its first real suspension; a task for the rest, if any.

    What Python 3.12's eager task factory does, for 3.11. Most SIP requests are answered
    from memory (cached credentials, in-memory bindings) without ever suspending, and a
    Task per request cost about 20 µs of the ~250 µs a message takes. Exceptions raised
    before the first suspension propagate to the caller.

    Returns:
        None if `coro` finished; else the task that runs the rest of it.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coro, yielded))


class _Yield:
    """Hands what the coroutine yielded (a future, or None for a bare yield) to the task."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __await__(self) -> Generator[object, object, object]:
        return (yield self.value)


async def _resume(coro: Coroutine[Any, Any, None], yielded: object) -> None:
    # The task waits on the future as if the coroutine had yielded it to the task itself;
    # when it wakes, the coroutine goes on; a cancellation is thrown into it.
    while True:
        try:
            sent = await _Yield(yielded)
        except BaseException as exc:  # noqa: BLE001 - cancellation goes into the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return
