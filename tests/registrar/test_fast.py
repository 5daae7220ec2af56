"""The REGISTER fast path answers exactly as the general path does, or leaves the request to it.

Each example builds one REGISTER in many shapes (plain, compact names, display names,
outbound, several Vias, a Route, broken values, another tenant's domain, the node's
address) and sends it to two independent nodes: one through the general path (`SipNode`:
validation, the proxy engine's transaction, the registrar as a task), one through
`FastRegister`. Where the fast path answers, both answers must be the same message (only
the To tag and the nonces, which are random, may differ) and both location services must
hold the same bindings; the REGISTER is then repeated with credentials computed from each
node's own challenge, and compared again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from ringfence.provisioning.service import NOT_LOADED, NotLoaded, SipCredentials
from ringfence.proxy.engine import Identity, Incoming, Listener, ProxyEngine
from ringfence.proxy.router import Reply, Router
from ringfence.registrar.fast import _LINES, FastRegister
from ringfence.registrar.rules import SUPPORTED_OPTIONS
from ringfence.registrar.service import Registrar
from ringfence.sip.digest import DigestAlgorithm, answer, ha1, parse_challenge
from ringfence.sip.message import Message, Request, Response
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import Address, server_key
from ringfence.state.location import Binding, MemoryLocationService
from ringfence.state.ratelimit import AuthFailureGuard
from ringfence.transport.driver import SUPPORTED, SipNode
from tests.support.clock import FakeClock

DOMAIN = "sip.acme.example"
OTHER = "other.example"
NODE = Listener("UDP", "192.0.2.10", 5060)
SOURCE = Address("UDP", "198.51.100.7", 5070)
T = TypeVar("T")
PASSWORDS = {"alice": "correct horse", "bob": "battery staple", "carol": "tr0ub4dor&3"}


class Accounts:
    """Two tenants in memory; `loaded` False makes every cached lookup miss."""

    def __init__(self) -> None:
        self.loaded = True
        tenant = SimpleNamespace(sip_domain=DOMAIN)
        self.accounts = {
            user: SipCredentials(
                f"id-{user}",
                cast(Any, tenant),
                user,
                user != "bob",  # bob is suspended
                {
                    algorithm: ha1(algorithm, user, DOMAIN, password)
                    for algorithm in (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
                },
                push=user == "carol",
            )
            for user, password in PASSWORDS.items()
        }

    async def is_tenant_domain(self, domain: str) -> bool:
        return domain.lower() in (DOMAIN, OTHER)

    async def sip_credentials(self, domain: str, username: str) -> SipCredentials | None:
        return self.accounts.get(username) if domain.lower() == DOMAIN else None

    def cached_tenant_domain(self, domain: str) -> bool | None:
        return domain.lower() in (DOMAIN, OTHER) if self.loaded else None

    def cached_sip_credentials(
        self, domain: str, username: str
    ) -> SipCredentials | NotLoaded | None:
        if not self.loaded:
            return NOT_LOADED
        return self.accounts.get(username) if domain.lower() == DOMAIN else None


@dataclass
class Node:
    """One registrar with its location service, reached by one of the two paths."""

    accounts: Accounts = field(default_factory=Accounts)
    location: MemoryLocationService = field(default_factory=MemoryLocationService)
    guard: AuthFailureGuard = field(default_factory=lambda: AuthFailureGuard(50, 10, 300))
    sent: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registrar = Registrar(
            self.accounts,
            self.location,
            b"n" * 32,
            digest_algorithms=(DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
            guard=self.guard,
            # One wall clock for both nodes: the Date of a 200 (§10.3 step 8) must not
            # differ because the two answers straddle a second.
            clock=FakeClock(),
        )
        self.engine = ProxyEngine(Identity((NODE,)), b"f" * 32)
        self.node = SipNode(
            self.engine,
            cast(Router, Refusing()),
            self.registrar.handle,
            self.accounts.is_tenant_domain,
            self._send,
        )
        self.fast = FastRegister(
            self.registrar,
            self.location,
            self.accounts.cached_tenant_domain,
            lambda key: self.engine.layer.state(key) is not None,
            max_header_bytes=8192,
            max_headers=64,
        )

    def _send(self, destination: Address, message: Message) -> bool:
        assert destination == SOURCE
        self.sent.append(message)
        return True

    async def general(self, data: bytes) -> Response | None:
        """The general path's answer to `data` (None: dropped)."""
        self.sent.clear()
        message = parse_datagram(data)
        self.node.on_message(message, SOURCE)
        for _ in range(20):
            if self.sent:
                break
            await asyncio.sleep(0)
        return cast(Response, self.sent[-1]) if self.sent else None

    def now(self) -> float:
        return asyncio.get_running_loop().time()


def masked(response: Response) -> list[tuple[str, str]]:
    """The response's lines with the random parts (To tag, nonce, opaque) replaced."""
    lines = [("status", f"{response.status} {response.reason}")]
    for name, value in response.headers:
        value = re.sub(r";tag=[^;,]+$", ";tag=*", value) if name == "To" else value
        value = re.sub(r'(nonce|opaque)="[^"]*"', r'\1="*"', value)
        lines.append((name, value))
    return lines


def bindings(location: MemoryLocationService, now: float) -> list[Binding]:
    """Every binding, its expiry to the second (the two nodes read the clock apart)."""
    return [
        dataclasses.replace(binding, expires_at=round(binding.expires_at - now))
        for aor in (f"sip:{user}@{DOMAIN}" for user in PASSWORDS)
        for binding in location.lookup_now(aor, now)
    ]


class Refusing:
    """The router: a REGISTER that looks in-dialog is routed, and refused here."""

    async def decide(self, incoming: Incoming, now: float) -> Reply:
        return Reply(403, "Not routed in this test")


# -- the shapes of a REGISTER ---------------------------------------------------------------

USERS = st.sampled_from(["alice", "bob", "carol", "dave"])


def mostly(plain: T, *others: T) -> st.SearchStrategy[T]:
    """`plain` nine times in ten, else one of `others`: most examples stay on the fast path."""
    return st.integers(0, 9).flatmap(
        lambda i: st.sampled_from(others) if i == 0 else st.just(plain)
    )


NAMES = mostly("plain", "compact", "lower")


@st.composite
def registers(draw: st.DrawFn) -> tuple[list[tuple[str, str]], str, str]:
    """(header lines, Request-URI, the To user) of a REGISTER, in many shapes."""
    user = draw(USERS)
    domain = draw(mostly(DOMAIN, "SIP.Acme.Example", OTHER))
    uri = draw(mostly(f"sip:{DOMAIN}", f"sip:{OTHER}", "sip:192.0.2.10", f"sips:{DOMAIN}"))
    via = draw(
        mostly(
            "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-{n}",
            "SIP/2.0/UDP 198.51.100.7:5070;rport;branch=z9hG4bK{n}",
            "SIP/2.0/UDP phone.example;branch=z9hG4bK.{n};rport",
            "SIP/2.0/UDP 198.51.100.7:070;branch=z9hG4bK-{n}",
            "SIP/2.0/UDP 198.51.100.7:99999;branch=z9hG4bK-{n}",
            "SIP/2.0/UDP 256.1.1.1:5070;branch=z9hG4bK-{n}",
            "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK",
            "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-{n}, SIP/2.0/UDP 10.0.0.1",
            "SIP/2.0/TCP 198.51.100.7:5070;branch=z9hG4bK-{n}",
        )
    )
    display = draw(mostly("", '"Alice L" ', '"A"', "Alice "))
    to_params = draw(mostly("", ";tag=abc", ";user=phone"))
    contact = draw(
        mostly(
            f"<sip:{user}@198.51.100.7:5070;transport=UDP>",
            f"<sip:{user}@198.51.100.7:5070>;expires=600",
            f"<sip:{user}@198.51.100.7:5070>;expires=20",
            f"<sip:{user}@198.51.100.7:5070>;expires=0",
            f"<sip:{user}@198.51.100.7:5070;ob>;reg-id=1;"
            '+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"',
            f"<sip:{user}@198.51.100.7:5070>;pn-provider=apns;pn-prid=abc",
            f"<sip:{user}@198.51.100.7:5070>;q=0.5",
            f"<sip:{user}@198.51.100.7:5070>, <sip:{user}@198.51.100.8>",
            "*",
            "<sip:%41@198.51.100.7>",
            "<mailto:x@example.com>",
        )
    )
    cseq = draw(mostly("1 REGISTER", "7 REGISTER", "1 INVITE", "2147483648 REGISTER"))
    lines = [
        ("Via", via),
        ("Max-Forwards", draw(mostly("70", "0", "255", "256", "07"))),
        ("From", f"{display}<sip:{user}@{domain}>;tag=from{draw(st.integers(0, 9))}"),
        ("To", f"{display}<sip:{user}@{domain}>{to_params}"),
        ("Call-ID", draw(mostly("call-1@phone", "call-2@phone", "a b"))),
        ("CSeq", cseq),
    ]
    if draw(mostly(True, False)):
        lines.append(("Contact", contact))
    expires = draw(mostly("3600", None, "0", "30", "99999", "abc", "*"))
    if expires is not None:
        lines.append(("Expires", expires))
    extra = draw(
        mostly(
            None,
            ("User-Agent", "TestPhone/1.0"),
            ("User-Agent", "TestPhone/1.0 "),
            ("Supported", "path, outbound"),
            ("Require", "foo"),
            ("Route", "<sip:192.0.2.10;lr>"),
            ("Date", "yesterday"),
            ("Path", "<sip:edge.example;lr>"),
            ("Allow", "INVITE, ACK"),
        )
    )
    if extra is not None:
        lines.append(extra)
    if draw(st.booleans()):
        lines.append(("Content-Length", "0"))
    if not draw(mostly(True, False)):
        lines.append(lines[4])  # a repeated Call-ID
    style = draw(NAMES)
    compact = {"Via": "v", "From": "f", "To": "t", "Call-ID": "i", "Contact": "m"}
    if style == "compact":
        lines = [(compact.get(name, name), value) for name, value in lines]
    elif style == "lower":
        lines = [(name.lower(), value) for name, value in lines]
    return lines, uri, user


def datagram(lines: list[tuple[str, str]], uri: str, n: int, auth: str | None = None) -> bytes:
    head = [f"REGISTER {uri} SIP/2.0"]
    head += [f"{name}: {value.replace('{n}', str(n))}" for name, value in lines]
    if auth is not None:
        head.append(f"Authorization: {auth}")
    return ("\r\n".join([*head, "", ""])).encode()


def credentials(response: Response, uri: str, user: str, algorithm: DigestAlgorithm) -> str:
    challenge = next(
        parse_challenge(value)
        for value in response.headers.get_all("WWW-Authenticate")
        if parse_challenge(value).digest_algorithm is algorithm
    )
    password = PASSWORDS.get(user, "wrong password")
    return answer(challenge, "REGISTER", uri, user, password, cnonce="0a4f113b").render()


async def compare(
    general: Node, fast: Node, data: bytes, fast_data: bytes | None = None
) -> tuple[Response | None, Response | None]:
    """Both answers; asserts they agree wherever the fast path answered."""
    now = fast.now()
    taken = fast.fast.handle(fast_data or data, SOURCE, now)
    event("fast path" if taken is not None else "general path")
    if taken is None:
        # Left to the general path, with nothing changed.
        assert bindings(fast.location, now) == bindings(general.location, now)
        expected = await general.general(data)
        return expected, await fast.general(fast_data or data)
    answered = parse_datagram(taken)
    assert isinstance(answered, Response)
    expected = await general.general(data)
    assert expected is not None, "the fast path answered what the general path drops"
    assert masked(answered) == masked(expected)
    assert bindings(fast.location, now) == bindings(general.location, now)
    return expected, answered


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shape=registers(), algorithm=st.sampled_from([DigestAlgorithm.MD5, DigestAlgorithm.SHA256]))
def test_fast_and_general_paths_answer_alike(
    shape: tuple[list[tuple[str, str]], str, str], algorithm: DigestAlgorithm
) -> None:
    lines, uri, user = shape

    async def scenario() -> None:
        general, fast = Node(), Node()
        first, first_fast = await compare(general, fast, datagram(lines, uri, 1))
        if first is None or first_fast is None or first.status != 401:
            return
        if not first.headers.get_all("WWW-Authenticate"):
            return
        # The same request with credentials, each from its own node's challenge.
        data = datagram(lines, uri, 2, credentials(first, uri, user, algorithm))
        fast_data = datagram(lines, uri, 2, credentials(first_fast, uri, user, algorithm))
        second, _ = await compare(general, fast, data, fast_data)
        if second is not None and second.status == 200:
            # A refresh in the same dialog (CSeq one higher) and a replay (CSeq the same).
            for cseq_lines in (_bump(lines), lines):
                again = datagram(cseq_lines, uri, 3, credentials(first, uri, user, algorithm))
                again_fast = datagram(
                    cseq_lines, uri, 3, credentials(first_fast, uri, user, algorithm)
                )
                await compare(general, fast, again, again_fast)

    asyncio.run(scenario())


def _bump(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in lines:
        if name.lower() == "cseq" and value.endswith(" REGISTER"):
            number = int(value.split()[0])
            value = f"{number + 1} REGISTER"
        out.append((name, value))
    return out


# -- what the fast path does on its own -----------------------------------------------------

SIPP = [
    ("Via", "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-{n}"),
    ("Max-Forwards", "70"),
    ("From", f"<sip:alice@{DOMAIN}>;tag=1SIPpTag001"),
    ("To", f"<sip:alice@{DOMAIN}>"),
    ("Call-ID", "1-4242@198.51.100.7"),
    ("CSeq", "1 REGISTER"),
    ("Contact", "<sip:alice@198.51.100.7:5070;transport=UDP>"),
    ("Expires", "3600"),
    ("User-Agent", "ringfence-bench (SIPp)"),
    ("Content-Length", "0"),
]


async def test_a_sipp_register_takes_the_fast_path_to_200() -> None:
    node = Node()
    data = datagram(SIPP, f"sip:{DOMAIN}", 1)
    challenge = node.fast.handle(data, SOURCE, node.now())
    assert challenge is not None
    assert node.fast._read(data) is not None  # the one-pass reader took it
    challenged = parse_datagram(challenge)
    assert isinstance(challenged, Response)
    assert challenged.status == 401
    lines = [(n, v.replace("1 REGISTER", "2 REGISTER")) for n, v in SIPP]
    auth = credentials(challenged, f"sip:{DOMAIN}", "alice", DigestAlgorithm.MD5)
    ok = node.fast.handle(datagram(lines, f"sip:{DOMAIN}", 2, auth), SOURCE, node.now())
    assert ok is not None
    assert ok.startswith(b"SIP/2.0 200 OK\r\n")
    [binding] = bindings(node.location, node.now())
    assert binding.contact == "sip:alice@198.51.100.7:5070;transport=UDP"
    assert binding.user_agent == "ringfence-bench (SIPp)"
    assert len(node.engine.layer) == 0  # no transaction object was made


async def test_a_retransmission_gets_the_same_bytes_until_timer_j() -> None:
    node = Node()
    data = datagram(SIPP, f"sip:{DOMAIN}", 1)
    now = node.now()
    first = node.fast.handle(data, SOURCE, now)
    assert first is not None
    assert node.fast.handle(data, SOURCE, now + 31.9) == first  # same tag, same nonce
    assert len(node.fast) == 1
    # Timer J = 64*T1 = 32 s (RFC 3261 §17.2.2): then it is a new request.
    later = node.fast.handle(data, SOURCE, now + 32.5)
    assert later is not None
    assert later != first


async def test_a_transaction_the_engine_holds_is_left_to_it() -> None:
    node = Node()
    data = datagram(SIPP, f"sip:{DOMAIN}", 1)
    node.accounts.loaded = False
    assert node.fast.handle(data, SOURCE, node.now()) is None  # not in memory: general path
    response = await node.general(data)
    assert response is not None
    assert response.status == 401
    node.accounts.loaded = True
    # The retransmission belongs to the engine's transaction, which answers it.
    assert node.fast.handle(data, SOURCE, node.now()) is None
    assert await node.general(data) == response


async def test_nothing_in_memory_changes_nothing() -> None:
    node = Node()
    node.accounts.loaded = False
    data = datagram(SIPP, f"sip:{DOMAIN}", 1)
    assert node.fast.handle(data, SOURCE, node.now()) is None
    assert len(node.fast) == 0


@settings(max_examples=300, deadline=None)
@given(shape=registers())
def test_the_one_pass_reader_is_the_parser_on_what_it_takes(
    shape: tuple[list[tuple[str, str]], str, str],
) -> None:
    lines, uri, _ = shape
    node = Node()
    data = datagram(lines, uri, 1)
    read = node.fast._read(data)
    if read is None:
        return
    request, key = read
    parsed = parse_datagram(data)
    assert isinstance(parsed, Request)
    assert request == parsed
    assert key == server_key(parsed)


def test_the_strict_forms_cover_only_what_check_request_reads() -> None:
    # Require and Proxy-Require (§8.2.2.3), Date, Route, Path and Content-Type change what
    # the general path does; none of them may be read in the one-pass form.
    assert not {"Require", "Proxy-Require", "Date", "Route", "Path", "Content-Type"} & set(_LINES)
    assert SUPPORTED == SUPPORTED_OPTIONS


@pytest.mark.parametrize("size", [8190, 9000])
async def test_the_header_limit_holds_on_the_fast_path(size: int) -> None:
    node = Node()
    lines = [*SIPP, ("User-Agent", "x" * size)]
    lines = [line for line in lines if line != ("User-Agent", "ringfence-bench (SIPp)")]
    assert node.fast.handle(datagram(lines, f"sip:{DOMAIN}", 1), SOURCE, node.now()) is None
