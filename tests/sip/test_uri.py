"""URIs and name-addr values."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings, strategies as st

from ringfence.sip import uri as uri_module
from ringfence.sip.fields import FieldError, parse_cseq, parse_max_forwards, parse_via
from ringfence.sip.uri import (
    AbsoluteURI,
    NameAddr,
    SipURI,
    TelURI,
    URIError,
    parse_name_addr,
    parse_uri,
)


def test_sip_uri_parts() -> None:
    uri = parse_uri("sips:alice:secret@[2001:db8::10]:5061;transport=tcp;lr?Subject=hi&X=1")
    assert isinstance(uri, SipURI)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "[2001:db8::10]",
        5061,
    )
    assert uri.param("TRANSPORT") == "tcp"
    assert uri.has_param("lr")
    assert uri.param("lr") is None
    assert uri.headers == (("Subject", "hi"), ("X", "1"))
    assert str(uri) == "sips:alice:secret@[2001:db8::10]:5061;transport=tcp;lr?Subject=hi&X=1"


def test_escapes_are_kept_and_decodable() -> None:
    uri = parse_uri("sip:sips%3Auser%40example.com@example.net")
    assert isinstance(uri, SipURI)
    assert uri.user == "sips%3Auser%40example.com"
    assert uri.user_unescaped == "sips:user@example.com"
    assert uri.host == "example.net"


def test_user_part_may_hold_semicolons() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert isinstance(uri, SipURI)
    assert uri.user == "user;par=u%40example.net"
    assert uri.params == ()


def test_tel_and_opaque_schemes() -> None:
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert tel == TelURI("+1-201-555-0123", (("phone-context", "example.com"),))
    sos = parse_uri("urn:service:sos")
    assert sos == AbsoluteURI("urn", "service:sos")
    assert str(sos) == "urn:service:sos"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        "sip:",
        "sip:user@",
        "sip:user@exa mple.com",
        "sip:user@[2001:db8::1",
        "sip:user@[2001:db8:::1]",
        "sip:user@host:99999",
        "sip:user@host:port",
        "sip:user@256.1.1.1",
        "sip:us er@host",
        "sip:user@host;=x",
        "sip:user@host?noequals",
        "1sip:user@host",
        "tel:",
        "<sip:user@host>",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(URIError):
        parse_uri(text)


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert quoted.display_name == 'J Rosenberg \\"'
    assert quoted.tag == "98asjd8"
    tokens = parse_name_addr("A. Bell <sip:a.g.bell@example.com>;tag=x")
    assert tokens.display_name == "A. Bell"
    tight = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert tight.display_name == "caller"
    bare = parse_name_addr("sip:alice@example.com;tag=1;x")
    assert bare.uri == SipURI("sip", "alice", "example.com")
    assert bare.params == (("tag", "1"), ("x", None))
    assert str(NameAddr(SipURI("sip", "bob", "b.example"), 'Bob "B"', (("tag", "7"),))) == (
        '"Bob \\"B\\"" <sip:bob@b.example>;tag=7'
    )


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',  # unterminated quote
        "Bell, Alexander <sip:a@example.com>",  # comma in an unquoted name
        "<sip:a@example.com",  # unterminated <
        "< sip:a@example.com >",  # whitespace inside <>
        "sip:user@example.com?Route=%3Csip:x%3E",  # headers without <>
        "<sip:a@example.com>;;",  # empty parameter
        "<sip:a@example.com> junk",
        '"x" sip:a@example.com',
    ],
)
def test_malformed_name_addr(text: str) -> None:
    with pytest.raises(URIError):
        parse_name_addr(text)


def test_via() -> None:
    via = parse_via("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "192.0.2.2",
        None,
        "390skdjuw",
    )
    via = parse_via("SIP/2.0/TLS [2001:db8::9:1]:5061;received=[2001:db8::9:255];rport")
    assert via.port == 5061
    assert via.param("received") == "[2001:db8::9:255]"
    assert via.has_param("rport")
    updated = via.with_param("rport", "4000").with_param("received", "192.0.2.9")
    assert str(updated) == "SIP/2.0/TLS [2001:db8::9:1]:5061;rport=4000;received=192.0.2.9"
    for bad in ("SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP host;;", "SIP/2.0/UDP ho st"):
        with pytest.raises(FieldError):
            parse_via(bad)


def test_cseq_and_max_forwards() -> None:
    assert str(parse_cseq("0009\r\n INVITE".replace("\r\n", ""))) == "9 INVITE"
    assert parse_max_forwards(" 0068 ") == 68
    for bad in ("INVITE", "1", "-1 INVITE", "2147483648 INVITE", "1 INVITE x"):
        with pytest.raises(FieldError):
            parse_cseq(bad)
    for bad in ("256", "-1", "", "1e3"):
        with pytest.raises(FieldError):
            parse_max_forwards(bad)


@given(st.text(max_size=80))
def test_arbitrary_text_raises_only_uri_errors(text: str) -> None:
    for parse in (parse_uri, parse_name_addr, parse_via, parse_cseq):
        with contextlib.suppress(URIError):
            parse(text)


# The one-match name-addr parser must agree with the general one on every value it takes,
# and leave every other value (and every error) to it.
_PIECES = st.sampled_from(["a", "Z9", "-", ".", "%41", "%4", "!", "=", "+", "$", ",", "&", "é"])
_HOSTS = st.sampled_from(
    ["example.com", "h", "127.0.0.1", "999.1.1.1", "-bad", "a..b", "[::1]", "x_y", "1.2.3"]
)
_PORTS = st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":", ":5x"])
_PARAM_TEXT = st.text(alphabet=st.sampled_from(list('ab=;:/[]&+$%4"@ ?')), max_size=10)


@st.composite
def _name_addrs(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "SIP", "sips", "SiPs", "tel", "sipx"]))
    user = "".join(draw(st.lists(_PIECES, max_size=4)))
    userinfo = draw(st.sampled_from(["", f"{user}@", f"{user}:pw@", "@", f"{user};x@"]))
    uri = f"{scheme}:{userinfo}{draw(_HOSTS)}{draw(_PORTS)}"
    uri_params = draw(_PARAM_TEXT.map(lambda text: ";" + text if text else ""))
    header_params = draw(_PARAM_TEXT.map(lambda text: ";" + text if text else ""))
    front = draw(st.sampled_from(["", "", " ", '"A" ', "Bob "]))
    return f"{front}<{uri}{uri_params}>{header_params}"


@settings(max_examples=800)
@given(st.one_of(_name_addrs(), st.text(max_size=40)))
def test_plain_name_addr_parser_agrees_with_the_general_one(value: str) -> None:
    try:
        general: NameAddr | None = uri_module._parse_name_addr(value)
    except URIError:
        general = None
    match = uri_module._PLAIN_NAME_ADDR.fullmatch(value)
    plain = uri_module._parse_plain_name_addr(match) if match is not None else None
    if plain is not None:
        assert plain == general


def test_an_ordinary_contact_takes_the_one_match_parser() -> None:
    value = "<sip:alice@192.0.2.4:5062;transport=udp>;expires=60;+sip.instance=x"
    match = uri_module._PLAIN_NAME_ADDR.fullmatch(value)
    assert match is not None
    assert uri_module._parse_plain_name_addr(match) == uri_module._parse_name_addr(value)
