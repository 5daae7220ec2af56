"""`ringfence dev push-sandbox`: an integrator starts the stand-ins and points ringfence at them."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx

from ringfence.clock import SystemClock
from ringfence.config import Settings
from ringfence.push.apns import ApnsProvider
from ringfence.push.fcm import FcmProvider
from ringfence.push.provider import Delivered, Notification, ProviderName, PushKind, PushTarget


async def test_the_printed_settings_send_pushes_to_the_running_sandbox(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "ringfence",
        "dev",
        "push-sandbox",
        "--directory",
        str(tmp_path),
    ]
    command += ["--apns-port", "0", "--apns-sandbox-port", "0", "--fcm-port", "0"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("ca_file") and "[[push.fcm]]" in "".join(lines)):
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the sandbox stopped before printing its settings"
            lines.append(line)
        toml = "".join(lines[lines.index("[[push.apns]]\n") :])
        settings = Settings(push=tomllib.loads(toml)["push"])
        clock = SystemClock()
        apns = ApnsProvider(settings.push.apns, clock, timeout_s=5)
        fcm = FcmProvider(settings.push.fcm, clock, timeout_s=5)
        call = Notification(PushKind.CALL, "cli-1")
        app = settings.push.apns[0].bundle_id
        assert isinstance(
            await apns.send(PushTarget(ProviderName.APNS, app, "c0ffee" * 8), call), Delivered
        )
        assert isinstance(
            await fcm.send(PushTarget(ProviderName.FCM, "ringfence-sandbox", "t1"), call), Delivered
        )
        await apns.aclose()
        await fcm.aclose()
        ca = ssl.create_default_context(cafile=settings.push.apns[0].ca_file)
        async with httpx.AsyncClient(verify=ca) as client:
            listed = (
                await client.get(f"{settings.push.apns[0].production_url}sandbox/pushes")
            ).json()
        assert [(p["token"], p["payload"]) for p in listed] == [
            ("c0ffee" * 8, {"rf": {"type": "call", "id": "cli-1"}})
        ]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
