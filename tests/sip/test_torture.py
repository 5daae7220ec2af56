"""RFC 4475 and RFC 5118 torture messages, each against its expectation from the RFC text.

The messages are read byte-exact from the shared folder (override with RINGFENCE_SIP_TORTURE);
the expectations live in `torture_expectations.py`, one per file, citing the section.
Every message is also fed to the stream parser byte by byte, and with trailing data.
"""

from __future__ import annotations

import re

import pytest

from ringfence.sip.errors import ParseError
from ringfence.sip.fields import parse_cseq
from ringfence.sip.message import Message, Request, Response
from ringfence.sip.parser import StreamParser, parse_datagram
from ringfence.sip.validation import check_request, check_response
from tests.sip.torture_expectations import EXPECTATIONS, Expectation, Outcome
from tests.support.torture import TORTURE_ROOT

ROOT = TORTURE_ROOT
#: The responses that message validation itself gives; the others (200, 401, 404, 406, 483)
#: belong to the registrar and proxy, which pass the message through validation first.
VALIDATION_STATUSES = {400, 415, 416, 420, 501, 505}
#: Where the RFC's answer comes from the registrar or proxy although its code is one of the
#: above: the message itself is valid, the element refuses what it asks for (an AOR of an
#: unknown scheme; a method a registrar does not implement, which a proxy would forward).
DECIDED_ABOVE = {"rfc4475/unksm2.dat", "rfc4475/esc02.dat"}
#: As a registrar and proxy we implement these option tags (RFC 5626, RFC 3327).
SUPPORTED = frozenset({"outbound", "path"})


def load(expectation: Expectation) -> bytes:
    data = (ROOT / expectation.file).read_bytes()
    if expectation.file.startswith("rfc5118/"):
        # The RFC 5118 archive's caveats (see the shared README): LF line ends, a missing
        # blank line, and Content-Length values that do not match the bodies.
        text = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if b"\r\n\r\n" not in text:
            text += b"\r\n"
        head, _, body = text.partition(b"\r\n\r\n")
        head = re.sub(
            rb"(?im)^(Content-Length|l)[ \t]*:[^\r\n]*",
            b"Content-Length: " + str(len(body)).encode(),
            head,
        )
        data = head + b"\r\n\r\n" + body
    return data


def judge(message: Message) -> int | str | None:
    """What the server does: a request's refusal status, a response's reason to drop it."""
    if isinstance(message, Request):
        rejection = check_request(message, supported=SUPPORTED, as_uas=True)
        return None if rejection is None else rejection.status
    return check_response(message)


@pytest.fixture(scope="module", autouse=True)
def _corpus_present() -> None:
    if not ROOT.is_dir():
        pytest.fail(f"torture messages not found at {ROOT} (set RINGFENCE_SIP_TORTURE)")


def test_every_file_has_one_expectation() -> None:
    files = {
        f"{folder.name}/{path.name}"
        for folder in (ROOT / "rfc4475", ROOT / "rfc5118")
        for path in folder.iterdir()
    }
    assert {e.file for e in EXPECTATIONS} == files
    assert len(EXPECTATIONS) == len(files)


@pytest.mark.parametrize("expectation", EXPECTATIONS, ids=lambda e: e.file)
def test_expectation(expectation: Expectation) -> None:
    data = load(expectation)
    try:
        message = parse_datagram(data)
    except ParseError:
        assert expectation.outcome is Outcome.REJECTED, "the parser refused a valid message"
        return
    assert isinstance(message, Request if expectation.kind == "request" else Response)
    verdict = judge(message)
    if expectation.outcome is Outcome.REJECTED:
        if expectation.kind == "request":
            assert verdict == expectation.status, expectation.why
        else:
            assert isinstance(verdict, str), "an invalid response must be dropped"
        return
    if expectation.kind == "request":
        decided_here = (
            expectation.status in VALIDATION_STATUSES and expectation.file not in DECIDED_ABOVE
        )
        assert verdict == (expectation.status if decided_here else None), expectation.why
    else:
        assert verdict is None
    check_facts(message, expectation)


def check_facts(message: Message, expectation: Expectation) -> None:
    if isinstance(message, Request):
        if expectation.method is not None:
            assert message.method == expectation.method
        if expectation.request_uri is not None:
            assert message.uri == expectation.request_uri
    if expectation.call_id is not None:
        assert message.headers.get("Call-ID") == expectation.call_id
    if expectation.cseq is not None:
        cseq = parse_cseq(message.headers.get("CSeq") or "")
        assert (cseq.number, cseq.method) == expectation.cseq
    if expectation.via_count is not None:
        assert len(message.headers.values("Via")) == expectation.via_count
    if expectation.body_length is not None:
        assert len(message.body) == expectation.body_length


@pytest.mark.parametrize("expectation", EXPECTATIONS, ids=lambda e: e.file)
def test_stream_byte_by_byte_and_with_trailing_data(expectation: Expectation) -> None:
    data = load(expectation)
    try:
        expected = parse_datagram(data)
    except ParseError:
        return
    if len(expected.headers.get_all("Content-Length")) != 1:
        return  # a stream needs exactly one Content-Length (RFC 3261 §18.3)
    wire = expected.raw or b""
    parser = StreamParser()
    events = []
    for byte in wire + b"OPTIONS":
        parser.receive_data(bytes([byte]))
        while (event := parser.next_event()) is not None:
            events.append(event)
    assert events == [expected]
    assert parser.buffered == len(b"OPTIONS")
