"""Messages, headers and the serialise/parse round trip."""

from __future__ import annotations

from hypothesis import given, strategies as st

from ringfence.sip.message import (
    Headers,
    Request,
    Response,
    serialize,
    split_list,
    with_content_length,
)
from ringfence.sip.parser import StreamParser, parse_datagram

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
# Header values as the parser delivers them: no CR/LF, no surrounding whitespace.
values = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\r\n"),
    max_size=40,
).map(lambda text: text.strip(" \t\x85\xa0\u1680\u2000\u3000"))
uris = st.builds(
    lambda user, host, port: f"sip:{user}@{host}" + (f":{port}" if port else ""),
    st.text("abcdefghij0123456789", min_size=1, max_size=8),
    st.sampled_from(["example.com", "192.0.2.1", "[2001:db8::1]", "host.example.org"]),
    st.none() | st.integers(1, 65535),
)
header_lists = st.lists(st.tuples(tokens, values), max_size=12)
bodies = st.binary(max_size=300)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(tokens)
    message = Request(method, draw(uris), Headers(draw(header_lists)), draw(bodies))
    result = with_content_length(message)
    assert isinstance(result, Request)
    return result


@st.composite
def responses(draw: st.DrawFn) -> Response:
    reason = draw(values)
    status = draw(st.integers(100, 699))
    message = Response(status, reason, Headers(draw(header_lists)), draw(bodies))
    result = with_content_length(message)
    assert isinstance(result, Response)
    return result


@given(requests() | responses())
def test_parse_of_serialize_is_identity(message: Request | Response) -> None:
    wire = serialize(message)
    parsed = parse_datagram(wire)
    assert parsed == message
    assert parsed.raw == wire


@given(st.lists(requests() | responses(), min_size=1, max_size=4), st.integers(1, 50))
def test_stream_frames_any_chunking(messages: list[Request | Response], chunk: int) -> None:
    wire = b"".join(serialize(message) for message in messages)
    parser = StreamParser()
    got = []
    for start in range(0, len(wire), chunk):
        parser.receive_data(wire[start : start + chunk])
        while (event := parser.next_event()) is not None:
            got.append(event)
    assert got == messages
    assert parser.buffered == 0


def test_compact_forms_and_case_are_normalised() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a"), ("CALL-ID", "x"), ("l", "0"), ("X-Mine", "1")])
    assert [name for name, _ in headers] == ["Via", "Call-ID", "Content-Length", "X-Mine"]
    assert headers.get("call-id") == "x"
    assert headers.get("i") == "x"
    assert headers.get("x-mine") == "1"
    assert "Via" in headers
    assert "Route" not in headers


def test_list_values_split_outside_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:j@a;x=1,2>;q=0.5, <sip:b@c>'
    assert split_list(value) == ['"Doe, John" <sip:j@a;x=1,2>;q=0.5', "<sip:b@c>"]
    headers = Headers([("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("v", "SIP/2.0/TCP c")])
    assert headers.values("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/TCP c"]


def test_editing_returns_new_headers() -> None:
    headers = Headers([("Via", "1"), ("To", "t"), ("Via", "2")])
    assert headers.prepend("Via", "0").get_all("Via") == ["0", "1", "2"]
    assert headers.remove("Via") == Headers([("To", "t")])
    assert list(headers.replace("Via", "x")) == [("Via", "x"), ("To", "t")]
    assert headers.replace("Max-Forwards", "70").get("Max-Forwards") == "70"
    assert headers.get_all("Via") == ["1", "2"]  # unchanged


@given(
    st.lists(st.tuples(st.sampled_from(["Via", "To", "Max-Forwards", "max-forwards"]), st.text())),
    st.lists(st.tuples(st.sampled_from(["Via", "Record-Route", "Route"]), st.text())),
    st.text(),
)
def test_forwarded_is_the_chain_of_edits_in_one_copy(
    items: list[tuple[str, str]], front: list[tuple[str, str]], value: str
) -> None:
    headers = Headers(items)
    chained = headers.replace("Max-Forwards", value)
    for name, line in reversed(front):
        chained = chained.prepend(name, line)
    assert headers.forwarded(front, "Max-Forwards", value) == chained


def test_header_lookups_by_any_spelling_and_repeats() -> None:
    headers = Headers(
        [
            ("v", "SIP/2.0/UDP a"),
            ("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c"),
            ("X-A", "1"),
            ("x-a", "2"),
        ]
    )
    assert headers.get_all("VIA") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b, SIP/2.0/UDP c"]
    assert headers.values("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert headers.get("X-a") == "1"
    assert headers.repeated("x-A")
    assert headers.repeated("Via")
    assert not headers.repeated("To")
    assert "x-a" in headers
    assert "To" not in headers
    assert headers.get_all("To") == []
    # Lists handed out are copies: the value stays immutable.
    headers.get_all("Via").append("changed")
    headers.values("Via").clear()
    assert len(headers.values("Via")) == 3
