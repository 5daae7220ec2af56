"""A local SMS gateway: a real HTTP server on loopback that keeps what ringfence POSTs.

It follows the contract of `ringfence.sms`: JSON {"to", "text", "sender"}, a bearer token,
2xx for taken. `status` makes it refuse, as a gateway out of credit would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Gateway:
    url: str = ""
    token: str = "gateway-token"
    status: int = 202
    #: Each request taken: its headers (lower-case names) and JSON body.
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def texts_to(self, number: str) -> list[str]:
        return [body["text"] for _, body in self.received if body["to"] == number]


@contextmanager
def sms_gateway() -> Iterator[Gateway]:
    gateway = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            headers = {name.lower(): value for name, value in self.headers.items()}
            if headers.get("authorization") != f"Bearer {gateway.token}":
                self.send_response(401)
            else:
                if gateway.status < 300:
                    gateway.received.append((headers, body))
                self.send_response(gateway.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}/send"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()
