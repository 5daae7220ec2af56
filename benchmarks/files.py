"""`make bench-files`: a 1 GiB encrypted attachment up to and down from `ringfence serve`.

1. `ringfence serve` runs in a temporary directory (SQLite, local blob store, SIP off), with
   a tenant and two accounts made by the CLI; the sender's `attachments.max_size_bytes` is
   raised to the ceiling, 1 GiB.
2. Not timed: a file of random bytes is encrypted with `ringfence.client` into an envelope
   of at most 1 GiB (the ceiling counts envelope bytes) in a temporary file.
3. Timed: `RingfenceClient.upload` (POST /v1/files, then one streamed PUT from disk).
4. Timed: the recipient downloads the envelope (GET on the capability URL), streamed to
   /dev/null: the figure is the service's, not decryption's.
5. Not timed: the recipient downloads it again with `download_attachment`, which decrypts
   and checks the SHA-256 (skip with --no-verify).

The server's memory: its peak RSS is reset (/proc/PID/clear_refs, 5) before the upload, and
its growth is VmHWM after the download minus VmRSS before the upload. Targets of the issue:
at least 200 MB/s each way on loopback, and less than 64 MB of RSS growth.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ringfence.client import RingfenceClient

# The loopback helpers the tests use (run from the repository, as `make bench-files` does).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.net import free_port, wait_for_port
from tests.support.proc import cpu_seconds, status_kib

from ringfence.files.envelope import encrypted_size

BIN = Path(sys.executable).parent / "ringfence"
DOMAIN = "files.bench.example"
MB = 1000 * 1000
MIB = 1024 * 1024
GIB = 1024 * MIB
TARGET_MB_S = 200.0
TARGET_RSS_MB = 64.0
PASSWORDS = {"alice": "alice-bench-secret", "bob": "bob-bench-secret"}


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def largest_plaintext(limit: int) -> int:
    """The largest plaintext whose envelope (default chunk size) fits in `limit` bytes."""
    size = limit
    while encrypted_size(size) > limit:
        size -= encrypted_size(size) - limit
    return size


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MIB, left))
            out.write(chunk)
            left -= len(chunk)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mib", type=int, default=1024, help="envelope size in MiB, <= 1024")
    parser.add_argument("--no-verify", action="store_true", help="skip the decrypting download")
    parser.add_argument("--keep", action="store_true", help="leave serve running (py-spy)")
    args = parser.parse_args()
    limit = min(args.mib, 1024) * MIB
    with tempfile.TemporaryDirectory(prefix="ringfence-bench-files-") as tmp:
        work = Path(tmp)
        http_port = free_port()
        config = work / "ringfence.toml"
        config.write_text(
            f'[sip]\nenabled = false\n[http]\nport = {http_port}\n[logging]\nlevel = "WARNING"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
        env["RINGFENCE_CONFIG"] = str(config)

        def cli(*argv: str) -> None:
            subprocess.run([str(BIN), *argv], cwd=work, env=env, check=True, capture_output=True)

        cli("tenant", "add", "bench", "--domain", DOMAIN)
        for user, password in PASSWORDS.items():
            cli("account", "add", "bench", user, "--password", password)
        cli("account", "set", "bench", "alice", "--set", f"attachments.max_size_bytes={GIB}")

        plain = work / "plain.bin"
        write_random(plain, largest_plaintext(limit))
        started = time.perf_counter()
        encrypted = RingfenceClient.encrypt_file(plain, work)
        encrypt_s = time.perf_counter() - started
        plain.unlink()
        size = encrypted.size
        encrypt_mb_s = encrypted.plain_size / MB / encrypt_s
        print(
            f"envelope: {size} bytes ({size / MIB:.1f} MiB) of {encrypted.plain_size} plaintext "
            f"bytes; encrypted (not timed below) at {encrypt_mb_s:.0f} MB/s"
        )

        with (
            (work / "serve.log").open("w") as log,
            subprocess.Popen(
                [str(BIN), "serve"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT
            ) as server,
        ):
            try:
                wait_for_port(http_port)
                base = f"http://127.0.0.1:{http_port}"
                pid = server.pid
                time.sleep(0.5)
                baseline_kib = status_kib(pid, "VmRSS")
                peak_reset = reset_peak(pid)
                cpu0 = cpu_seconds(pid)

                with RingfenceClient(
                    base, f"alice@{DOMAIN}", PASSWORDS["alice"], timeout=300
                ) as alice:
                    started = time.perf_counter()
                    uploaded = alice.upload(encrypted, ["bob"])
                    upload_s = time.perf_counter() - started
                assert uploaded.complete, uploaded
                cpu1 = cpu_seconds(pid)
                after_upload_hwm = status_kib(pid, "VmHWM")

                got = 0
                with (
                    httpx.Client(auth=(f"bob@{DOMAIN}", PASSWORDS["bob"]), timeout=300) as http,
                    open(os.devnull, "wb") as sink,
                ):
                    started = time.perf_counter()
                    with http.stream("GET", uploaded.url) as response:
                        response.raise_for_status()
                        for chunk in response.iter_raw(MIB):
                            got += len(chunk)
                            sink.write(chunk)
                    download_s = time.perf_counter() - started
                assert got == size, f"downloaded {got} of {size} bytes"
                cpu2 = cpu_seconds(pid)
                peak_kib = status_kib(pid, "VmHWM")
                rss_after_kib = status_kib(pid, "VmRSS")

                verified = "skipped"
                if not args.no_verify:
                    with RingfenceClient(
                        base, f"bob@{DOMAIN}", PASSWORDS["bob"], timeout=300
                    ) as bob:
                        out = bob.download_attachment(
                            encrypted.attachment(uploaded.url), work / "received.bin"
                        )
                        verified = f"decrypted, SHA-256 checked ({out.stat().st_size} bytes)"
                        out.unlink()
                if args.keep:
                    input(f"serve (pid {pid}) still runs on {base}; Enter stops it ")
            finally:
                server.terminate()
                server.wait(30)
        encrypted.remove()

    up_mb_s = size / MB / upload_s
    down_mb_s = size / MB / download_s
    growth_mb = (peak_kib - baseline_kib) * 1024 / MB
    print(
        f"upload    {up_mb_s:7.0f} MB/s  ({upload_s:.2f} s, server CPU {cpu1 - cpu0:.2f} s)"
        f"   target >= {TARGET_MB_S:g} MB/s: {verdict(up_mb_s >= TARGET_MB_S)}"
    )
    print(
        f"download  {down_mb_s:7.0f} MB/s  ({download_s:.2f} s, server CPU {cpu2 - cpu1:.2f} s)"
        f"   target >= {TARGET_MB_S:g} MB/s: {verdict(down_mb_s >= TARGET_MB_S)}"
    )
    print(
        f"server RSS: {baseline_kib / 1024:.0f} MiB before, peak {peak_kib / 1024:.0f} MiB "
        f"(after upload {after_upload_hwm / 1024:.0f}), {rss_after_kib / 1024:.0f} MiB after;"
        f" growth {growth_mb:.1f} MB"
        + ("" if peak_reset else " (peak not reset: includes start-up)")
        + f"   target < {TARGET_RSS_MB:g} MB: {verdict(growth_mb < TARGET_RSS_MB)}"
    )
    print(f"integrity: {verified}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
