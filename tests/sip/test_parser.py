"""Framing: datagrams, streams, keep-alives, folding, and the limits that keep us alive."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ringfence.sip import parser as parser_module
from ringfence.sip.errors import ParseError
from ringfence.sip.message import Request, Response
from ringfence.sip.parser import (
    MAX_DATAGRAM_BYTES,
    KeepAlivePing,
    StreamParser,
    parse_datagram,
)

OPTIONS = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK776\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"hello"
)


def test_datagram_request() -> None:
    message = parse_datagram(OPTIONS)
    assert isinstance(message, Request)
    assert message.method == "OPTIONS"
    assert message.uri == "sip:bob@example.com"
    assert message.headers.get("CSeq") == "1 OPTIONS"
    assert message.body == b"hello"
    assert message.raw == OPTIONS


def test_datagram_ignores_bytes_after_content_length() -> None:
    message = parse_datagram(OPTIONS + b"garbage")
    assert message.body == b"hello"
    assert message.raw == OPTIONS


def test_datagram_without_content_length_takes_the_rest() -> None:
    data = OPTIONS.replace(b"Content-Length: 5\r\n", b"")
    assert parse_datagram(data).body == b"hello"


def test_response_with_empty_reason() -> None:
    message = parse_datagram(b"SIP/2.0 180 \r\nCall-ID: x\r\n\r\n")
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "")


def test_folded_header_lines_are_unfolded() -> None:
    data = OPTIONS.replace(b"Call-ID: c1\r\n", b"Call-ID:\r\n  c1\r\nSubject: a\r\n\tb\r\n")
    message = parse_datagram(data)
    assert message.headers.get("Call-ID") == "c1"
    assert message.headers.get("Subject") == "a b"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nTo: x\r\n",  # no blank line
        b"OPTIONS sip:a@b SIP/2.0 \r\n\r\n",  # trailing SP
        b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n",  # two SP
        b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n",
        b"SIP/2.0 20 OK\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n continuation first\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nTo: \xff\xfe\r\n\r\n",  # not UTF-8
    ],
)
def test_malformed_datagrams_are_parse_errors(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_datagram(data)


def test_oversize_datagram_and_header_block() -> None:
    with pytest.raises(ParseError) as caught:
        parse_datagram(b"x" * (MAX_DATAGRAM_BYTES + 1))
    assert caught.value.status_hint == 513
    many = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X-A: 1\r\n" * 300 + b"\r\n"
    with pytest.raises(ParseError) as caught:
        parse_datagram(many)
    assert caught.value.status_hint == 513
    long = b"OPTIONS sip:a@b SIP/2.0\r\nX-A: " + b"a" * 40_000 + b"\r\n\r\n"
    with pytest.raises(ParseError):
        parse_datagram(long)


def test_stream_keepalives_and_leading_crlf() -> None:
    parser = StreamParser()
    parser.receive_data(b"\r\n\r\n")
    assert parser.next_event() == KeepAlivePing()
    assert parser.next_event() is None
    parser.receive_data(b"\r\n")  # half a ping: wait
    assert parser.next_event() is None
    parser.receive_data(b"\r\n")
    assert parser.next_event() == KeepAlivePing()
    parser.receive_data(b"\r\n" + OPTIONS)  # a pong, then a request
    message = parser.next_event()
    assert isinstance(message, Request)
    assert message.body == b"hello"


def test_stream_needs_content_length() -> None:
    parser = StreamParser()
    parser.receive_data(OPTIONS.replace(b"Content-Length: 5\r\n", b""))
    with pytest.raises(ParseError, match="Content-Length"):
        parser.next_event()


def test_stream_refuses_conflicting_lengths() -> None:
    parser = StreamParser()
    parser.receive_data(OPTIONS.replace(b"Content-Length: 5\r\n", b"l: 5\r\nl: 6\r\n"))
    with pytest.raises(ParseError, match="several"):
        parser.next_event()


def test_stream_limits() -> None:
    parser = StreamParser(max_header_bytes=1024, max_body_bytes=100)
    parser.receive_data(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 2000)
    with pytest.raises(ParseError) as caught:
        parser.next_event()
    assert caught.value.status_hint == 513
    parser = StreamParser(max_body_bytes=100)
    parser.receive_data(OPTIONS.replace(b"Content-Length: 5", b"Content-Length: 101"))
    with pytest.raises(ParseError) as caught:
        parser.next_event()
    assert caught.value.status_hint == 413


def test_stream_waits_for_the_whole_body() -> None:
    parser = StreamParser()
    parser.receive_data(OPTIONS[:-2])
    assert parser.next_event() is None
    parser.receive_data(OPTIONS[-2:] + OPTIONS[:10])
    assert isinstance(parser.next_event(), Request)
    assert parser.buffered == 10


# The one-pass header parser must give the line-by-line parser's fields for every block it
# takes, and leave every other block (folded, lone CR or LF, a bad line, too many) to it.
_NAMES = st.sampled_from(["Via", "v", "To", "X-Odd_Name!", "Call-ID", "", "Bad Name", "a:b"])
_VALUES = st.text(alphabet=st.sampled_from(list('ab ;=<>:@\t\r\n"\\,\x00é')), max_size=12)
_COLONS = st.sampled_from([":", " :", ":\t", "\t: ", ""])
_BREAKS = st.sampled_from(["\r\n", "\r\n", "\r\n", "\r\n ", "\r\n\t", "\n", "\r"])


@st.composite
def _header_blocks(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.tuples(_NAMES, _COLONS, _VALUES, _BREAKS), max_size=8))
    text = "INVITE sip:a@b SIP/2.0"
    for name, colon, value, line_break in lines:
        text += line_break + name + colon + value
    return text


@settings(max_examples=600)
@given(_header_blocks(), st.integers(min_value=0, max_value=8))
def test_one_pass_header_parser_agrees_with_the_line_parser(text: str, limit: int) -> None:
    fast = parser_module._parse_plain_head(text, limit)
    try:
        slow: tuple[str, list[tuple[str, str]]] | None = parser_module._parse_lines(text, limit)
    except ParseError:
        slow = None
    if fast is not None:
        assert fast == slow


def test_an_ordinary_header_block_takes_the_one_pass_parser() -> None:
    head = OPTIONS.split(b"\r\n\r\n")[0].decode()
    fast = parser_module._parse_plain_head(head, 256)
    assert fast is not None
    assert fast == parser_module._parse_lines(head, 256)
    assert fast[1][0] == ("Via", "SIP/2.0/TCP client.example.com;branch=z9hG4bK776")
