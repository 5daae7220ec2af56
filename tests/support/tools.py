"""Real peers the tests need: present, or a clear message naming the Debian package.

`make test` installs every one of them (scripts/install-system-deps), so in CI a missing
tool fails the test; elsewhere (a developer without root) it skips, naming what to install.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing_tool(tool: str, package: str) -> NoReturn:
    message = f"{tool} not installed (Debian package {package}; `make test` installs it as root)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: required in CI")
    pytest.skip(message)
