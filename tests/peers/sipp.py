"""Run one SIPp scenario against a SIP server on loopback, for tests against real peers.

SIPp 3.6.1 (Debian ``sip-tester``). The scenarios are those of the SIP benchmark
(``benchmarks/sip/scenarios``); their injection file has one account a line::

    user;[authentication username=user password=secret];domain;callee

(SIPp does not expand ``[fieldN]`` inside ``[authentication ...]``, so the whole keyword
is field 1.) ``register_auth.xml`` registers field0 with a Contact at SIPp's own port;
``uac_call.xml``, ``uac_message.xml`` and ``uac_cancel.xml`` go from field0 to field3
through the server, challenged with 407; ``uas.xml`` answers them (see ``uas()``).

Typical use::

    write_injection(csv, [("alice", "pw-alice")], "bench.example", callee="bob")
    write_injection(callee_csv, [("bob", "pw-bob")], "bench.example")
    uas_port = free_udp_port()
    assert run_scenario("register_auth.xml", port, inf=callee_csv, local_port=uas_port) == (1, 0)
    with uas(port, uas_port):
        assert run_scenario("uac_call.xml", port, inf=csv, calls=5) == (5, 0)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

SCENARIOS = Path(__file__).resolve().parents[2] / "benchmarks" / "sip" / "scenarios"


class SippError(RuntimeError):
    """SIPp could not run the scenario at all (bad scenario, bad option, no statistics)."""


class SippResult(NamedTuple):
    """Calls that completed the scenario, and calls that did not (timeouts, unexpected)."""

    successful: int
    failed: int


def sipp_binary() -> str | None:
    """The sipp executable, or None when sip-tester is not installed."""
    return shutil.which("sipp")


def free_udp_port() -> int:
    """A loopback port free for UDP and for TCP at once (SIPp's -t t1 listens on TCP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue  # an outgoing TCP connection holds it; pick another
                return port


#: SIPp's words when its listening port was taken between choosing and binding it.
_BIND_RACE = "Unable to bind main socket"


def write_injection(
    path: Path, accounts: Sequence[tuple[str, str]], domain: str, callee: str | None = None
) -> None:
    """Write a SEQUENTIAL injection file of (user, password) accounts.

    Field 3 (the callee) is `callee`, or the account's own user when None.
    """
    lines = ["SEQUENTIAL"]
    for user, password in accounts:
        if ";" in user + password or "]" in password:
            raise ValueError(f"SIPp cannot carry {user!r}/{password!r} in an injection file")
        auth = f"[authentication username={user} password={password}]"
        lines.append(f"{user};{auth};{domain};{callee or user}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    return path if path.is_absolute() or path.exists() else SCENARIOS / path


def _argv(
    scenario: str | Path,
    host: str,
    port: int,
    local_port: int,
    extra: Sequence[str],
    transport: str = "u1",
) -> list[str]:
    binary = sipp_binary()
    if binary is None:
        raise SippError("sipp not found: apt-get install sip-tester")
    return [
        binary,
        f"{host}:{port}",
        "-sf",
        str(_scenario_path(scenario)),
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-t",
        transport,
        "-nostdin",
        "-default_behaviors",
        "abortunexp",
        *extra,
    ]


def _last_stats(path: Path) -> dict[str, str]:
    if not path.exists():
        raise SippError(f"SIPp wrote no statistics file {path}")
    rows = [line.split(";") for line in path.read_text(errors="replace").splitlines() if line]
    if len(rows) < 2:
        raise SippError(f"SIPp statistics file {path} has no data row")
    return dict(zip(rows[0], rows[-1], strict=False))


def run_scenario(
    scenario: str | Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    inf: Path | None = None,
    calls: int = 1,
    rate: float = 10.0,
    local_port: int | None = None,
    auth_uri: str | None = None,
    extra: Sequence[str] = (),
    recv_timeout_ms: int = 5000,
    timeout_s: float = 60.0,
    transport: str = "u1",
) -> SippResult:
    """Run a client scenario `calls` times at `rate` a second against host:port.

    `transport` is SIPp's -t: u1 (UDP), t1 (TCP), l1 (TLS).

    `scenario` is a file name in benchmarks/sip/scenarios or a path. `local_port` is
    SIPp's own port (a free one when None); it is the Contact of ``register_auth.xml``.
    `auth_uri` sets SIPp's digest ``uri=`` (by default SIPp signs ``sip:HOST:PORT``, not the
    Request-URI). Raises SippError when SIPp fails to run (exit status other than 0 or 1).
    """
    with tempfile.TemporaryDirectory(prefix="ringfence-sipp-") as tmp:
        work = Path(tmp)
        args = [
            "-m",
            str(calls),
            "-r",
            f"{rate:g}",
            "-recv_timeout",
            str(recv_timeout_ms),
            "-timeout",
            f"{int(timeout_s)}s",
            "-trace_stat",
            "-stf",
            str(work / "stat.csv"),
        ]
        if inf is not None:
            args += ["-inf", str(inf)]
        if auth_uri is not None:
            args += ["-auth_uri", auth_uri]
        # A port we chose can be taken by another process's outgoing connection before
        # SIPp binds it; SIPp then fails before sending anything, so choosing again is safe.
        tries = 1 if local_port is not None else 3
        while True:
            argv = _argv(
                scenario, host, port, local_port or free_udp_port(), [*args, *extra], transport
            )
            proc = subprocess.run(
                argv,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout_s + 30,
                check=False,
            )
            stderr = proc.stderr.decode(errors="replace")[-2000:]
            tries -= 1
            if tries == 0 or _BIND_RACE not in stderr:
                break
        if proc.returncode not in (0, 1):
            raise SippError(f"sipp exited {proc.returncode}: {stderr}")
        try:
            stats = _last_stats(work / "stat.csv")
        except SippError as exc:
            raise SippError(f"{exc}; sipp exited {proc.returncode}: {stderr}") from exc
    created = int(stats.get("TotalCallCreated") or 0)
    successful = int(stats.get("SuccessfulCall(C)") or 0)
    failed = max(created - successful, int(stats.get("FailedCall(C)") or 0))
    return SippResult(successful, failed)


@contextmanager
def uas(
    port: int,
    local_port: int,
    *,
    host: str = "127.0.0.1",
    scenario: str | Path = "uas.xml",
    extra: Sequence[str] = (),
    transport: str = "u1",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server scenario (``uas.xml``: the callee) on `local_port` while the block runs.

    Register the callees at `local_port` first (``register_auth.xml`` with that
    `local_port`): SIPp cannot register and then serve calls in one run.
    """
    argv = _argv(scenario, host, port, local_port, [*extra], transport)
    # stderr to a file, not a pipe: a chatty SIPp would block on a full pipe.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            time.sleep(0.3)
            if proc.poll() is not None:
                err.seek(0)
                stderr = err.read().decode(errors="replace")[-2000:]
                raise SippError(f"sipp {scenario} exited {proc.returncode}: {stderr}")
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
