from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from ringfence.transport import install_uvloop
from ringfence.transport.loop import run_eagerly


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the policy API, from 3.14 on
def test_install_uvloop_sets_the_policy() -> None:
    previous = asyncio.get_event_loop_policy()
    try:
        assert install_uvloop()
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(previous)


def test_install_uvloop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail

    assert not install_uvloop()


async def test_run_eagerly_finishes_without_a_task() -> None:
    seen: list[str] = []

    async def job() -> None:
        seen.append("ran")

    assert run_eagerly(job()) is None
    assert seen == ["ran"]  # before run_eagerly returned


async def test_run_eagerly_hands_the_rest_to_a_task() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def job() -> None:
        seen.append("before")
        seen.append(await future)
        await asyncio.sleep(0)  # a bare yield, too
        seen.append("after")

    task = run_eagerly(job())
    assert task is not None
    assert seen == ["before"]
    future.set_result("value")
    await task
    assert seen == ["before", "value", "after"]


async def test_run_eagerly_errors_before_and_after_suspending() -> None:
    async def fails_at_once() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        run_eagerly(fails_at_once())

    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await future
        raise ValueError("later")

    task = run_eagerly(fails_later())
    assert task is not None
    future.set_result(None)
    with pytest.raises(ValueError, match="later"):
        await task


async def test_run_eagerly_task_cancellation_reaches_the_coroutine() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def job() -> None:
        try:
            await future
        finally:
            cleaned.append(True)

    task = run_eagerly(job())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
    assert future.cancelled()
