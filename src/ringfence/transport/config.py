"""What the transports need to know: where to listen, which certificate, which limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ringfence.sip.parser import MAX_BODY_BYTES, MAX_DATAGRAM_BYTES, MAX_HEADER_BYTES, MAX_HEADERS
from ringfence.transport.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """The transport section of the settings, validated on construction.

    A port of None disables that listener; a port of 0 binds an ephemeral port (tests),
    which `TransportManager.local` reports.

    Raises:
        ConfigError: a port or limit out of range, or TLS/WSS enabled without a certificate
            source (`tls_cert_file` and `tls_key_file`, or `tls_cert_dir`).
    """

    #: Address every listener binds to.
    host: str = "0.0.0.0"  # noqa: S104 - a SIP server listens on every interface by default
    udp_port: int | None = 5060
    tcp_port: int | None = 5060
    tls_port: int | None = 5061
    #: SIP over WebSocket (RFC 7118), plain and over TLS.
    ws_port: int | None = None
    wss_port: int | None = None

    #: A configured certificate chain and key (PEM), used when both are set.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Otherwise a self-signed pair is made here on first start, and reused afterwards.
    tls_cert_dir: Path | None = None
    #: Names the self-signed certificate is made for (127.0.0.1 is always added).
    tls_hostnames: tuple[str, ...] = ()
    #: Extra trust anchors (PEM) for outbound TLS; the system's are used too.
    tls_ca_file: Path | None = None

    #: SO_RCVBUF of the UDP socket (RFC 3261 §18 says nothing; bursts need room).
    udp_receive_buffer_bytes: int = 4 * 1024 * 1024
    #: A UDP datagram or WebSocket message longer than this is dropped unparsed.
    max_datagram_bytes: int = MAX_DATAGRAM_BYTES
    #: Parser limits (RFC 3261 §21.5.14: 513 Message Too Large).
    max_header_bytes: int = MAX_HEADER_BYTES
    max_headers: int = MAX_HEADERS
    max_body_bytes: int = MAX_BODY_BYTES

    #: A connection holding part of a message for longer than this is closed (slow senders).
    message_timeout_s: float = 10.0
    #: A connection that receives nothing, keep-alives included, for this long is closed.
    idle_timeout_s: float = 600.0
    #: Inbound connections from one IP address beyond this are closed at accept.
    max_connections_per_ip: int = 100
    #: Messages (and keep-alives) per second from one IP address; bursts of twice that.
    rate_per_ip: float = 2000.0
    #: How long an outbound TCP/TLS connection may take to open.
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("udp_port", "tcp_port", "tls_port", "ws_port", "wss_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65_535:
                raise ConfigError(f"{name} {port} is not a port number")
        positive = {
            "max_datagram_bytes": self.max_datagram_bytes,
            "udp_receive_buffer_bytes": self.udp_receive_buffer_bytes,
            "max_header_bytes": self.max_header_bytes,
            "max_headers": self.max_headers,
            "max_body_bytes": self.max_body_bytes,
            "message_timeout_s": self.message_timeout_s,
            "idle_timeout_s": self.idle_timeout_s,
            "max_connections_per_ip": self.max_connections_per_ip,
            "rate_per_ip": self.rate_per_ip,
            "connect_timeout_s": self.connect_timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, not {value}")
        if self.max_datagram_bytes > MAX_DATAGRAM_BYTES:
            raise ConfigError(f"max_datagram_bytes is at most {MAX_DATAGRAM_BYTES}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file go together")
        if self.needs_certificate and self.tls_cert_file is None and self.tls_cert_dir is None:
            raise ConfigError(
                "TLS or WSS is enabled: set tls_cert_file/tls_key_file or tls_cert_dir"
            )

    @property
    def needs_certificate(self) -> bool:
        return self.tls_port is not None or self.wss_port is not None

    @property
    def burst_per_ip(self) -> float:
        """The token bucket's depth: twice the rate."""
        return 2 * self.rate_per_ip
