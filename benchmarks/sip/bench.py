"""`make bench-sip`: the same SIPp ladders against Kamailio and against ringfence, side by side.

1. Kamailio 5.6 from Debian, configured as the equivalent registrar + proxy (kamailio.cfg).
2. ringfence: a fresh data directory with the benchmark's 10,000 accounts (user0000..user9999,
   password pw-<user>, domain bench.example), `ringfence serve` with `--workers` SIP worker
   processes (default: one per CPU), MD5 challenges (SIPp knows no other) and no per-source
   rate limit (all load comes from one SIPp on 127.0.0.1).

Both servers get the same CPUs: with one worker the last CPU (SIPp has the others), with more
every CPU, shared with SIPp; Kamailio's children are as many as usual (`run.py`).
3. The comparison table of run.py, with the ratio ringfence / Kamailio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ringfence.config import KeySettings, Settings, StorageSettings
from ringfence.provisioning.service import NewAccount
from ringfence.runtime import Runtime

HERE = Path(__file__).resolve().parent
RUN = HERE / "run.py"
BIN = Path(sys.executable).parent / "ringfence"
DOMAIN = "bench.example"


def free_port() -> int:
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


async def provision(data_dir: Path, users: int) -> None:
    runtime = Runtime(Settings(storage=StorageSettings(data_dir=data_dir), keys=KeySettings()))
    await runtime.migrate()
    await runtime.provisioning.create_tenant("bench", "Benchmark", DOMAIN)
    names = [f"user{n:04d}" for n in range(users)]
    rows = [NewAccount(username=user, password=f"pw-{user}") for user in names]
    await runtime.provisioning.import_accounts("bench", rows)
    await runtime.aclose()


def workers_of(pid: int) -> list[int]:
    """The SIP worker processes `ringfence serve` started (its children)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, str(RUN), *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="short steps, fewer rates")
    parser.add_argument("--skip-kamailio", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="ringfence's sip.workers (default: one per CPU)",
    )
    # Anything else goes to run.py as it is (e.g. --rates-register 100,200,500).
    options, passthrough = parser.parse_known_args()
    extra = ["--users", str(options.users), *passthrough]
    if options.quick:
        extra += ["--duration", "3", "--refine", "0"]
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = ",".join(map(str, cpus)) if options.workers > 1 else str(cpus[-1])
    out = Path(tempfile.mkdtemp(prefix="ringfence-bench-sip-"))
    kamailio_json, ringfence_json = out / "kamailio.json", out / "ringfence.json"
    if not options.skip_kamailio:
        run(
            [
                "--target",
                "kamailio",
                "--server-cpus",
                server_cpus,
                "--json",
                str(kamailio_json),
                *extra,
            ]
        )

    data_dir = out / "ringfence-data"
    started = time.perf_counter()
    asyncio.run(provision(data_dir, options.users))
    print(f"provisioned {options.users} accounts in {time.perf_counter() - started:.1f} s")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")},
        "RINGFENCE_STORAGE__DATA_DIR": str(data_dir),
        "RINGFENCE_HTTP__PORT": str(free_port()),
        "RINGFENCE_SIP__UDP_PORT": str(port),
        "RINGFENCE_SIP__TCP_PORT": str(port),
        "RINGFENCE_SIP__TLS_PORT": "0",
        "RINGFENCE_SIP__WS_PORT": "0",
        "RINGFENCE_SIP__DIGEST_ALGORITHMS": '["MD5"]',
        "RINGFENCE_SIP__RATE_PER_IP": "1000000",
        "RINGFENCE_LOGGING__LEVEL": "WARNING",
        "RINGFENCE_SIP__WORKERS": str(options.workers),
    }
    server = subprocess.Popen(
        ["taskset", "-c", server_cpus, str(BIN), "serve"],
        cwd=out,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        run(
            [
                "--target",
                f"external:127.0.0.1:{port}",
                "--name",
                "ringfence",
                "--server-pids",
                ",".join(str(pid) for pid in (server.pid, *workers_of(server.pid))),
                "--json",
                str(ringfence_json),
                *extra,
            ]
        )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    if not options.skip_kamailio:
        run(["--compare", str(kamailio_json), str(ringfence_json)])
    print(f"results in {out}")


if __name__ == "__main__":
    main()
