from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ringfence.transport import ConfigError, TransportConfig


def test_defaults_are_the_standard_ports() -> None:
    config = TransportConfig(tls_cert_dir=Path("/var/lib/ringfence/tls"))

    assert (config.udp_port, config.tcp_port, config.tls_port) == (5060, 5060, 5061)
    assert config.ws_port is None
    assert config.burst_per_ip == 2 * config.rate_per_ip


@pytest.mark.parametrize(
    "settings",
    [
        {"udp_port": 70000},
        {"tcp_port": -1},
        {"idle_timeout_s": 0},
        {"rate_per_ip": -5},
        {"max_datagram_bytes": 70000},
        {"tls_cert_file": Path("cert.pem")},
        {"tls_port": 5061},
        {"tls_port": None, "wss_port": 8443},
    ],
)
def test_impossible_settings_are_refused(settings: dict[str, Any]) -> None:
    base: dict[str, Any] = {"tls_port": None}
    with pytest.raises(ConfigError):
        TransportConfig(**(base | settings))
