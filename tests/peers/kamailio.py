"""Kamailio 5.6 as a stand-in "existing PBX", for end-to-end tests of overlay mode.

In overlay mode ringfence registers users' accounts on the provider's PBX (digest auth) and
that PBX sends their INVITEs and MESSAGEs to ringfence's Contact. The tests need such a PBX
that they can start, inspect and restart: Kamailio (Debian ``kamailio``) with
``kamailio_pbx.cfg``, an in-memory registrar and stateful proxy on loopback (see the cfg's
header for what it accepts).

Typical use::

    with Pbx(tmp_path, {"alice": "pw"}) as pbx:
        ...  # register sip:alice@pbx.example at pbx.address (127.0.0.1:PORT, UDP or TCP)
        assert pbx.bindings("alice") == ["sip:rf-abc@127.0.0.1:5090;transport=udp"]
        pbx.restart()  # same port; the bindings are gone (usrloc in memory)
        assert pbx.bindings("alice") == []

Why each piece is done the way it is:

* The port is one that is free for both UDP and TCP, so the PBX listens on both with the
  same number, as a real PBX on 5060 does; `restart` keeps it, since what ringfence has to
  survive is *its* PBX going away and coming back at the same address.
* Readiness is a SIP OPTIONS answered 200 (not "the port is bound"): only then are the
  modules initialised and the users' htable loaded.
* Bindings are read with ``kamcmd`` over the ctl module's unix socket in the work dir, not
  inferred from replies, so a test sees what the PBX itself would route to; `contacts` reads
  the bindings of thousands of users through one kamcmd process.
* ``Pbx(..., log_registers=True)`` logs every REGISTER as it arrives, and every binding
  saved, with the time in microseconds (``-A LOG_REGISTER``): `registers` and
  `register_times` read them back, e.g. to check a client's REGISTER rate from the PBX's
  side::

      with Pbx(tmp_path, users, log_registers=True) as pbx:
          since = clock.now().timestamp()
          ...
          times = pbx.register_times(since)  # arrival times (Unix time), in order
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.support.net import free_port

CFG = Path(__file__).resolve().with_name("kamailio_pbx.cfg")
DEFAULT_DOMAIN = "pbx.example"
#: Seconds to wait for the first 200 to OPTIONS (the brief of every test: ~10 s).
START_TIMEOUT_S = 10.0
#: Seconds between SIGTERM and SIGKILL in `Pbx.stop`.
STOP_GRACE_S = 5.0
#: A unix socket path longer than this does not fit sockaddr_un (108 bytes with the NUL).
_MAX_UNIX_PATH = 100
#: kamcmd's answers when an AOR has no live binding (it exits 0 on RPC faults too).
_NO_BINDING = ("AOR not found in location table", "AOR has no contacts")
#: Shared memory (MB) and UDP workers: room for thousands of users and REGISTER bursts.
SHM_MB = 128
UDP_WORKERS = 4
#: The cfg's LOG_REGISTER lines (xlog NOTICE, on stderr, i.e. in the log file).
_REGISTER_LINE = re.compile(
    r"RFREG (?P<event>arrived|saved) t=(?P<time>\d+\.\d+) ci=(?P<call_id>\S*)"
    r" cs=(?P<cseq>\d*) u=(?P<user>\S*)"
)


@dataclass(frozen=True, slots=True)
class RegisterLine:
    """One REGISTER the PBX logged (``Pbx(log_registers=True)``).

    Attributes:
        event: ``"arrived"`` (as it came in, before authentication; retransmissions too)
            or ``"saved"`` (save() succeeded, the REGISTER was answered 200: a binding
            stored, refreshed, or removed by Expires: 0).
        time: When, as Unix time with microseconds (Kamailio's ``$TV(Sn)``).
        call_id: Its Call-ID.
        cseq: Its CSeq number.
        user: The To URI's user part (the AOR's user).
    """

    event: str
    time: float
    call_id: str
    cseq: int
    user: str


class PbxError(RuntimeError):
    """Kamailio did not start, died, or its control socket answered something unexpected."""


def _sbin_which(name: str) -> str | None:
    """`shutil.which`, also looking in /usr/sbin: Debian installs Kamailio there, and a
    non-root PATH often lacks it."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def kamailio_binary() -> str | None:
    """The kamailio executable, or None when the Debian package is not installed."""
    return _sbin_which("kamailio")


def kamcmd_binary() -> str | None:
    """The kamcmd executable (same Debian package), or None."""
    return _sbin_which("kamcmd")


def free_udp_and_tcp_port() -> int:
    """A loopback port free for both TCP and UDP right now (the PBX listens on both)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _port_free(port: int) -> bool:
    """Whether UDP and TCP `port` can be bound (SO_REUSEADDR for TCP, as Kamailio sets it,
    so that connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _db_text_escape(value: str) -> str:
    """A string field of a db_text row: ':' separates fields, '\\' escapes."""
    if any(c in value for c in "\r\n\t\0"):
        raise ValueError(f"db_text cannot hold {value!r} in this table")
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_users_db(directory: Path, users: Mapping[str, str]) -> None:
    """The db_text tables that kamailio_pbx.cfg loads into its "users" htable.

    db_text (not a SQL server) keeps the PBX self-contained: two text files, read once at
    start. ``version`` says the htable table is of schema version 2, which htable checks.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        "id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int)"
    ]
    rows.extend(
        f"{i}:{_db_text_escape(user)}:0:0:{_db_text_escape(password)}:0"
        for i, (user, password) in enumerate(users.items(), start=1)
    )
    (directory / "htable").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (directory / "version").write_text(
        "id(int,auto) table_name(string) table_version(int)\n1:htable:2\n", encoding="ascii"
    )


def sip_ping(port: int, timeout_s: float, host: str = "127.0.0.1") -> int | None:
    """Send OPTIONS over UDP until a reply comes; its status code, or None on timeout.

    A stdlib socket, not the project's SIP stack: the probe must not depend on the code
    under test.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        token = secrets.token_hex(8)
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{token}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:ping@127.0.0.1:{local}>;tag={token}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {token}@ringfence-tests\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.perf_counter() + timeout_s
        sock.settimeout(0.2)
        while time.perf_counter() < deadline:
            sock.sendto(request, (host, port))
            with contextlib.suppress(TimeoutError):
                status_line = sock.recv(65535).split(b"\r\n", 1)[0].split()
                if len(status_line) >= 2 and status_line[1].isdigit():
                    return int(status_line[1])
    return None


def parse_contacts(kamcmd_output: str) -> list[str]:
    """The ``Address:`` values of ``kamcmd ul.lookup``/``ul.dump`` output, in order.

    The output is kamcmd's pretty-printed RPC structure, one ``Name: value`` a line::

        {
            AoR: alice
            Contacts: {
                Contact: {
                    Address: sip:rf-abc123@127.0.0.1:5090;transport=udp
                    Expires: 60
                    ...
    """
    return [
        line.split(":", 1)[1].strip()
        for line in kamcmd_output.splitlines()
        if line.strip().startswith("Address:")
    ]


def _time_of(line: RegisterLine) -> float:
    return line.time


class Pbx:
    """Kamailio with kamailio_pbx.cfg on 127.0.0.1, UDP and TCP on one port.

    Attributes:
        workdir: Where the db_text tables, the log (``kamailio.log``) and, when its path is
            short enough, the control socket live.
        users: Digest user name -> password; the AOR is ``sip:user@domain``.
        domain: The PBX's SIP domain and digest realm (an alias of the server).
        log_registers: Log each REGISTER and each binding saved (see `registers`).
    """

    def __init__(
        self,
        workdir: Path,
        users: Mapping[str, str],
        domain: str = DEFAULT_DOMAIN,
        *,
        log_registers: bool = False,
    ) -> None:
        self.workdir = workdir
        self.users = dict(users)
        self.domain = domain
        self.log_registers = log_registers
        self.log = workdir / "kamailio.log"
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._ctl_dir: Path | None = None
        #: The REGISTER lines parsed so far, and how far into the log they go.
        self._registers: list[RegisterLine] = []
        self._log_parsed = 0

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The UDP and TCP port (chosen by the first `start`, kept by `restart`)."""
        if self._port is None:
            raise PbxError("the PBX has not been started")
        return self._port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: where to send SIP (UDP or TCP)."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def ctl_socket(self) -> str:
        """The ctl module's binrpc socket, as kamcmd's ``-s`` takes it."""
        path = self.workdir / "kamailio.ctl"
        if len(str(path)) > _MAX_UNIX_PATH:
            # pytest's tmp_path can be too long for a unix socket: use a short private dir.
            if self._ctl_dir is None:
                self._ctl_dir = Path(tempfile.mkdtemp(prefix="rf-kam-"))
            path = self._ctl_dir / "kamailio.ctl"
        return f"unix:{path}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start Kamailio and wait until it answers OPTIONS with 200.

        The first start picks a free port; later ones (`restart`) reuse it.

        Raises:
            PbxError: kamailio is not installed, exited, or did not answer within
                START_TIMEOUT_S (the message names the log file).
        """
        if self.running:
            raise PbxError("the PBX is already running")
        binary = kamailio_binary()
        if binary is None:
            raise PbxError("kamailio not found: apt-get install -y kamailio")
        self.workdir.mkdir(parents=True, exist_ok=True)
        db = self.workdir / "db"
        write_users_db(db, self.users)
        if self._port is None:
            self._port = free_udp_and_tcp_port()
        port = self._port
        ctl = self.ctl_socket
        with contextlib.suppress(FileNotFoundError):
            Path(ctl.removeprefix("unix:")).unlink()  # a stale socket from a killed run
        argv = [
            binary,
            "-f",
            str(CFG),
            "-DD",  # stay in the foreground: this Popen is the main process
            "-E",  # log to stderr, i.e. the log file
            "-m",
            str(SHM_MB),
            "-M",
            "8",
            "-n",
            str(UDP_WORKERS),
            "-Y",
            str(self.workdir),  # runtime dir: nothing under /run/kamailio
            "-w",
            str(self.workdir),  # working dir (core files)
            "-l",
            f"udp:127.0.0.1:{port}",
            "-l",
            f"tcp:127.0.0.1:{port}",
            "-A",
            f'PBX_DOMAIN="{self.domain}"',
            "-A",
            f'PBX_DB="text://{db}"',
            "-A",
            f'CTL_SOCK="{ctl}"',
        ]
        if self.log_registers:
            argv += ["-A", "LOG_REGISTER"]
        self._log_file = self.log.open("ab")
        self._log_file.write(f"==== {' '.join(argv)}\n".encode())
        self._log_file.flush()
        # Its own session, so that `stop` can kill the workers too if the main one hangs.
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.perf_counter() + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise PbxError(f"kamailio exited with {code} at start; see {self.log}")
            if sip_ping(port, 0.5) == 200:
                return
        self.stop()
        raise PbxError(
            f"kamailio did not answer OPTIONS on {self.address} within {START_TIMEOUT_S} s;"
            f" see {self.log}"
        )

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL to its whole process group after `grace_s`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                # Its own session (start_new_session): the group is its workers.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(grace_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> None:
        """Stop and start again on the same port: every binding is lost (usrloc in memory)."""
        self.stop()
        if self._port is not None:
            deadline = time.perf_counter() + STOP_GRACE_S
            while not _port_free(self._port):
                if time.perf_counter() > deadline:
                    raise PbxError(f"port {self._port} still in use after stopping kamailio")
                time.sleep(0.05)
        self.start()

    def close(self) -> None:
        """`stop`, and remove the short control-socket directory if one was made."""
        self.stop()
        if self._ctl_dir is not None:
            shutil.rmtree(self._ctl_dir, ignore_errors=True)
            self._ctl_dir = None

    def __enter__(self) -> Pbx:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- inspection ----------------------------------------------------------------------

    def kamcmd(self, *args: str, timeout_s: float = 5.0) -> str:
        """Run one kamcmd RPC against this PBX; its standard output.

        kamcmd exits 0 even when the RPC fails (it prints ``error: CODE - TEXT``), so the
        caller reads the text; a non-zero exit means the socket could not be reached.
        """
        binary = kamcmd_binary()
        if binary is None:
            raise PbxError("kamcmd not found: apt-get install -y kamailio")
        proc = subprocess.run(
            [binary, "-s", self.ctl_socket, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise PbxError(
                f"kamcmd {' '.join(args)} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}; see {self.log}"
            )
        return proc.stdout

    def bindings(self, user: str) -> list[str]:
        """The contact URIs registered for user@domain now (expired ones excluded).

        From ``kamcmd ul.lookup location user@domain``, which lists only live contacts and
        answers ``error: 500 - AOR not found in location table`` (never registered, or
        every binding removed) or ``... AOR has no contacts`` (all expired): both mean [].
        """
        output = self.kamcmd("ul.lookup", "location", f"{user}@{self.domain}")
        stripped = output.strip()
        if stripped.startswith("error:"):
            if any(text in stripped for text in _NO_BINDING):
                return []
            raise PbxError(f"kamcmd ul.lookup for {user}: {stripped}")
        return parse_contacts(output)

    def contacts(self, users: Iterable[str] | None = None) -> dict[str, list[str]]:
        """The live contact URIs of each of `users` (default: every user of the PBX).

        Like `bindings`, from ``ul.lookup``, but every lookup goes through one kamcmd
        process (its interactive mode, the commands on its standard input): thousands of
        users are read in a fraction of a second. (``ul.dump`` would be one RPC, but
        kamcmd refuses its reply as too big beyond a hundred bindings or so.) Users
        without a live binding map to [].
        """
        names = list(self.users if users is None else users)
        for user in names:
            if not user or any(c.isspace() for c in user):
                raise ValueError(f"kamcmd cannot look up the user {user!r}")
        found: dict[str, list[str]] = {user: [] for user in names}
        if not names:
            return found
        binary = kamcmd_binary()
        if binary is None:
            raise PbxError("kamcmd not found: apt-get install -y kamailio")
        commands = "".join(f"ul.lookup location {user}@{self.domain}\n" for user in names)
        proc = subprocess.run(
            [binary, "-s", self.ctl_socket],
            input=commands,
            capture_output=True,
            text=True,
            timeout=30.0,
            check=False,
        )
        if proc.returncode != 0:
            raise PbxError(
                f"kamcmd ul.lookup (x{len(names)}) exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}; see {self.log}"
            )
        # Each answer is either an "error: 500 - ..." line (no live binding) or a structure
        # that starts with "AoR: user" (use_domain=0) and lists "Address: uri" lines.
        aor: str | None = None
        for line in proc.stdout.splitlines():
            name, _, value = line.strip().partition(":")
            if name == "AoR":
                aor = value.strip()
            elif name == "Address" and aor in found:
                found[aor].append(value.strip())
            elif "error:" in line:
                if not any(text in line for text in _NO_BINDING):
                    raise PbxError(f"kamcmd ul.lookup: {line.strip()}")
                aor = None
        return found

    def count_contacts(self, substring: str = "", users: Iterable[str] | None = None) -> int:
        """How many live contacts of `users` (default: all) contain `substring`."""
        return sum(
            substring in contact
            for contacts in self.contacts(users).values()
            for contact in contacts
        )

    def registers(self, since: float | None = None) -> list[RegisterLine]:
        """The REGISTERs logged so far (``log_registers=True``), across restarts, in order.

        `since`: only those logged at or after this Unix time (the test's wall clock,
        ``SystemClock().now().timestamp()``, is Kamailio's).
        """
        if not self.log_registers:
            raise PbxError("REGISTERs are logged only with Pbx(..., log_registers=True)")
        # Only what was appended since the last call is read (the log only grows), up to
        # its last complete line: a test can poll this while thousands come in.
        try:
            with self.log.open("rb") as log:
                log.seek(self._log_parsed)
                chunk = log.read()
        except FileNotFoundError:
            chunk = b""
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._log_parsed += len(complete)
        text = complete.decode("utf-8", errors="replace")
        found = [
            RegisterLine(
                match["event"],
                float(match["time"]),
                match["call_id"],
                int(match["cseq"] or 0),
                match["user"],
            )
            for match in _REGISTER_LINE.finditer(text)
        ]
        if found:
            self._registers.extend(found)
            self._registers.sort(key=lambda line: line.time)  # the workers write concurrently
        if since is None:
            return list(self._registers)
        return self._registers[bisect.bisect_left(self._registers, since, key=_time_of) :]

    def register_times(self, since: float | None = None) -> list[float]:
        """When each REGISTER arrived (Unix time, ascending), see `registers`."""
        return [line.time for line in self.registers(since) if line.event == "arrived"]
