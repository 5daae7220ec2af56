"""Running the stand-ins: HTTP/2 over TLS on loopback, with the keys a client needs.

`PushSandbox` starts the APNs production and sandbox environments and the FCM token and send
endpoints, writes a `.p8` key, a service-account file and a certificate to trust into a
directory, and gives the `[push]` settings that point ringfence at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.types import ASGIApp

from ringfence.clock import Clock
from ringfence.config import ApnsAppSettings, FcmAppSettings, PushSettings
from ringfence.sandbox.apns import ApnsCloud, apns_app
from ringfence.sandbox.fcm import FcmCloud, fcm_app
from ringfence.transport.tls import CertificateFiles, ensure_self_signed

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def serve_tls(
    app: ASGIApp, certificate: CertificateFiles | None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve `app` over TLS (HTTP/2 offered by ALPN) until the block ends; yields its base URL.

    Without a certificate it serves plain HTTP/1.1 (a webhook endpoint in a lab).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    bound_port = listener.getsockname()[1]
    config = Config()
    # The socket is bound here, so the port is known before the server starts (port 0).
    config.bind = [f"fd://{listener.detach()}"]
    if certificate is not None:
        config.certfile = str(certificate.cert_file)
        config.keyfile = str(certificate.key_file)
    config.accesslog = None
    config.errorlog = logger
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    # hypercorn types the ASGI callable more narrowly than Starlette does.
    served = serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    task = asyncio.create_task(served)
    try:
        yield f"{'https' if certificate else 'http'}://{host}:{bound_port}"
    finally:
        stop.set()
        await task


@dataclass(frozen=True)
class SandboxPorts:
    apns: int = 0
    apns_sandbox: int = 0
    fcm: int = 0


class PushSandbox:
    """The three stand-ins, their credentials, and the settings that use them."""

    def __init__(
        self,
        directory: Path,
        clock: Clock,
        *,
        bundle_id: str = "org.ringfence.sandbox",
        project_id: str = "ringfence-sandbox",
        team_id: str = "SANDBOXTM1",
        key_id: str = "SANDBOXK01",
        ports: SandboxPorts = SandboxPorts(),
        accept_unknown_tokens: bool = True,
    ) -> None:
        self.directory = directory
        self.bundle_id, self.project_id = bundle_id, project_id
        self.team_id, self.key_id = team_id, key_id
        self.apns = ApnsCloud(clock, accept_unknown_tokens=accept_unknown_tokens)
        self.fcm = FcmCloud(clock)
        self._clock = clock
        self._ports = ports
        self._stack = contextlib.AsyncExitStack()
        self.apns_url = self.apns_sandbox_url = self.fcm_url = ""

    @property
    def key_file(self) -> Path:
        return self.directory / f"AuthKey_{self.key_id}.p8"

    @property
    def service_account_file(self) -> Path:
        return self.directory / "service-account.json"

    @property
    def certificate(self) -> CertificateFiles:
        return ensure_self_signed(self.directory, ["localhost"], self._clock.now())

    async def __aenter__(self) -> PushSandbox:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        certificate = self.certificate
        self.apns.add_app(self.bundle_id)
        enter = self._stack.enter_async_context
        self.apns_url = await enter(
            serve_tls(apns_app(self.apns, sandbox=False), certificate, port=self._ports.apns)
        )
        self.apns_sandbox_url = await enter(
            serve_tls(apns_app(self.apns, sandbox=True), certificate, port=self._ports.apns_sandbox)
        )
        self.fcm_url = await enter(serve_tls(fcm_app(self.fcm), certificate, port=self._ports.fcm))
        self.fcm.token_url = f"{self.fcm_url}/token"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _write_credentials(self) -> None:
        apns_key = ec.generate_private_key(ec.SECP256R1())
        self.key_file.write_bytes(
            apns_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.key_file.chmod(0o600)
        self.apns.add_key(self.key_id, self.team_id, apns_key.public_key())
        account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"push@{self.project_id}.iam.gserviceaccount.com"
        private_key_id = "sandbox-key-1"
        pem = account_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        account = {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": private_key_id,
            "private_key": pem,
            "client_email": email,
            # Rewritten below once the port is known: the settings point token_url at it.
            "token_uri": "https://oauth2.googleapis.com/token",
        }
        self.service_account_file.write_text(json.dumps(account, indent=2), encoding="utf-8")
        self.service_account_file.chmod(0o600)
        self.fcm.add_service_account(
            private_key_id, email, self.project_id, account_key.public_key()
        )

    def settings(self) -> PushSettings:
        """`[push]` settings that send to these stand-ins."""
        ca_file = self.certificate.cert_file
        return PushSettings(
            apns=(
                ApnsAppSettings(
                    bundle_id=self.bundle_id,
                    team_id=self.team_id,
                    key_id=self.key_id,
                    key_file=self.key_file,
                    production_url=self.apns_url,
                    sandbox_url=self.apns_sandbox_url,
                    ca_file=ca_file,
                ),
            ),
            fcm=(
                FcmAppSettings(
                    service_account_file=self.service_account_file,
                    url=self.fcm_url,
                    token_url=self.fcm.token_url,
                    ca_file=ca_file,
                ),
            ),
        )

    def toml(self) -> str:
        """The same settings as a TOML fragment for a ringfence settings file."""
        ca = self.certificate.cert_file
        return "\n".join(
            [
                "[[push.apns]]",
                f'bundle_id = "{self.bundle_id}"',
                f'team_id = "{self.team_id}"',
                f'key_id = "{self.key_id}"',
                f'key_file = "{self.key_file}"',
                f'production_url = "{self.apns_url}"',
                f'sandbox_url = "{self.apns_sandbox_url}"',
                f'ca_file = "{ca}"',
                "",
                "[[push.fcm]]",
                f'service_account_file = "{self.service_account_file}"',
                f'url = "{self.fcm_url}"',
                f'token_url = "{self.fcm.token_url}"',
                f'ca_file = "{ca}"',
                "",
            ]
        )


class SandboxThread:
    """A `PushSandbox` served by an event loop of its own in a thread, for callers that block.

    Tests and benchmarks that drive SIP peers with blocking calls use it; they read what
    the stand-ins received from `box` (lists are appended to by the sandbox's loop).
    """

    def __init__(self, box: PushSandbox) -> None:
        self.box = box
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PushSandbox:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.box.__aenter__(), self.loop).result(30)
        return self.box

    def __exit__(self, *exc: object) -> None:
        stopping = self.box.__aexit__(None, None, None)
        asyncio.run_coroutine_threadsafe(stopping, self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
