"""asyncio adapters that move SIP messages between the network and the core.

UDP, TCP, TLS and WebSocket (RFC 7118) listeners, outbound connections and RFC 5626 flows.
Nothing here knows SIP above framing: a message comes in, goes to `on_message` with its
source `Address`; the core answers with `TransportManager.send`.
"""

from ringfence.transport.config import TransportConfig
from ringfence.transport.errors import (
    CertificateError,
    ConfigError,
    ListenError,
    TransportError,
)
from ringfence.transport.loop import install_uvloop
from ringfence.transport.manager import TransportManager

__all__ = [
    "CertificateError",
    "ConfigError",
    "ListenError",
    "TransportConfig",
    "TransportError",
    "TransportManager",
    "install_uvloop",
]
