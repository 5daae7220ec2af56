"""Where the RFC 4475 / RFC 5118 torture messages are: ../shared/sip-torture beside the
checkout (as CI lays it out), or $RINGFENCE_SIP_TORTURE."""

from __future__ import annotations

import os
from pathlib import Path

TORTURE_ROOT = Path(
    os.environ.get("RINGFENCE_SIP_TORTURE", Path(__file__).parents[3] / "shared" / "sip-torture")
)
