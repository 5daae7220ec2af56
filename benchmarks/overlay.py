"""`make bench-overlay`: one node holding 10,000 overlay instances registered on a PBX.

Issue #5, done when "`make bench-overlay` holds 10,000 instances on one node and prints
memory per instance and the upstream REGISTER rate". Everything runs on loopback in a
temporary directory:

1. Kamailio is the tenant's PBX (`tests.peers.kamailio.Pbx`, tests/peers/kamailio_pbx.cfg:
   digest auth with a 401 per new registration, usrloc in memory), with N users.
2. Not timed: through a `Runtime` on the node's data directory (nothing serves yet), the
   bench creates the tenant in overlay mode (upstream: that Kamailio over UDP, asking for
   `--expires` seconds) and N accounts (`import_accounts`).
3. Baseline: `ringfence serve` (one SIP worker: one process) runs on those N accounts with
   no instance. Once its SIP credentials cache is warm (its log says so) it idles IDLE_S
   (its CPU time is read over them), then its VmRSS (/proc/PID/status) is read; it stops.
4. Not timed: one push instance per account (APNs tokens, a +sip.instance, and
   `sip_account` = the user's account on the PBX with its password) is written through
   `PushInstances.report`, as the HTTPS API would write it. Nothing registers them yet.
5. `ringfence serve` starts again on the same data, as a node does after a restart: the
   overlay reads every instance back (`OverlayService.start`, before SIP and HTTP serve),
   spreads their first REGISTERs over `[overlay] restore_window_s` (`--window`) and sends
   them under `[overlay] max_register_rate` (`--rate`: the default 50/s would take N * 2 /
   50 = 400 s for 10,000). The bench reads Kamailio's counters (`kamcmd
   stats.get_statistics`: core rcv_requests_register, registrar accepted_regs, usrloc
   registered_users) every SAMPLE_S until registered_users = N. (Not sl 401_replies: it was
   seen to lag the others by a few percent at 1,000 REGISTERs/s; REGISTERs per accepted
   one says the same: 2.00 is a challenge and its answer each.)
6. Steady state: for `--steady-s` from then the node just holds them. Refreshes go at a
   random point of 50-80% of the granted `--expires` (RFC 5626 §4.4.1), reusing the last
   nonce (one REGISTER each while Kamailio still takes it, 300 s). Measured: the CPU time
   of serve (/proc/PID/stat), the REGISTERs Kamailio got, and at the end every binding
   still there. Its first IDLE_S are measured apart ("idle"): no refresh is due yet, so
   the CPU time there is what merely holding N costs (the overlay's once-a-second chores),
   beside the baseline's idle CPU.

The figures:

- memory per instance = (VmRSS at the end of the steady window - VmRSS of the baseline) /
  N. Both are fresh processes on the same data, the same accounts, the credentials cache
  equally warm, both idle when read; the difference is what holding the instances costs:
  the registrations and their digest state, the overlay's maps, the instances' decrypted
  reports, the transactions of the refreshes, the store pages the restore read, and
  whatever the allocator keeps. VmRSS when the last one registered is printed too.
- upstream REGISTER rate = the REGISTERs Kamailio received (challenge answers and any
  retransmission included) from the last sample before the first one until the sample in
  which all were registered, over that time; registrations/s = N over the same time; and
  the highest rate over any span of at least 1 s between samples, to set beside the
  ceiling. (With few instances the restore window rather than the ceiling sets the pace:
  2 N / `--window`; so does a restore slower than the ceiling.)
- Kamailio's figures for comparison: its shared memory used per binding (`core.shmmem`
  real_used, before and after) and the CPU time of its processes.

`--json PATH` writes every figure to PATH. Exit status 1 when not all N register within
`--timeout-s` (default 120 + 6 N / rate seconds), when serve dies, or when a binding is
missing after the steady window; 2 when Kamailio or kamcmd is not installed.

Note: `[sip] rate_per_ip` (default 2,000 datagrams/s, bursts of twice that) also counts the
PBX's responses, all from one address: a `--rate` above about 2,000/s needs it raised, which
this bench does (to 2 x rate) so as to measure the overlay alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from ringfence.config import Settings, load_settings
from ringfence.provisioning.models import UpstreamPbx, UpstreamTransport
from ringfence.provisioning.service import NewAccount
from ringfence.pushgw.instances import InstanceReport, PushService, SipAccount
from ringfence.runtime import Runtime

# The loopback helpers and the Kamailio PBX of the tests (run from the repository, as
# `make bench-overlay` does).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.peers.kamailio import (
    Pbx,
    PbxError,
    free_udp_and_tcp_port,
    kamailio_binary,
    kamcmd_binary,
)
from tests.support.net import free_port
from tests.support.proc import cpu_seconds, status_kib

BIN = Path(sys.executable).parent / "ringfence"
TENANT = "bench"
DOMAIN = "overlay.bench.example"
PBX_DOMAIN = "pbx.bench.example"
APP_ID = "com.example.overlay-bench"
#: How often Kamailio's counters are read while the instances register.
SAMPLE_S = 0.25
#: How long a serve idles after start-up before its RSS is read.
IDLE_S = 5.0
#: Instances written per batch (progress shown after each).
SEED_BATCH = 1000
KIB = 1024
MIB = 1024 * 1024
#: The log line of a serve whose SIP credentials cache is warm (`SipService`).
CREDENTIALS_LOADED = "SIP credentials of"


def user_of(index: int) -> str:
    return f"ov{index:05d}"


def pbx_password(user: str) -> str:
    return f"pbx-{user}-secret"


def kamailio_pids(workdir: Path) -> list[int]:
    """Kamailio's processes of this PBX: those with its work directory on their command line."""
    marker = str(workdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kamailio" in cmdline.split(b"\0", 1)[0] and marker in cmdline:
            found.append(int(entry.name))
    return found


def kamailio_cpu(workdir: Path) -> float:
    total = 0.0
    for pid in kamailio_pids(workdir):
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True, slots=True)
class Counters:
    """Kamailio's counters at one moment (`time.monotonic` of this process)."""

    at: float
    registers: int
    accepted: int
    registered: int


STATS = {
    "core:rcv_requests_register": "registers",
    "registrar:accepted_regs": "accepted",
    "usrloc:registered_users": "registered",
}


def counters(pbx: Pbx) -> Counters:
    names = [name.split(":", 1)[1] for name in STATS]
    output = pbx.kamcmd("stats.get_statistics", *names)
    values: dict[str, int] = {}
    for line in output.splitlines():
        name, _, value = line.partition(" = ")
        if name.strip() in STATS and value.strip().isdigit():
            values[STATS[name.strip()]] = int(value)
    missing = set(STATS.values()) - set(values)
    if missing:
        raise PbxError(f"kamcmd stats.get_statistics lacks {sorted(missing)}: {output!r}")
    return Counters(at=time.monotonic(), **values)


def shm_used(pbx: Pbx) -> int:
    """Kamailio's shared memory in use (bytes, `core.shmmem` real_used)."""
    for line in pbx.kamcmd("core.shmmem").splitlines():
        name, _, value = line.strip().partition(":")
        if name == "real_used":
            return int(value)
    raise PbxError("kamcmd core.shmmem has no real_used")


def peak_rate(samples: list[Counters], span_s: float = 1.0) -> float:
    """The highest REGISTER rate over any span of at least `span_s` between two samples."""
    best = 0.0
    j = 0
    for i, start in enumerate(samples):
        j = max(j, i + 1)
        while j < len(samples) and samples[j].at - start.at < span_s:
            j += 1
        if j == len(samples):
            break
        end = samples[j]
        best = max(best, (end.registers - start.registers) / (end.at - start.at))
    return best


# -- the node's data, written directly (nothing serves meanwhile) -----------------------------


async def seed_accounts(settings: Settings, n: int, pbx_port: int, expires_s: int) -> None:
    runtime = Runtime(settings)
    try:
        await runtime.migrate()
        upstream = UpstreamPbx("127.0.0.1", pbx_port, UpstreamTransport.UDP, expires_s=expires_s)
        await runtime.provisioning.create_tenant(TENANT, "Overlay bench", DOMAIN, upstream=upstream)
        rows = [NewAccount(user_of(i), f"rf-{user_of(i)}-secret") for i in range(n)]
        await runtime.provisioning.import_accounts(TENANT, rows)
    finally:
        await runtime.aclose()


async def seed_instances(settings: Settings, n: int) -> None:
    runtime = Runtime(settings)
    try:
        done = 0
        while done < n:
            accounts = await runtime.provisioning.accounts(TENANT, offset=done, limit=SEED_BATCH)
            if not accounts:
                raise RuntimeError(f"only {done} of {n} accounts found")
            for account in accounts:
                index = int(account.username.removeprefix("ov"))
                token = f"{index + 1:064x}"
                report = InstanceReport(
                    selector=f"{account.username}-phone",
                    service=PushService.APNS,
                    app_id=APP_ID,
                    call_token=token,
                    other_token=token[::-1],
                    sip_instance=f"urn:uuid:00000000-0000-4000-8000-{index:012x}",
                    sip_account=SipAccount(
                        account.username, PBX_DOMAIN, password=pbx_password(account.username)
                    ),
                )
                await runtime.push_instances.report(account.id, account.config, report)
            done += len(accounts)
            if sys.stdout.isatty():
                print(f"  instances written: {done}/{n}", end="\r", flush=True)
    finally:
        await runtime.aclose()


# -- ringfence serve ----------------------------------------------------------------------------


class Serve:
    """`ringfence serve` in `work`, its output in `log`."""

    def __init__(self, work: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file: IO[bytes] = log.open("ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(BIN), "serve"], cwd=work, env=env, stdout=self._file, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"ringfence serve exited with {code}; its log:\n{tail(self.log)}")

    def logged(self, text: str) -> bool:
        self._file.flush()
        return text in self.log.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll `condition` (serve alive); the seconds from the start until it held."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{what} within {timeout_s:g} s; serve's log:\n{tail(self.log)}")
            time.sleep(0.05)
        return time.monotonic() - self.started

    def stop(self) -> float:
        """SIGTERM; the seconds it took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._file.close()
        return time.monotonic() - started


class BenchError(RuntimeError):
    """The bench could not go on (the message says why)."""


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def log_problems(path: Path) -> tuple[int, int, list[str]]:
    """(errors, warnings, the first few of them) in serve's JSON log lines."""
    errors = warnings = 0
    shown: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                errors += 1
                shown.append(line)
            continue
        if not isinstance(entry, dict):
            continue
        level = entry.get("level")
        if level in ("ERROR", "CRITICAL"):
            errors += 1
        elif level == "WARNING":
            warnings += 1
        else:
            continue
        if len(shown) < 5:
            shown.append(f"{level} {entry.get('logger')}: {entry.get('msg')}"[:300])
    return errors, warnings, shown


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    instances: int
    rate_ceiling: float
    restore_window_s: float
    expires_s: int
    seed_accounts_s: float = 0.0
    seed_instances_s: float = 0.0
    baseline_http_s: float = 0.0
    baseline_rss_kib: int = 0
    baseline_idle_cpu_s: float = 0.0
    http_s: float = 0.0
    first_register_s: float = 0.0
    all_registered_s: float = 0.0
    register_span_s: float = 0.0
    registers: int = 0
    accepted: int = 0
    register_rate: float = 0.0
    register_rate_peak_1s: float = 0.0
    registrations_per_s: float = 0.0
    cpu_registering_s: float = 0.0
    rss_registered_kib: int = 0
    idle_s: float = 0.0
    idle_cpu_s: float = 0.0
    idle_registers: int = 0
    steady_s: float = 0.0
    steady_registers: int = 0
    steady_accepted: int = 0
    steady_cpu_s: float = 0.0
    rss_end_kib: int = 0
    registered_end: int = 0
    kib_per_instance: float = 0.0
    kib_per_instance_registered: float = 0.0
    kamailio_shm_per_binding: float = 0.0
    kamailio_cpu_registering_s: float = 0.0
    kamailio_cpu_steady_s: float = 0.0
    stop_s: float = 0.0
    log_errors: int = 0
    log_warnings: int = 0
    wall_s: float = 0.0


def write_config(
    path: Path, data: Path, sip_port: int, http_port: int, args: argparse.Namespace
) -> None:
    path.write_text(
        f'[storage]\ndata_dir = "{data}"\n'
        f"[sip]\nudp_port = {sip_port}\ntcp_port = {sip_port}\ntls_port = 0\nws_port = 0\n"
        f"rate_per_ip = {max(2000.0, 2 * args.rate)}\n"
        f"[http]\nport = {http_port}\n"
        f"[overlay]\nmax_register_rate = {args.rate}\nrestore_window_s = {args.window}\n"
        '[logging]\nlevel = "INFO"\n'
    )


def run(args: argparse.Namespace, work: Path) -> Figures:
    n = args.instances
    figures = Figures(n, args.rate, args.window, args.expires)
    sip_port, http_port = free_udp_and_tcp_port(), free_port()
    config = work / "ringfence.toml"
    write_config(config, work / "data", sip_port, http_port, args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
    env["RINGFENCE_CONFIG"] = str(config)
    for name in [k for k in os.environ if k.startswith("RINGFENCE_")]:
        del os.environ[name]  # this process reads the same settings as serve
    settings = load_settings(config)
    users = {user_of(i): pbx_password(user_of(i)) for i in range(n)}

    print(f"Kamailio with {n} users ...")
    with Pbx(work / "pbx", users, PBX_DOMAIN) as pbx:
        started = time.monotonic()
        asyncio.run(seed_accounts(settings, n, pbx.port, args.expires))
        figures.seed_accounts_s = time.monotonic() - started
        print(f"  {n} accounts written in {figures.seed_accounts_s:.1f} s")

        print("baseline: serve with the accounts, no instance ...")
        serve = Serve(work, env, work / "serve-baseline.log")
        try:
            figures.baseline_http_s = serve.wait_until(
                lambda: port_open(http_port), 120, "serve did not listen"
            )
            serve.wait_until(
                lambda: serve.logged(CREDENTIALS_LOADED), 120, "the credentials did not load"
            )
            cpu0 = cpu_seconds(serve.pid)
            time.sleep(IDLE_S)
            serve.check()
            figures.baseline_idle_cpu_s = cpu_seconds(serve.pid) - cpu0
            figures.baseline_rss_kib = status_kib(serve.pid, "VmRSS")
        finally:
            serve.stop()

        started = time.monotonic()
        asyncio.run(seed_instances(settings, n))
        figures.seed_instances_s = time.monotonic() - started
        print(f"  {n} instances written in {figures.seed_instances_s:.1f} s")

        shm0 = shm_used(pbx)
        before = counters(pbx)
        kam_cpu0 = kamailio_cpu(pbx.workdir)
        timeout_s = args.timeout_s or 120 + 6 * n / args.rate
        print(f"serve with {n} instances: restoring, registering (timeout {timeout_s:.0f} s) ...")
        serve = Serve(work, env, work / "serve.log")
        try:
            samples = [before]
            deadline = serve.started + timeout_s
            while True:
                serve.check()
                if not figures.http_s and port_open(http_port):
                    figures.http_s = time.monotonic() - serve.started
                sample = counters(pbx)
                samples.append(sample)
                if sample.registered >= n:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{sample.registered} of {n} registered on the PBX after "
                        f"{timeout_s:.0f} s ({sample.registers - before.registers} REGISTERs "
                        "received, "
                        f"{sample.accepted - before.accepted} accepted); serve's log:\n"
                        f"{tail(serve.log)}"
                    )
                time.sleep(SAMPLE_S)
            done = samples[-1]
            cpu_done = cpu_seconds(serve.pid)
            figures.rss_registered_kib = status_kib(serve.pid, "VmRSS")
            kam_cpu1 = kamailio_cpu(pbx.workdir)
            shm1 = shm_used(pbx)
            # The last sample with no REGISTER yet: the span starts there (at most SAMPLE_S
            # early, which lowers the rate a little rather than raising it).
            first = next(i for i, s in enumerate(samples) if s.registers > before.registers)
            opening = samples[max(first - 1, 0)]
            figures.first_register_s = samples[first].at - serve.started
            figures.all_registered_s = done.at - serve.started
            figures.register_span_s = done.at - opening.at
            figures.registers = done.registers - before.registers
            figures.accepted = done.accepted - before.accepted
            figures.register_rate = figures.registers / figures.register_span_s
            figures.registrations_per_s = n / figures.register_span_s
            figures.register_rate_peak_1s = peak_rate(samples[max(first - 1, 0) :])
            figures.cpu_registering_s = cpu_done
            figures.kamailio_shm_per_binding = (shm1 - shm0) / n
            figures.kamailio_cpu_registering_s = kam_cpu1 - kam_cpu0
            print(
                f"  all {n} registered {figures.all_registered_s:.1f} s after serve started;"
                f" holding them for {args.steady_s:g} s ..."
            )

            # The first IDLE_S: no refresh is due yet (the first comes at half the granted
            # interval after the first registration), the node only holds them.
            steady_end = done.at + args.steady_s
            time.sleep(min(IDLE_S, args.steady_s))
            serve.check()
            last = counters(pbx)
            figures.idle_s = last.at - done.at
            figures.idle_cpu_s = cpu_seconds(serve.pid) - cpu_done
            figures.idle_registers = last.registers - done.registers
            while time.monotonic() < steady_end:
                time.sleep(min(1.0, max(0.0, steady_end - time.monotonic())))
                serve.check()
                last = counters(pbx)
            figures.steady_s = last.at - done.at
            figures.steady_cpu_s = cpu_seconds(serve.pid) - cpu_done
            figures.kamailio_cpu_steady_s = kamailio_cpu(pbx.workdir) - kam_cpu1
            figures.rss_end_kib = status_kib(serve.pid, "VmRSS")
            figures.steady_registers = last.registers - done.registers
            figures.steady_accepted = last.accepted - done.accepted
            figures.registered_end = last.registered
        finally:
            figures.stop_s = serve.stop()
        figures.log_errors, figures.log_warnings, shown = log_problems(serve.log)
        for line in shown:
            print(f"  serve log: {line}")
    figures.kib_per_instance = (figures.rss_end_kib - figures.baseline_rss_kib) / n
    figures.kib_per_instance_registered = (
        figures.rss_registered_kib - figures.baseline_rss_kib
    ) / n
    return figures


def pct(cpu_s: float, wall_s: float) -> str:
    return f"{cpu_s / wall_s * 100:.1f}%" if wall_s > 0 else "-"


def report(f: Figures) -> None:
    n = f.instances
    steady_rate = f.steady_registers / f.steady_s if f.steady_s else 0.0
    cpu_per_register = f.steady_cpu_s / f.steady_registers * 1000 if f.steady_registers else 0
    rows = [
        ("instances held", f"{f.registered_end:,} of {n:,} registered on the PBX"),
        (
            "set-up (not timed)",
            f"accounts {f.seed_accounts_s:.1f} s, instances {f.seed_instances_s:.1f} s",
        ),
        (
            "serve start -> HTTP",
            f"{f.http_s:.1f} s ({f.baseline_http_s:.1f} s without "
            "instances: the restore reads them first)",
        ),
        ("serve start -> first REGISTER", f"{f.first_register_s:.1f} s"),
        (
            "serve start -> all registered",
            f"{f.all_registered_s:.1f} s (serve CPU "
            f"{f.cpu_registering_s:.1f} s, start-up included)",
        ),
        (
            "upstream REGISTERs",
            f"{f.registers:,} in {f.register_span_s:.1f} s, {f.accepted:,} accepted "
            f"({f.registers / max(f.accepted, 1):.2f} per registration: 401, then the answer)",
        ),
        (
            "upstream REGISTER rate",
            f"{f.register_rate:,.0f}/s (peak over 1 s "
            f"{f.register_rate_peak_1s:,.0f}/s; ceiling max_register_rate {f.rate_ceiling:,g}/s)",
        ),
        ("registrations", f"{f.registrations_per_s:,.0f}/s"),
        ("RSS baseline", f"{f.baseline_rss_kib / KIB:.1f} MiB ({n:,} accounts, no instance)"),
        ("RSS all registered", f"{f.rss_registered_kib / KIB:.1f} MiB"),
        ("RSS after steady window", f"{f.rss_end_kib / KIB:.1f} MiB"),
        (
            "memory per instance",
            f"{f.kib_per_instance:.1f} KiB (all registered: "
            f"{f.kib_per_instance_registered:.1f} KiB)",
        ),
        (
            f"idle, first {f.idle_s:.0f} s",
            f"serve CPU {pct(f.idle_cpu_s, f.idle_s)} of a core holding them "
            f"({f.idle_registers} REGISTERs); {pct(f.baseline_idle_cpu_s, IDLE_S)} "
            "without instances",
        ),
        (
            f"steady {f.steady_s:.0f} s",
            f"{f.steady_registers:,} REGISTERs ({steady_rate:.0f}/s), {f.steady_accepted:,} "
            f"accepted: refreshes at 50-80% of {f.expires_s} s, on the last nonce",
        ),
        (
            "  serve CPU",
            f"{f.steady_cpu_s:.2f} s ({pct(f.steady_cpu_s, f.steady_s)} of a core; "
            + (
                f"{cpu_per_register:.2f} ms per REGISTER, idle work included)"
                if f.steady_registers
                else "no REGISTER)"
            ),
        ),
        (
            "Kamailio (comparison)",
            f"shm {f.kamailio_shm_per_binding / KIB:.2f} KiB per binding;"
            f" CPU {f.kamailio_cpu_registering_s:.1f} s registering, "
            f"{f.kamailio_cpu_steady_s:.1f} s steady",
        ),
        ("serve stop", f"{f.stop_s:.1f} s"),
        ("serve log", f"{f.log_errors} errors, {f.log_warnings} warnings"),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    print(
        f"overlay: {n:,} instances on one node (one SIP worker), Kamailio as the PBX over UDP "
        f"on loopback; restore window {f.restore_window_s:g} s, expires {f.expires_s} s"
    )
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(f"  {'wall time':<{width}}  {f.wall_s:.0f} s")
    held = f.registered_end >= n
    print(f"  {'done-when':<{width}}  {n:,} instances held: {'met' if held else 'NOT met'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=10_000, help="accounts and instances")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="[overlay] max_register_rate (REGISTERs/s)"
    )
    parser.add_argument(
        "--window", type=float, default=5.0, help="[overlay] restore_window_s (seconds)"
    )
    parser.add_argument(
        "--expires", type=int, default=120, help="the registration interval asked of the PBX"
    )
    parser.add_argument(
        "--steady-s", type=float, default=120.0, help="how long to hold them once registered"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=0.0, help="to register all (default 120 + 6 N/rate)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="keep the data and logs here (default: temp)")
    args = parser.parse_args()
    if args.instances < 1 or args.rate <= 0 or args.rate > 10_000:
        parser.error("--instances must be >= 1 and --rate in (0, 10000]")
    if kamailio_binary() is None or kamcmd_binary() is None:
        print("kamailio/kamcmd not found: apt-get install -y kamailio (make system-deps)")
        return 2
    started = time.monotonic()
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            figures = run(args, args.workdir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="ringfence-bench-overlay-") as tmp:
                figures = run(args, Path(tmp))
    except (BenchError, PbxError) as exc:
        print(f"bench-overlay failed: {exc}")
        return 1
    figures.wall_s = time.monotonic() - started
    report(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    if figures.registered_end < figures.instances:
        print(
            f"bench-overlay failed: {figures.registered_end} of {figures.instances} bindings "
            "left on the PBX after the steady window"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
