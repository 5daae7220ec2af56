"""A missing peer skips a developer's run but fails CI's, naming the package."""

from __future__ import annotations

import pytest

from tests.support.tools import missing_tool


def test_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package sip-tester"):
        missing_tool("sipp", "sip-tester")


def test_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        missing_tool("sipp", "sip-tester")
