"""Logging: one JSON object per line, with no personal data and no secrets.

Call sites log identifiers that are not personal (account ids, tenant codes, request paths
without query strings) and never tokens, passwords or HA1 values.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


#: Libraries whose INFO and DEBUG lines quote URLs, headers or tokens.
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "h2")


def setup(level: str, *, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # HTTP clients log each request's URL: an APNs URL ends in the device token, a webhook
    # URL is the device's endpoint. Neither may reach a log (STYLE: no secrets in logs).
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
