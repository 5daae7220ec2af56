"""SIP throughput of a registrar/proxy, measured with SIPp: REGISTER, calls and MESSAGEs a second.

Run it against Kamailio (the performance peer, started and stopped here) or against any
server already listening on UDP (ringfence), then compare the two::

    .venv/bin/python benchmarks/sip/run.py --target kamailio --json kamailio.json
    .venv/bin/python benchmarks/sip/run.py --target external:127.0.0.1:5060 --json rf.json
    .venv/bin/python benchmarks/sip/run.py --compare kamailio.json rf.json
    .venv/bin/python benchmarks/sip/run.py --target external:127.0.0.1:5060 --smoke

What the server must accept (``--accounts-csv FILE`` writes the list for provisioning):

* accounts ``user0000`` .. ``user9999`` (``--users N``), password ``pw-<user>``
  (``pw-user0042``), SIP domain and digest realm ``bench.example`` (``--domain``);
* REGISTER to ``sip:bench.example``, challenged with 401 (MD5 must be the first challenge:
  SIPp 3.6.1 answers only MD5 and aborts on a first ``algorithm=SHA-256``);
* INVITE and MESSAGE from those users to ``sip:userNNNN@bench.example``, challenged with
  407 and then routed to the registered Contact; record-routed INVITE dialogs (ACK, BYE
  with a Route header), CANCEL, and an unknown header (``X-Bench``) passed through;
* SIPp's digest ``uri=`` is ``sip:bench.example`` for REGISTER (``-auth_uri``) but
  ``sip:HOST:PORT`` (the server's address) for INVITE and MESSAGE: a server must verify
  the response against the ``uri`` parameter as sent, not demand that it equal the
  Request-URI.

How a rate is judged. Each step runs one SIPp client (``-r RATE -m RATE*duration``) for
``--duration`` seconds. SIPp writes every completed response-time measurement
(``-trace_rtt``: for REGISTER from the first REGISTER to the 200, i.e. both round trips;
for a call from the first INVITE to the 200; for MESSAGE from the first MESSAGE to the
200) and its counters (``-trace_stat``). A step passes when fewer than 0.1 % of the calls
failed (``failed = created - successful``: timeouts, unexpected replies, calls still
open at the end), the 99th percentile of those response times (nearest rank) is under
100 ms, and SIPp really offered at least 90 % of the rate (measured from the start times
of the completed calls, so a saturated SIPp does not pass for a fast server). The ladder
stops at the first failing step and then tries the midpoint once (``--refine``). SIPp's
clock has 1 ms resolution and its scheduler ~4 ms ticks, so times come in steps of 4 ms.

Noise. A step that failed only on p99 runs once more (``--retry``): on a VM a single
stall of 50-100 ms puts 1 % of a 3 s step over the limit. The "other" column is the CPU
(in CPUs) that processes other than SIPp and the server used during the step (from
/proc; for an external target pass ``--server-pids``, else its CPU counts as other). A
step that failed with other >= 0.15 is repeated, up to twice, once the machine is idle
(``--wait-quiet``); before starting, the run waits up to that long for idle CPUs too.
Figures taken while a test suite or a build runs on the same cores are not comparable.

CPU: on a machine with 2+ CPUs the Kamailio target is pinned to one CPU (``--server-cpus``,
default the last one) and both SIPps to the others (``--sipp-cpus``), so the figure is
"one core". For an external target, pin it yourself (``taskset -c 1 ringfence ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
KAMAILIO_CFG = HERE / "kamailio.cfg"

DOMAIN = "bench.example"
BUFF_SIZE = 4 * 1024 * 1024  # below ~25k msg/s SIPp's default socket buffer is enough
RECV_TIMEOUT_MS = 2000  # a reply later than this fails the call
MAX_FAIL_RATIO = 0.001
MAX_P99_MS = 100.0
MIN_OFFERED = 0.9

LADDERS: dict[str, tuple[int, ...]] = {
    "register": (500, 1000, 2000, 5000, 10_000, 15_000, 20_000, 30_000, 40_000),
    "call": (100, 200, 500, 1000, 2000, 3000, 5000, 8000),
    "message": (500, 1000, 2000, 5000, 10_000, 15_000, 20_000, 30_000),
    "cancel": (100, 200, 500, 1000, 2000, 3000, 5000),
}
SCENARIO_OF = {
    "register": "register_auth.xml",
    "call": "uac_call.xml",
    "message": "uac_message.xml",
    "cancel": "uac_cancel.xml",
}
RTD_OF = {"register": "reg", "call": "call", "message": "msg", "cancel": "cancel"}
LABEL_OF = {
    "register": "REGISTER with digest auth /s",
    "call": "calls (INVITE..BYE, 407 auth) /s",
    "message": "MESSAGE (407 auth) /s",
    "cancel": "cancelled calls (INVITE..CANCEL..487) /s",
}


class BenchError(RuntimeError):
    """Something outside the measured server went wrong (a tool, a file, a port)."""


# ---------------------------------------------------------------------------- accounts


def user_name(index: int) -> str:
    return f"user{index:04d}"


def password_of(user: str) -> str:
    return f"pw-{user}"


def split_users(n_users: int, n_callees: int) -> tuple[list[str], list[str]]:
    """Callers are the first users, callees (registered by the UAS) the last ones."""
    if n_callees < 1 or n_users - n_callees < 1:
        raise BenchError("need at least one caller and one callee")
    users = [user_name(i) for i in range(n_users)]
    return users[: n_users - n_callees], users[n_users - n_callees :]


def write_injection(path: Path, users: Sequence[str], callees: Sequence[str], domain: str) -> None:
    """SIPp injection file: user; [authentication ...] keyword; domain; callee."""
    lines = ["SEQUENTIAL"]
    for i, user in enumerate(users):
        auth = f"[authentication username={user} password={password_of(user)}]"
        lines.append(f"{user};{auth};{domain};{callees[i % len(callees)]}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def write_accounts(path: Path, n_users: int, domain: str) -> None:
    with path.open("w", newline="", encoding="ascii") as f:
        out = csv.writer(f)
        out.writerow(["username", "password", "domain"])
        for i in range(n_users):
            out.writerow([user_name(i), password_of(user_name(i)), domain])


def write_kamailio_db(directory: Path, n_users: int) -> None:
    """The db_text table that kamailio.cfg loads into its "users" htable."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        "id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int)"
    ]
    rows.extend(f"{i + 1}:{user_name(i)}:0:0:{password_of(user_name(i))}:0" for i in range(n_users))
    (directory / "htable").write_text("\n".join(rows) + "\n", encoding="ascii")
    (directory / "version").write_text(
        "id(int,auto) table_name(string) table_version(int)\n1:htable:2\n", encoding="ascii"
    )


# ---------------------------------------------------------------------------- processes


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise BenchError(f"{name} not found: apt-get install -y sip-tester kamailio")
    return path


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    if cpus is None:
        return argv
    return [tool("taskset"), "-c", cpus, *argv]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sip_ping(host: str, port: int, timeout: float) -> str | None:
    """Send OPTIONS; the status line of the first reply, or None."""
    local = free_udp_port()
    call_id = f"{time.perf_counter_ns()}@ringfence-bench"
    request = (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id.split('@')[0]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:ping@{DOMAIN}>;tag=ping\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    deadline = time.perf_counter() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", local))
        s.settimeout(0.2)
        while time.perf_counter() < deadline:
            s.sendto(request, (host, port))
            with contextlib.suppress(TimeoutError):
                data = s.recv(65535)
                return data.split(b"\r\n", 1)[0].decode(errors="replace")
    return None


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process this script started (and, if it lingers, its own process group)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: start_new_session
            proc.wait(grace)


@contextlib.contextmanager
def kamailio(
    workdir: Path, n_users: int, cpus: str | None, workers: int, shm_mb: int
) -> Iterator[tuple[str, int, str, int]]:
    """Start Kamailio with kamailio.cfg on a free loopback port.

    Yields (host, port, version, process group id).
    """
    binary = tool("kamailio")
    db = workdir / "kamailio-db"
    write_kamailio_db(db, n_users)
    port = free_udp_port()
    argv = pinned(
        cpus,
        [
            binary,
            "-f",
            str(KAMAILIO_CFG),
            "-DD",  # do not daemonize: this process is the main one
            "-E",
            "-m",
            str(shm_mb),
            "-b",
            str(BUFF_SIZE),
            "-n",
            str(workers),
            "-l",
            f"udp:127.0.0.1:{port}",
            "-A",
            f'BENCH_DB="text://{db}"',
            "-A",
            f'BENCH_DOMAIN="{DOMAIN}"',
        ],
    )
    version = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, check=False
    ).stdout.split("\n", 1)[0]
    log = (workdir / "kamailio.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if sip_ping("127.0.0.1", port, 10.0) is None:
            raise BenchError(f"Kamailio did not answer OPTIONS; see {workdir / 'kamailio.log'}")
        yield "127.0.0.1", port, version.replace("version: ", "").strip(), proc.pid
    finally:
        stop(proc)
        log.close()


@dataclasses.dataclass(frozen=True)
class Sipp:
    """How to run SIPp against one server."""

    binary: str
    host: str
    port: int
    domain: str
    cpus: str | None
    workdir: Path
    # Process groups / processes whose CPU time is ours (the callee SIPp, Kamailio, the
    # external server's --server-pids): the rest of the machine's CPU time is "other".
    watched_groups: list[int] = dataclasses.field(default_factory=list)
    watched_pids: list[int] = dataclasses.field(default_factory=list)

    def argv(self, scenario: str, local_port: int, extra: Sequence[str]) -> list[str]:
        return pinned(
            self.cpus,
            [
                self.binary,
                f"{self.host}:{self.port}",
                "-sf",
                str(SCENARIOS / scenario),
                "-i",
                "127.0.0.1",
                "-p",
                str(local_port),
                "-t",
                "u1",
                "-nostdin",
                "-buff_size",
                str(BUFF_SIZE),
                # On a failure, do not send BYE/CANCEL (unmeasured load); still fail a call
                # on an unexpected message.
                "-default_behaviors",
                "abortunexp",
                *extra,
            ],
        )


@dataclasses.dataclass
class Step:
    rate: int
    created: int
    successful: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    offered: float | None
    passed: bool
    why: str
    seconds: float
    other_cpu: float  # CPUs used on average by processes neither SIPp nor the server


CLK_TCK = os.sysconf("SC_CLK_TCK")
BUSY = 0.15  # "other" CPUs above which a step counts as disturbed


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent running something (user, nice, system) since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks[:3]) / CLK_TCK


def watched_seconds(groups: Sequence[int], pids: Sequence[int]) -> float:
    """CPU seconds used so far by the live processes in these process groups or pids."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) in groups or int(entry.name) in pids:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def our_seconds(sipp: Sipp) -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    waited = children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime
    return waited + watched_seconds(sipp.watched_groups, sipp.watched_pids)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def read_stats(path: Path) -> dict[str, str]:
    """The last full row of SIPp's -trace_stat file (cumulative counters)."""
    if not path.exists():
        raise BenchError(f"SIPp wrote no statistics file {path}")
    rows = [line.split(";") for line in path.read_text(errors="replace").splitlines() if line]
    if len(rows) < 2:
        raise BenchError(f"SIPp statistics file {path} has no data row")
    header = rows[0]
    full = [row for row in rows[1:] if len(row) >= len(header) - 1]
    return dict(zip(header, full[-1], strict=False))


def read_rtts(directory: Path, rtd: str) -> list[tuple[float, float]]:
    """(completion time ms since SIPp start, response time ms) of every completed rtd."""
    out: list[tuple[float, float]] = []
    for path in directory.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            fields = line.split(";")
            if len(fields) == 3 and fields[2] == rtd:
                with contextlib.suppress(ValueError):
                    out.append((float(fields[0]), float(fields[1])))
    return out


def run_step(sipp: Sipp, kind: str, rate: int, duration: float, args: argparse.Namespace) -> Step:
    calls = max(1, round(rate * duration))
    step_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-{rate}-", dir=sipp.workdir))
    extra = [
        "-inf",
        str(sipp.workdir / "callers.csv"),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-recv_timeout",
        str(RECV_TIMEOUT_MS),
        "-timeout",
        f"{int(duration + args.hold_ms / 1000 + 30)}s",
        "-trace_stat",
        "-stf",
        str(step_dir / "stat.csv"),
        "-fd",
        "1",
        "-trace_rtt",
        # SIPp writes response times in batches of rtt_freq and drops the last partial
        # batch at exit: small batches for small runs, and < 100 samples lost otherwise.
        "-rtt_freq",
        "1" if calls < 2000 else "100",
    ]
    if kind == "register":
        extra += ["-auth_uri", sipp.domain]
    if kind == "call":
        extra += ["-d", str(args.hold_ms)]
    argv = sipp.argv(SCENARIO_OF[kind], free_udp_port(), extra)
    busy_before, ours_before = machine_busy_seconds(), our_seconds(sipp)
    started = time.perf_counter()
    with (step_dir / "stderr.txt").open("wb") as err:
        proc = subprocess.run(
            argv,
            cwd=step_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=duration + args.hold_ms / 1000 + 60,
            check=False,
        )
    seconds = time.perf_counter() - started
    other = machine_busy_seconds() - busy_before - (our_seconds(sipp) - ours_before)
    other_cpu = max(0.0, other / seconds)
    if proc.returncode not in (0, 1):
        tail = (step_dir / "stderr.txt").read_text(errors="replace")[-2000:]
        raise BenchError(f"SIPp exited {proc.returncode} ({kind} at {rate}/s):\n{tail}")
    stats = read_stats(step_dir / "stat.csv")
    created = int(stats.get("TotalCallCreated", "0") or 0)
    successful = int(stats.get("SuccessfulCall(C)", "0") or 0)
    failed = max(created - successful, int(stats.get("FailedCall(C)", "0") or 0))
    rtts = read_rtts(step_dir, RTD_OF[kind])
    times = sorted(rt for _, rt in rtts)
    p50 = percentile(times, 0.50) if times else None
    p99 = percentile(times, 0.99) if times else None
    starts = sorted(done - rt for done, rt in rtts)
    offered = None
    if len(starts) >= 2 and starts[-1] > starts[0]:
        offered = (len(starts) - 1) / ((starts[-1] - starts[0]) / 1000)
    fail_ratio = failed / created if created else 1.0
    reasons = []
    if created < calls:
        reasons.append(f"only {created} of {calls} calls made")
    if fail_ratio >= args.max_fail:
        reasons.append(f"{fail_ratio:.2%} failed")
    if p99 is None or p99 >= args.max_p99:
        reasons.append("no response times" if p99 is None else f"p99 {p99:.0f} ms")
    if offered is not None and offered < MIN_OFFERED * rate and rate * duration >= 10:
        reasons.append(f"SIPp offered only {offered:,.0f}/s")
    if not args.keep and not reasons:
        shutil.rmtree(step_dir, ignore_errors=True)
    return Step(
        rate=rate,
        created=created,
        successful=successful,
        failed=failed,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=times[-1] if times else None,
        offered=offered,
        passed=not reasons,
        why="; ".join(reasons),
        seconds=seconds,
        other_cpu=other_cpu,
    )


def client_limited(step: Step) -> bool:
    return step.why.startswith("SIPp offered only") and ";" not in step.why


def nice(rate: float) -> int:
    """Round to two significant digits (1500, 7500, 12000)."""
    if rate < 100:
        return max(1, round(rate))
    scale = 10 ** (int(math.log10(rate)) - 1)
    return int(round(rate / scale) * scale)


def print_step_header() -> None:
    print(
        f"  {'rate/s':>8} {'calls':>8} {'ok':>8} {'failed':>7} {'fail%':>7} "
        f"{'p50ms':>6} {'p99ms':>6} {'maxms':>6} {'offered/s':>10} {'other':>5}  verdict"
    )


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_step(step: Step) -> None:
    fail = step.failed / step.created if step.created else 1.0
    offered = "-" if step.offered is None else f"{step.offered:,.0f}"
    verdict = "pass" if step.passed else f"FAIL: {step.why}"
    if step.other_cpu >= BUSY:
        verdict += "  (machine busy)"
    print(
        f"  {step.rate:>8,} {step.created:>8,} {step.successful:>8,} {step.failed:>7,} "
        f"{fail:>7.2%} {fmt_ms(step.p50_ms):>6} {fmt_ms(step.p99_ms):>6} "
        f"{fmt_ms(step.max_ms):>6} {offered:>10} {step.other_cpu:>5.2f}  {verdict}",
        flush=True,
    )


def attempt(sipp: Sipp, kind: str, rate: int, args: argparse.Namespace) -> list[Step]:
    """Run one step, and run it again when the failure may not be the server's.

    A step that failed only on p99 runs again (--retry, once by default): on a virtual
    machine one stall can put 1 % of a short step's responses over 100 ms, while a real
    overload fails again. A step that failed while other processes used the CPUs
    ("other" >= 0.15 CPU: a test suite, a build) runs again after the machine is idle,
    up to twice.
    """
    steps = []
    retries, busy_retries = args.retry, 2
    while True:
        step = run_step(sipp, kind, rate, args.duration, args)
        steps.append(step)
        print_step(step)
        time.sleep(0.5 if step.passed else 2.0)  # let the server drain its backlog
        if step.passed:
            break
        if step.other_cpu >= BUSY and busy_retries > 0:
            busy_retries -= 1
            wait_quiet(args.wait_quiet)
            continue
        if retries > 0 and step.why.startswith("p99") and ";" not in step.why:
            retries -= 1
            continue
        break
    return steps


def ladder(sipp: Sipp, kind: str, rates: Sequence[int], args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n{LABEL_OF[kind]}  ({SCENARIO_OF[kind]}, {args.duration:g} s a step)")
    print_step_header()
    steps: list[Step] = []
    best: Step | None = None
    failed_at: Step | None = None
    for rate in rates:
        tried = attempt(sipp, kind, rate, args)
        steps += tried
        if not tried[-1].passed:
            failed_at = tried[-1]
            break
        best = tried[-1]
    low = best.rate if best else 0
    if failed_at is not None and not client_limited(failed_at):
        for _ in range(args.refine):
            mid = nice((low + failed_at.rate) / 2) if low else nice(failed_at.rate / 2)
            if mid in (low, failed_at.rate) or mid < 1:
                break
            tried = attempt(sipp, kind, mid, args)
            steps += tried
            if tried[-1].passed:
                best, low = tried[-1], mid
            else:
                failed_at = tried[-1]
    if failed_at is None:
        limit = "ladder top (raise the ladder)"
    elif client_limited(failed_at):
        limit = "SIPp (client) could not offer more"
    else:
        limit = "server"
    result = {
        "label": LABEL_OF[kind],
        "best": best.rate if best else 0,
        "best_p99_ms": best.p99_ms if best else None,
        "limited_by": limit,
        "steps": [dataclasses.asdict(s) for s in steps],
    }
    shown = f"{result['best']:,}" if best else f"< {rates[0]:,}"
    print(f"  => {shown} /s  (limited by: {limit})")
    return result


# ---------------------------------------------------------------------------- the callee


@contextlib.contextmanager
def callee(sipp: Sipp) -> Iterator[None]:
    """Register the callees at a port, then run uas.xml there until the block ends."""
    port = free_udp_port()
    reg_dir = sipp.workdir / "callee-register"
    reg_dir.mkdir(exist_ok=True)
    n_callees = sum(1 for _ in (sipp.workdir / "callees.csv").open()) - 1
    argv = sipp.argv(
        "register_auth.xml",
        port,
        [
            "-inf",
            str(sipp.workdir / "callees.csv"),
            "-m",
            str(n_callees),
            "-r",
            "500",
            "-recv_timeout",
            str(RECV_TIMEOUT_MS),
            "-timeout",
            "60s",
            "-auth_uri",
            sipp.domain,
        ],
    )
    with (reg_dir / "stderr.txt").open("wb") as err:
        proc = subprocess.run(
            argv, cwd=reg_dir, stdout=subprocess.DEVNULL, stderr=err, timeout=90, check=False
        )
    if proc.returncode != 0:
        tail = (reg_dir / "stderr.txt").read_text(errors="replace")[-2000:]
        raise BenchError(
            f"registering the {n_callees} callees failed (SIPp exit {proc.returncode}). Does the"
            f" server answer REGISTER for user@{sipp.domain} with a 401 whose first challenge"
            f" is MD5, and accept password pw-<user>?\n{tail}"
        )
    uas_dir = sipp.workdir / "uas"
    uas_dir.mkdir(exist_ok=True)
    err_file = (uas_dir / "stderr.txt").open("wb")
    uas = subprocess.Popen(
        sipp.argv("uas.xml", port, ["-recv_timeout", "10000"]),
        cwd=uas_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err_file,
        start_new_session=True,
    )
    sipp.watched_groups.append(uas.pid)  # its own session, so its pid is its group
    try:
        time.sleep(0.3)
        if uas.poll() is not None:
            tail = (uas_dir / "stderr.txt").read_text(errors="replace")[-2000:]
            raise BenchError(f"the uas.xml callee exited at once ({uas.returncode}):\n{tail}")
        yield
    finally:
        stop(uas)
        err_file.close()
        sipp.watched_groups.remove(uas.pid)


# ---------------------------------------------------------------------------- smoke test


def smoke(sipp: Sipp, kinds: Sequence[str], args: argparse.Namespace) -> bool:
    """Five of each exchange at 10/s: does the server do what the ladders need at all?"""
    print("\nsmoke test: 5 of each at 10/s")
    ok = True
    for kind in kinds:
        step = run_step(sipp, kind, 10, 0.5, args)
        good = step.created == step.successful > 0
        ok = ok and good
        where = "" if good else f"  (SIPp output kept in {sipp.workdir})"
        print(
            f"  {kind:<9} {step.successful}/{step.created} ok, "
            f"p50 {fmt_ms(step.p50_ms)} ms  {'ok' if good else 'FAILED'}{where}",
            flush=True,
        )
        if not good:
            args.keep = True
    return ok


# ---------------------------------------------------------------------------- targets


@contextlib.contextmanager
def target(args: argparse.Namespace, workdir: Path) -> Iterator[dict[str, Any]]:
    if args.target == "kamailio":
        with kamailio(
            workdir, args.users, args.server_cpus, args.kamailio_workers, args.kamailio_shm
        ) as (host, port, version, pgid):
            yield {
                "name": "kamailio",
                "server": version,
                "host": host,
                "port": port,
                "server_cpus": args.server_cpus,
                "kamailio_workers": args.kamailio_workers,
                "groups": [pgid],
                "pids": [],
            }
        return
    parts = args.target.split(":")
    if len(parts) != 3 or parts[0] != "external" or not parts[2].isdigit():
        raise BenchError("--target is kamailio or external:HOST:PORT")
    host, port = parts[1], int(parts[2])
    status = sip_ping(host, port, 3.0)
    if status is None:
        print(f"note: {host}:{port} did not answer OPTIONS; trying anyway", file=sys.stderr)
    yield {
        "name": args.name or f"external {host}:{port}",
        "server": status or "unknown",
        "host": host,
        "port": port,
        "server_cpus": "not pinned by run.py",
        "groups": [],
        "pids": parse_pids(args.server_pids),
    }


def cpu_busy(seconds: float = 1.0) -> dict[str, float]:
    """Share of each CPU not idle over `seconds` (Linux /proc/stat), e.g. {"cpu0": 0.02}."""

    def sample() -> dict[str, tuple[int, int]]:
        out = {}
        with contextlib.suppress(OSError), open("/proc/stat", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0].startswith("cpu") and fields[0] != "cpu":
                    ticks = [int(x) for x in fields[1:]]
                    out[fields[0]] = (ticks[3] + ticks[4], sum(ticks))  # idle + iowait, all
        return out

    before = sample()
    time.sleep(seconds)
    after = sample()
    busy = {}
    for cpu, (idle, total) in after.items():
        if cpu in before and total > before[cpu][1]:
            busy[cpu] = 1 - (idle - before[cpu][0]) / (total - before[cpu][1])
    return busy


def wait_quiet(limit: float, threshold: float = 0.15) -> dict[str, float]:
    """Wait up to `limit` s for every CPU to be idle; warn if the machine stays busy.

    Another process on the CPUs of SIPp or of the server (a test suite, a build) takes
    their time and makes figures low and noisy.
    """
    deadline = time.perf_counter() + limit
    while True:
        busy = cpu_busy(1.0)
        if all(v < threshold for v in busy.values()) or time.perf_counter() >= deadline:
            break
    shown = ", ".join(f"{cpu} {v:.0%}" for cpu, v in sorted(busy.items()))
    if any(v >= threshold for v in busy.values()):
        print(f"WARNING: the machine is busy before the run ({shown}): figures will be low")
    else:
        print(f"CPUs idle before the run ({shown})")
    return busy


def parse_pids(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise BenchError(f"--server-pids takes process ids separated by commas: {text!r}") from exc


def parse_rates(text: str | None, default: Sequence[int]) -> tuple[int, ...]:
    if not text:
        return tuple(default)
    try:
        rates = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise BenchError(f"rates must be integers separated by commas: {text!r}") from exc
    if not rates or any(r <= 0 for r in rates):
        raise BenchError(f"rates must be positive: {text!r}")
    return rates


def default_cpus() -> tuple[str | None, str | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return ",".join(str(c) for c in cpus[:-1]), str(cpus[-1])


def measure(args: argparse.Namespace) -> int:
    sipp_binary = tool("sipp")
    sipp_version = subprocess.run(
        [sipp_binary, "-v"], capture_output=True, text=True, check=False
    ).stdout.strip()
    kinds = [k.strip() for k in args.tests.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SCENARIO_OF]
    if unknown:
        raise BenchError(f"unknown tests {unknown}; choose from {sorted(SCENARIO_OF)}")
    ladders = {kind: parse_rates(getattr(args, f"rates_{kind}"), LADDERS[kind]) for kind in kinds}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ringfence-sipbench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    callers, callees = split_users(args.users, args.callees)
    write_injection(workdir / "callers.csv", callers, callees, args.domain)
    write_injection(workdir / "callees.csv", callees, callees, args.domain)
    busy_before = wait_quiet(args.wait_quiet)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    report_target: dict[str, Any] = {}
    try:
        with target(args, workdir) as info:
            sipp = Sipp(
                sipp_binary,
                info["host"],
                info["port"],
                args.domain,
                args.sipp_cpus,
                workdir,
                watched_groups=list(info["groups"]),
                watched_pids=list(info["pids"]),
            )
            report_target = info
            print(
                f"SIP benchmark: {info['name']} ({info['server']}) at {info['host']}:{info['port']}"
            )
            print(
                f"users {args.users} ({callers[0]}..{callers[-1]} call, "
                f"{callees[0]}..{callees[-1]} answer), password pw-<user>, domain {args.domain}"
            )
            print(
                f"SIPp on CPUs {args.sipp_cpus or 'any'}, "
                f"server on {info['server_cpus'] or 'any'}; "
                f"pass = failed < {args.max_fail:.2%}, p99 < {args.max_p99:g} ms, "
                f"offered >= {MIN_OFFERED:.0%} of the rate"
            )
            with callee(sipp):
                smoke_kinds = [k for k in ("register", "call", "message", "cancel") if k in kinds]
                if not smoke(sipp, smoke_kinds or list(SCENARIO_OF), args):
                    if not args.smoke:
                        print("smoke test failed: not measuring", file=sys.stderr)
                    return 1
                if args.smoke:
                    return 0
                for kind in kinds:
                    results[kind] = ladder(sipp, kind, ladders[kind], args)
    except BaseException:
        args.keep = True  # what SIPp and the server said is the way to the cause
        raise
    finally:
        if args.keep:
            print(f"\nSIPp and server output kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info = report_target
    report = {
        "target": info["name"],
        "server": info["server"],
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "sipp_cpus": args.sipp_cpus,
            "server_cpus": info["server_cpus"],
            "busy_before": {k: round(v, 3) for k, v in busy_before.items()},
        },
        "sipp": sipp_version.splitlines()[0] if sipp_version else "sipp",
        "settings": {
            "users": args.users,
            "callees": args.callees,
            "domain": args.domain,
            "duration_s": args.duration,
            "hold_ms": args.hold_ms,
            "max_fail": args.max_fail,
            "max_p99_ms": args.max_p99,
        },
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return 0


def print_summary(report: dict[str, Any]) -> None:
    print(f"\nsummary: {report['target']} ({report['server']}), {report['seconds']} s")
    for kind, result in report["results"].items():
        p99 = result.get("best_p99_ms")
        tail = f"  (p99 {p99:.0f} ms)" if p99 is not None else ""
        print(f"  {LABEL_OF.get(kind, kind):<42} {result['best']:>8,}{tail}")


def cell(result: dict[str, Any]) -> str:
    best = result.get("best")
    if not isinstance(best, int):
        return "-"
    limit = str(result.get("limited_by", ""))
    return f">={best:,}" if not limit.startswith("server") else f"{best:,}"


def compare(paths: Sequence[str]) -> int:
    reports: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise BenchError(f"{path} is not a run.py --json file")
        reports.append(data)
    a, b = reports
    name_a, name_b = str(a["target"]), str(b["target"])
    width = max(12, len(name_a), len(name_b))
    print(f"{'':<42} {name_a:>{width}} {name_b:>{width}} {'b/a':>7}")
    kinds = [k for k in LABEL_OF if k in a["results"] or k in b["results"]]
    for kind in kinds:
        result_a, result_b = a["results"].get(kind, {}), b["results"].get(kind, {})
        best_a, best_b = result_a.get("best"), result_b.get("best")
        ratio = "-"
        if isinstance(best_a, int) and isinstance(best_b, int) and best_a > 0:
            ratio = f"{best_b / best_a:.2f}"
        cell_a, cell_b = cell(result_a), cell(result_b)
        print(f"{LABEL_OF[kind]:<42} {cell_a:>{width}} {cell_b:>{width}} {ratio:>7}")
    print(
        "  (>= : the server was not the limit: ladder top or SIPp; 0 : even the first rate failed)"
    )
    for report in reports:
        machine = report.get("machine", {})
        print(
            f"  {report['target']}: {report.get('server')}, {report.get('when')}, "
            f"host {machine.get('host')}, SIPp CPUs {machine.get('sipp_cpus')}, "
            f"server CPUs {machine.get('server_cpus')}"
        )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    sipp_cpus, server_cpus = default_cpus()
    p = argparse.ArgumentParser(
        description="SIP REGISTER / call / MESSAGE rates of a registrar-proxy, with SIPp.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--target", help="kamailio (started here) or external:HOST:PORT")
    mode.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"))
    mode.add_argument("--accounts-csv", metavar="FILE", help="write username,password,domain")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--name", help="the target's name in the results (external targets)")
    p.add_argument("--smoke", action="store_true", help="only the smoke test (5 of each)")
    p.add_argument("--tests", default="register,call,message", help="also: cancel")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--callees", type=int, default=100, help="the last N users answer calls")
    p.add_argument("--domain", default=DOMAIN)
    p.add_argument("--duration", type=float, default=3.0, help="seconds a step")
    p.add_argument("--hold-ms", type=int, default=500, help="call length between ACK and BYE")
    p.add_argument("--refine", type=int, default=1, help="midpoint steps after the ladder")
    p.add_argument("--retry", type=int, default=1, help="reruns of a step failed only on p99")
    p.add_argument("--max-fail", type=float, default=MAX_FAIL_RATIO)
    p.add_argument("--max-p99", type=float, default=MAX_P99_MS, help="ms")
    for kind in LADDERS:
        p.add_argument(f"--rates-{kind}", help=f"default {','.join(map(str, LADDERS[kind]))}")
    p.add_argument("--sipp-cpus", default=sipp_cpus, help=f"taskset list (default {sipp_cpus})")
    p.add_argument("--server-cpus", default=server_cpus, help="for --target kamailio")
    p.add_argument(
        "--server-pids",
        help="external target: its process ids, so that its CPU time is not counted as other",
    )
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--kamailio-workers", type=int, default=4)
    p.add_argument("--kamailio-shm", type=int, default=4096, help="MB of shared memory")
    p.add_argument("--wait-quiet", type=float, default=30.0, help="s to wait for idle CPUs")
    p.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep SIPp's files")
    args = p.parse_args(argv)
    if args.no_pin:
        args.sipp_cpus = args.server_cpus = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.compare:
            return compare(args.compare)
        if args.accounts_csv:
            write_accounts(Path(args.accounts_csv), args.users, args.domain)
            print(f"{args.users} accounts written to {args.accounts_csv}")
            return 0
        return measure(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
