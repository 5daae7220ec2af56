"""HTTP API throughput in process (no network): login and provisioning fetches per second."""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
import time
from pathlib import Path

import httpx

from ringfence.config import AuthSettings, KeySettings, Settings, StorageSettings
from ringfence.runtime import Runtime


async def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="ringfence-bench-"))
    settings = Settings(
        storage=StorageSettings(data_dir=data),
        keys=KeySettings(kek=base64.b64encode(os.urandom(32)).decode()),
        auth=AuthSettings(login_failures_per_account=10**6, login_failures_per_address=10**6),
    )
    runtime = Runtime(settings)
    await runtime.migrate()
    await runtime.provisioning.create_tenant("acme", "Acme", "sip.acme.example")
    await runtime.provisioning.create_account(
        "acme", "alice", "correct horse", display_name="Alice", e164="+41445551234"
    )
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        body = {"login": "alice@acme", "password": "correct horse"}
        n = 500
        start = time.perf_counter()
        response = await client.post("/v1/auth/login", json=body)
        for _ in range(n - 1):
            response = await client.post("/v1/auth/login", json=body)
        login_rate = n / (time.perf_counter() - start)
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            response = await client.get("/v1/provisioning", headers=headers)
            assert response.status_code == 200
        fetch_rate = n / (time.perf_counter() - start)
    await runtime.aclose()
    print("ringfence HTTP API, in process, SQLite, one client, sequential")
    print(f"{'login (token issued)':<36} {login_rate:>12,.0f} /s")
    print(f"{'GET /v1/provisioning (bearer)':<36} {fetch_rate:>12,.0f} /s")


if __name__ == "__main__":
    asyncio.run(main())
