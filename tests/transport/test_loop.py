from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from ringfence.transport import install_uvloop


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
