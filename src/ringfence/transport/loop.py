"""The event loop implementation: uvloop when it is installed."""

from __future__ import annotations

import asyncio
import logging

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
