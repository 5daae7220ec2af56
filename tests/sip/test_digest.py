"""Digest authentication: RFC known answers, server/client round trips, parser robustness."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings, strategies as st

from ringfence.sip import digest as digest_module
from ringfence.sip.digest import (
    Challenge,
    Credentials,
    DigestAlgorithm,
    DigestError,
    DigestServer,
    DuplicateParameterError,
    MalformedHeaderError,
    MissingParameterError,
    UnsupportedAlgorithmError,
    UnsupportedQopError,
    UnsupportedSchemeError,
    VerifyStatus,
    answer,
    choose_challenge,
    ha1,
    new_cnonce,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "sip.example.net"
USER = "alice"
PASSWORD = "correct horse"
URI = "sip:sip.example.net"
NOW = 1_700_000_000.0
HA1S = {algorithm: ha1(algorithm, USER, REALM, PASSWORD) for algorithm in DigestAlgorithm}

# RFC 2617 §3.5 (checked against the RFC text): challenge, then the client's Authorization.
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int",'
    ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa",\r\n        realm="testrealm@host.com",\r\n'
    '        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n        uri="/dir/index.html",\r\n'
    '        qop=auth,\r\n        nc=00000001,\r\n        cnonce="0a4f113b",\r\n'
    '        response="6629fae49393a05397450978507c4ef1",\r\n'
    '        opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm},'
        f' nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def credentials_for(
    server: DigestServer,
    now: float,
    *,
    algorithm: DigestAlgorithm = DigestAlgorithm.SHA256,
    password: str = PASSWORD,
    nc: int = 1,
    method: str = "REGISTER",
) -> Credentials:
    """Challenge, send over the wire as text, answer, and parse back: what a registrar sees."""
    offered = [parse_challenge(c.render()) for c in server.challenge(now)]
    challenge = next(c for c in offered if c.digest_algorithm is algorithm)
    sent = answer(challenge, method, URI, USER, password, cnonce=new_cnonce(), nc=nc)
    return parse_credentials(sent.render())


def resend(credentials: Credentials, nc: int, method: str = "REGISTER") -> Credentials:
    """The client's next request on the same nonce."""
    challenge = Challenge(
        realm=credentials.realm,
        nonce=credentials.nonce,
        algorithm=credentials.algorithm,
        qop=("auth",),
        opaque=credentials.opaque,
    )
    return answer(challenge, method, URI, USER, PASSWORD, cnonce=new_cnonce(), nc=nc)


@pytest.fixture
def server() -> DigestServer:
    return DigestServer(SECRET, REALM)


# --- known answers --------------------------------------------------------------------------


def test_rfc2617_example() -> None:
    challenge = parse_challenge(RFC2617_CHALLENGE)
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.digest_algorithm is DigestAlgorithm.MD5  # absent means MD5
    sent = answer(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b", nc=1
    )
    assert sent.response == "6629fae49393a05397450978507c4ef1"
    assert sent.render() == (
        'Digest username="Mufasa", realm="testrealm@host.com",'
        ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html",'
        ' response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b",'
        ' opaque="5ccc069c403ebaf9f0171e9517f40e41", qop=auth, nc=00000001'
    )
    # The RFC's own header (folded over lines) parses to the same credentials.
    assert parse_credentials(RFC2617_AUTHORIZATION) == sent


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_example(algorithm: str, expected: str) -> None:
    challenge = parse_challenge(rfc7616_challenge(algorithm))
    sent = answer(
        challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    assert sent.response == expected
    assert (sent.qop, sent.nc, sent.algorithm, sent.opaque) == (
        "auth",
        "00000001",
        algorithm,
        RFC7616_OPAQUE,
    )


def test_answer_from_ha1_equals_answer_from_password() -> None:
    challenge = parse_challenge(rfc7616_challenge("SHA-256"))
    stored = ha1(DigestAlgorithm.SHA256, "Mufasa", "http-auth@example.org", "Circle of Life")
    sent = answer(
        challenge, "GET", "/dir/index.html", "Mufasa", ha1_hex=stored, cnonce=RFC7616_CNONCE
    )
    assert sent.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


# --- server ---------------------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5(server: DigestServer) -> None:
    first, second = server.challenge(NOW)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce
    assert first.opaque is not None
    assert first.opaque == second.opaque
    assert first.qop == second.qop == ("auth",)
    assert first.realm == REALM
    assert not first.stale
    assert all(c.stale for c in server.challenge(NOW, stale=True))
    assert server.challenge(NOW)[0].nonce != first.nonce  # fresh even at the same instant


@pytest.mark.parametrize("algorithm", list(DigestAlgorithm))
def test_round_trip_ok(server: DigestServer, algorithm: DigestAlgorithm) -> None:
    credentials = credentials_for(server, NOW, algorithm=algorithm)
    assert credentials.algorithm == algorithm.value
    result = server.verify(credentials, "REGISTER", HA1S, NOW + 1)
    assert result.ok
    assert result.status is VerifyStatus.OK


def test_another_node_with_the_same_secret_accepts_the_nonce(server: DigestServer) -> None:
    credentials = credentials_for(server, NOW)
    assert DigestServer(SECRET, REALM).verify(credentials, "REGISTER", HA1S, NOW).ok


def test_wrong_password_fails(server: DigestServer) -> None:
    credentials = credentials_for(server, NOW, password="wrong")
    result = server.verify(credentials, "REGISTER", HA1S, NOW)
    assert result.status is VerifyStatus.WRONG_RESPONSE
    assert not result.ok


def test_other_method_fails(server: DigestServer) -> None:
    credentials = credentials_for(server, NOW, method="INVITE")
    assert server.verify(credentials, "REGISTER", HA1S, NOW).status is VerifyStatus.WRONG_RESPONSE


def test_upper_case_response_is_accepted(server: DigestServer) -> None:
    credentials = credentials_for(server, NOW)
    shouted = dataclasses.replace(credentials, response=credentials.response.upper())
    assert server.verify(shouted, "REGISTER", HA1S, NOW).ok


def test_expired_nonce_is_stale(server: DigestServer) -> None:
    credentials = credentials_for(server, NOW)
    later = NOW + server.nonce_lifetime_s + 1
    assert server.verify(credentials, "REGISTER", HA1S, later).status is VerifyStatus.STALE
    # The client retries on the new nonce without asking its user again.
    assert "stale=true" in server.challenge(later, stale=True)[0].render()
    assert server.verify(credentials_for(server, later), "REGISTER", HA1S, later).ok


def test_expired_nonce_with_wrong_password_is_not_stale(server: DigestServer) -> None:
    credentials = credentials_for(server, NOW, password="wrong")
    later = NOW + server.nonce_lifetime_s + 1
    result = server.verify(credentials, "REGISTER", HA1S, later)
    assert result.status is VerifyStatus.WRONG_RESPONSE


def test_nonce_lifetime_is_configurable() -> None:
    server = DigestServer(SECRET, REALM, nonce_lifetime_s=10)
    credentials = credentials_for(server, NOW)
    assert server.verify(credentials, "REGISTER", HA1S, NOW + 9).ok
    assert server.verify(resend(credentials, 2), "REGISTER", HA1S, NOW + 11).status is (
        VerifyStatus.STALE
    )


def flip_hex(text: str, index: int) -> str:
    return text[:index] + ("1" if text[index] == "0" else "0") + text[index + 1 :]


@pytest.mark.parametrize("index", [0, 7, 16, 17, 20, 40, 65])
def test_forged_nonce_fails(server: DigestServer, index: int) -> None:
    genuine = credentials_for(server, NOW)
    challenge = Challenge(
        realm=REALM, nonce=flip_hex(genuine.nonce, index), algorithm="SHA-256", qop=("auth",)
    )
    # A correct response computed over the forged nonce: only the nonce's MAC can refuse it.
    forged = answer(challenge, "REGISTER", URI, USER, PASSWORD, cnonce="c")
    assert server.verify(forged, "REGISTER", HA1S, NOW).status is VerifyStatus.INVALID_NONCE


@pytest.mark.parametrize(
    "issuer",
    [
        DigestServer(b"another secret, sixteen bytes+", REALM),
        DigestServer(SECRET, "other.example.net"),
    ],
    ids=["other-secret", "other-realm"],
)
def test_nonce_from_elsewhere_fails(server: DigestServer, issuer: DigestServer) -> None:
    challenge = dataclasses.replace(issuer.challenge(NOW)[0], realm=REALM)
    foreign = answer(challenge, "REGISTER", URI, USER, PASSWORD, cnonce="c")
    assert server.verify(foreign, "REGISTER", HA1S, NOW).status is VerifyStatus.INVALID_NONCE


@pytest.mark.parametrize(
    "nonce", ["", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "é" * 66, "G" * 66, "0" * 64]
)
def test_unknown_nonce_fails(server: DigestServer, nonce: str) -> None:
    challenge = Challenge(realm=REALM, nonce=nonce, qop=("auth",))
    credentials = answer(challenge, "REGISTER", URI, USER, PASSWORD, cnonce="c")
    assert server.verify(credentials, "REGISTER", HA1S, NOW).status is VerifyStatus.INVALID_NONCE


def test_nonce_of_another_worker_is_stale_until_its_own() -> None:
    # Two worker processes of one node share the secret but not their nonce-count tables.
    first, second = (DigestServer(SECRET, REALM, scope=n) for n in (0, 1))
    credentials = credentials_for(first, NOW)
    result = second.verify(credentials, "REGISTER", HA1S, NOW)
    assert (result.status, result.detail) == (VerifyStatus.STALE, "nonce of another worker")
    # Still the issuer's: the count was not spent on the other worker.
    assert first.verify(credentials, "REGISTER", HA1S, NOW).ok
    # A wrong response is still a wrong response, whoever issued the nonce.
    wrong = credentials_for(first, NOW, password="wrong")
    assert second.verify(wrong, "REGISTER", HA1S, NOW).status is VerifyStatus.WRONG_RESPONSE
    assert second.verify(credentials_for(second, NOW), "REGISTER", HA1S, NOW).ok


@pytest.mark.parametrize("scope", [-1, 256])
def test_scope_is_one_byte(scope: int) -> None:
    with pytest.raises(ValueError, match="scope"):
        DigestServer(SECRET, REALM, scope=scope)


def test_replayed_nonce_count_fails_and_increasing_passes(server: DigestServer) -> None:
    first = credentials_for(server, NOW, nc=1)
    assert server.verify(first, "REGISTER", HA1S, NOW).ok
    assert server.verify(first, "REGISTER", HA1S, NOW + 1).status is (
        VerifyStatus.REPLAYED_NONCE_COUNT
    )
    assert server.verify(resend(first, 1), "REGISTER", HA1S, NOW + 1).status is (
        VerifyStatus.REPLAYED_NONCE_COUNT
    )
    assert server.verify(resend(first, 2), "REGISTER", HA1S, NOW + 2).ok
    assert server.verify(resend(first, 5), "REGISTER", HA1S, NOW + 3).ok
    assert server.verify(resend(first, 3), "REGISTER", HA1S, NOW + 4).status is (
        VerifyStatus.REPLAYED_NONCE_COUNT
    )
    # Another nonce keeps its own count.
    assert server.verify(credentials_for(server, NOW + 5, nc=1), "REGISTER", HA1S, NOW + 5).ok


def test_wrong_response_does_not_consume_the_nonce_count(server: DigestServer) -> None:
    genuine = credentials_for(server, NOW, nc=1)
    tampered = dataclasses.replace(genuine, response="0" * 64)
    assert server.verify(tampered, "REGISTER", HA1S, NOW).status is VerifyStatus.WRONG_RESPONSE
    assert server.verify(genuine, "REGISTER", HA1S, NOW).ok


def test_evicted_nonce_is_stale_not_replayable() -> None:
    server = DigestServer(SECRET, REALM, max_tracked_nonces=4)
    used = [credentials_for(server, NOW + i) for i in range(5)]
    for i, credentials in enumerate(used):
        assert server.verify(credentials, "REGISTER", HA1S, NOW + i).ok
    # Taking in the fifth nonce dropped the oldest one's nonce-counts; that nonce can no longer
    # be checked for replay, so it is refused as stale, and the client fetches a new one.
    assert server.verify(used[0], "REGISTER", HA1S, NOW + 10).status is VerifyStatus.STALE
    assert server.verify(resend(used[0], 2), "REGISTER", HA1S, NOW + 10).status is (
        VerifyStatus.STALE
    )
    assert server.verify(used[1], "REGISTER", HA1S, NOW + 10).status is (
        VerifyStatus.REPLAYED_NONCE_COUNT
    )
    assert server.verify(resend(used[1], 2), "REGISTER", HA1S, NOW + 10).ok
    assert server.verify(credentials_for(server, NOW + 11), "REGISTER", HA1S, NOW + 11).ok


def test_expired_entries_make_room_without_eviction() -> None:
    server = DigestServer(SECRET, REALM, nonce_lifetime_s=10, max_tracked_nonces=2)
    for i in range(2):
        assert server.verify(credentials_for(server, NOW + i), "REGISTER", HA1S, NOW + i).ok
    later = NOW + 100
    fresh = [credentials_for(server, later) for _ in range(2)]
    for credentials in fresh:
        assert server.verify(credentials, "REGISTER", HA1S, later).ok
    for credentials in fresh:
        assert server.verify(resend(credentials, 2), "REGISTER", HA1S, later).ok


def test_realm_mismatch_fails(server: DigestServer) -> None:
    challenge = dataclasses.replace(server.challenge(NOW)[0], realm="evil.example.net")
    credentials = answer(challenge, "REGISTER", URI, USER, PASSWORD, cnonce="c")
    assert server.verify(credentials, "REGISTER", HA1S, NOW).status is VerifyStatus.REALM_MISMATCH


@pytest.mark.parametrize(
    "change",
    [
        lambda c: dataclasses.replace(c, cnonce=None),
        lambda c: dataclasses.replace(c, nc=None),
        lambda c: dataclasses.replace(c, nc="1"),
        lambda c: dataclasses.replace(c, uri=""),
    ],
    ids=["no-cnonce", "no-nc", "short-nc", "empty-uri"],
)
def test_missing_parameter_fails(
    server: DigestServer, change: Callable[[Credentials], Credentials]
) -> None:
    credentials = change(credentials_for(server, NOW))
    result = server.verify(credentials, "REGISTER", HA1S, NOW)
    assert result.status is VerifyStatus.MISSING_PARAMETER
    assert result.detail


def test_missing_cnonce_in_the_header_fails(server: DigestServer) -> None:
    rendered = credentials_for(server, NOW).render()
    without = ", ".join(p for p in rendered.split(", ") if not p.startswith("cnonce="))
    credentials = parse_credentials(without)
    assert credentials.cnonce is None
    assert server.verify(credentials, "REGISTER", HA1S, NOW).status is (
        VerifyStatus.MISSING_PARAMETER
    )


@pytest.mark.parametrize("qop", ["auth-int", "bogus"])
def test_unsupported_qop_fails(server: DigestServer, qop: str) -> None:
    credentials = dataclasses.replace(credentials_for(server, NOW), qop=qop)
    assert server.verify(credentials, "REGISTER", HA1S, NOW).status is (
        VerifyStatus.UNSUPPORTED_QOP
    )


@pytest.mark.parametrize("algorithm", ["SHA-512-256", "MD5-sess", "SHA-256-sess", "rot13"])
def test_unsupported_algorithm_fails(server: DigestServer, algorithm: str) -> None:
    credentials = dataclasses.replace(credentials_for(server, NOW), algorithm=algorithm)
    assert server.verify(credentials, "REGISTER", HA1S, NOW).status is (
        VerifyStatus.UNSUPPORTED_ALGORITHM
    )


def test_account_without_ha1_for_the_algorithm_fails(server: DigestServer) -> None:
    credentials = credentials_for(server, NOW, algorithm=DigestAlgorithm.MD5)
    only_sha256 = {DigestAlgorithm.SHA256: HA1S[DigestAlgorithm.SHA256]}
    assert server.verify(credentials, "REGISTER", only_sha256, NOW).status is (
        VerifyStatus.UNSUPPORTED_ALGORITHM
    )


def test_no_qop_rfc2069_is_accepted_without_replay_protection(server: DigestServer) -> None:
    challenge = dataclasses.replace(server.challenge(NOW)[1], qop=())
    credentials = answer(challenge, "REGISTER", URI, USER, PASSWORD, cnonce="unused", nc=7)
    assert (credentials.qop, credentials.cnonce, credentials.nc) == (None, None, None)
    assert server.verify(credentials, "REGISTER", HA1S, NOW).ok
    # The documented trade-off: without a nonce-count a replay is indistinguishable.
    assert server.verify(credentials, "REGISTER", HA1S, NOW + 1).ok
    strict = DigestServer(SECRET, REALM, accept_without_qop=False)
    assert strict.verify(credentials, "REGISTER", HA1S, NOW).status is (
        VerifyStatus.UNSUPPORTED_QOP
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: DigestServer(b"short", REALM),
        lambda: DigestServer(SECRET, REALM, nonce_lifetime_s=0),
        lambda: DigestServer(SECRET, REALM, max_tracked_nonces=0),
    ],
    ids=["short-secret", "no-lifetime", "no-table"],
)
def test_server_rejects_bad_configuration(build: Callable[[], DigestServer]) -> None:
    with pytest.raises(ValueError, match="must"):
        build()


# --- client ---------------------------------------------------------------------------------


def test_choose_challenge_prefers_sha256(server: DigestServer) -> None:
    sha256, md5 = server.challenge(NOW)
    assert choose_challenge([md5, sha256]) is sha256
    assert choose_challenge([md5]) is md5


def test_choose_challenge_skips_what_it_cannot_answer() -> None:
    sess = Challenge(realm="r", nonce="n", algorithm="SHA-256-sess", qop=("auth",))
    auth_int = Challenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth-int",))
    md5 = Challenge(realm="r", nonce="n", algorithm="md5")
    assert choose_challenge([sess, auth_int, md5]) is md5
    with pytest.raises(UnsupportedAlgorithmError, match="MD5 or SHA-256"):
        choose_challenge([sess, auth_int])


def test_answer_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        answer(
            Challenge(realm="r", nonce="n", algorithm="SHA-512-256"),
            "GET",
            "/",
            "u",
            "p",
            cnonce="c",
        )
    with pytest.raises(UnsupportedQopError):
        answer(Challenge(realm="r", nonce="n", qop=("auth-int",)), "GET", "/", "u", "p", cnonce="c")


@pytest.mark.parametrize(
    ("password", "ha1_hex", "nc"),
    [(None, None, 1), ("p", "00", 1), ("p", None, 0), ("p", None, 2**32)],
)
def test_answer_rejects_bad_arguments(password: str | None, ha1_hex: str | None, nc: int) -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth",))
    with pytest.raises(ValueError, match=r"exactly one|nc must"):
        answer(challenge, "GET", "/", "u", password, ha1_hex=ha1_hex, cnonce="c", nc=nc)


# --- header grammar -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ['Basic realm="x"', "Bearer abc.def", "NTLM", "Basic"])
def test_other_schemes_are_reported_distinctly(value: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        with pytest.raises(UnsupportedSchemeError) as info:
            parse(value)
        assert info.value.scheme == value.split()[0]


def test_names_and_scheme_are_case_insensitive() -> None:
    challenge = parse_challenge('dIgEsT REALM="a", Nonce="b", QOP="auth", StAlE=TRUE')
    assert challenge == Challenge(realm="a", nonce="b", qop=("auth",), stale=True)


def test_unknown_parameters_are_kept_in_order() -> None:
    challenge = parse_challenge(
        'Digest realm="a", domain="sip:a sip:b", nonce="b", charset=UTF-8, userhash=true'
    )
    assert challenge.extra == (
        ("domain", "sip:a sip:b"),
        ("charset", "UTF-8"),
        ("userhash", "true"),
    )
    assert parse_challenge(challenge.render()) == challenge


def test_quoted_string_escapes_and_lws() -> None:
    value = (
        'Digest username = "a\\"b\\\\c" ,\tRealm="x y",\r\n nonce="n", uri="sip:u",'
        ' response="r", qop="auth", nc="0000000A", cnonce="\\c"'
    )
    credentials = parse_credentials(value)
    assert credentials.username == 'a"b\\c'
    assert credentials.realm == "x y"
    assert (credentials.qop, credentials.nc, credentials.cnonce) == ("auth", "0000000A", "c")
    assert credentials.nonce_count == 10
    assert parse_credentials(credentials.render()) == credentials


@pytest.mark.parametrize(
    ("value", "stale"),
    [("true", True), ('"TRUE"', True), ("false", False), ("maybe", False)],
)
def test_stale_flag(value: str, stale: bool) -> None:
    assert parse_challenge(f'Digest realm="a", nonce="b", stale={value}').stale is stale


def test_duplicate_parameter_is_an_error() -> None:
    with pytest.raises(DuplicateParameterError, match="realm") as info:
        parse_challenge('Digest realm="a", nonce="b", Realm="c"')
    assert info.value.name == "realm"


@pytest.mark.parametrize(
    ("parse", "value", "missing"),
    [
        (parse_challenge, 'Digest realm="a"', "nonce"),
        (parse_challenge, 'Digest nonce="a"', "realm"),
        (parse_credentials, 'Digest username="u", realm="r", nonce="n", uri="/"', "response"),
        (parse_credentials, 'Digest realm="r", nonce="n", uri="/", response="x"', "username"),
    ],
)
def test_missing_required_parameter_is_an_error(
    parse: Callable[[str], object], value: str, missing: str
) -> None:
    with pytest.raises(MissingParameterError, match=missing) as info:
        parse(value)
    assert info.value.name == missing


MALFORMED = [
    ("", "authentication scheme"),
    ('"Digest" realm="a"', "authentication scheme"),
    ("Digest", "no parameters"),
    ("Digest   ", "no parameters"),
    ('Digest,realm="a"', "whitespace"),
    ("Digest realm", "'='"),
    ('Digest realm="a" nonce="b"', "','"),
    ("Digest realm=", "token or quoted-string"),
    ('Digest realm=<a>, nonce="b"', "token or quoted-string"),
    ('Digest realm="a, nonce=b', "quoted-string"),
    ('Digest realm="a\x01", nonce="b"', "quoted-string"),
    ('Digest realm="\\é", nonce="b"', "quoted-string"),
    ('Digest realm="a",, nonce="b"', "parameter name"),
    ('Digest realm="a", nonce="b",', "parameter name"),
    ('Digest realm="a",\nnonce="b"', "CR or LF"),
    ('Digest realm="a",\r\nnonce="b"', "CR or LF"),
    ('Digest realm="a", nonce="b", qop="auth, a/b"', "qop option"),
]


@pytest.mark.parametrize(("value", "message"), MALFORMED)
def test_malformed_challenge_says_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(MalformedHeaderError, match=message):
        parse_challenge(value)


@pytest.mark.parametrize("nc", ["1", "000000001", "0000000g", '"0000 001"'])
def test_malformed_nonce_count(nc: str) -> None:
    with pytest.raises(MalformedHeaderError, match="8 hex digits"):
        parse_credentials(
            f'Digest username="u", realm="r", nonce="n", uri="/", response="x", nc={nc}'
        )


def test_render_refuses_line_breaks() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        Challenge(realm="a\r\nVia: injected", nonce="n").render()


# --- properties -----------------------------------------------------------------------------

# Any text but CR and LF, which no quoted-string can carry.
values = st.text(st.characters(exclude_characters="\r\n"), max_size=30)
tokens = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True)
extra_names = st.from_regex(r"[a-z][a-z0-9\-]{0,10}", fullmatch=True).filter(
    lambda name: (
        name
        not in {"realm", "nonce", "algorithm", "qop", "opaque", "stale", "username", "uri"}
        | {"response", "cnonce", "nc"}
    )
)
extras = st.lists(st.tuples(extra_names, values), max_size=3, unique_by=lambda item: item[0]).map(
    tuple
)
optional = st.none() | values


@given(
    st.builds(
        Challenge,
        realm=values,
        nonce=values,
        algorithm=optional,
        qop=st.lists(tokens, max_size=3).map(tuple),
        opaque=optional,
        stale=st.booleans(),
        extra=extras,
    )
)
def test_challenge_render_parse_round_trip(challenge: Challenge) -> None:
    assert parse_challenge(challenge.render()) == challenge


@given(
    st.builds(
        Credentials,
        username=values,
        realm=values,
        nonce=values,
        uri=values,
        response=values,
        algorithm=optional,
        cnonce=optional,
        opaque=optional,
        qop=optional,
        nc=st.none() | st.from_regex(r"[0-9a-fA-F]{8}", fullmatch=True),
        extra=extras,
    )
)
def test_credentials_render_parse_round_trip(credentials: Credentials) -> None:
    assert parse_credentials(credentials.render()) == credentials


def assert_only_digest_errors(value: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        error: DigestError | None = None
        try:
            parse(value)
        except DigestError as exc:
            error = exc
        assert error is None or str(error)  # and it says what is wrong


@settings(max_examples=500)
@given(st.text())
def test_parsers_raise_only_digest_errors_on_any_text(value: str) -> None:
    assert_only_digest_errors(value)


# Near-misses of the grammar reach much deeper than random text does.
fragments = st.sampled_from(
    [
        "Digest",
        " ",
        "\t",
        "\r\n",
        "\r\n ",
        ",",
        "=",
        '"',
        "\\",
        "realm",
        "nonce",
        "nc",
        "qop",
        "stale",
        "username",
        "uri",
        "response",
        "00000001",
        "auth",
        "a",
        "é",
        "\x00",
        "\x7f",
    ]
)


@settings(max_examples=1000)
@given(st.lists(fragments, max_size=30).map("".join))
def test_parsers_raise_only_digest_errors_on_near_misses(value: str) -> None:
    assert_only_digest_errors("Digest " + value)


@given(
    st.builds(
        Credentials,
        username=st.text(),
        realm=st.just(REALM) | st.text(),
        nonce=st.text(),
        uri=st.text(),
        response=st.text(),
        algorithm=st.none() | st.text() | st.sampled_from(["MD5", "sha-256"]),
        cnonce=st.none() | st.text(),
        opaque=st.none() | st.text(),
        qop=st.none() | st.text() | st.just("auth"),
        nc=st.none() | st.text() | st.just("00000001"),
    ),
    st.text(),
)
def test_verify_never_raises(credentials: Credentials, method: str) -> None:
    result = DigestServer(SECRET, REALM).verify(credentials, method, HA1S, NOW)
    assert not result.ok


# The fast path of the parameter parser must agree with the checked parser on every input it
# accepts, and leave every error to it.
_TOKENS = st.text(alphabet="abcXYZ019-.!%*_+`'~", min_size=1, max_size=8)
_QUOTED = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12).map(
    lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
_SPACES = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def _auth_values(draw: st.DrawFn) -> str:
    params = draw(st.lists(st.tuples(_TOKENS, st.one_of(_TOKENS, _QUOTED)), max_size=6))
    parts = [
        f"{name}{draw(_SPACES)}={draw(_SPACES)}{value}{draw(_SPACES)}" for name, value in params
    ]
    joiner = draw(st.sampled_from([",", ", ", " ,", ",,", " "]))
    return draw(st.sampled_from(["Digest ", "digest\t", "Digest", "Basic "])) + joiner.join(parts)


@settings(max_examples=400)
@given(st.one_of(_auth_values(), st.text(max_size=60)))
def test_fast_parameter_parser_agrees_with_the_checked_one(value: str) -> None:
    fast = digest_module._parse_params_fast(value)
    try:
        checked: dict[str, str] | None = digest_module._parse_params_checked(value, "credentials")
    except DigestError:
        checked = None
    if fast is not None:
        assert fast == checked
    if checked is not None:
        assert digest_module._parse_params(value, "credentials") == checked


def test_a_proxy_forwards_only_credentials_it_did_not_consume() -> None:
    ours = 'Digest username="alice", realm="SIP.acme.example", nonce="n", uri="sip:b", response="r"'
    theirs = 'Digest username="alice", realm="pbx.example", nonce="m", uri="sip:b", response="s"'
    other_scheme = "Bearer abc"
    broken = 'Digest realm="sip.acme.example"'  # not credentials we could have verified
    kept = digest_module.without_credentials_for(
        [ours, theirs, other_scheme, broken], "sip.acme.example"
    )
    assert kept == [theirs, other_scheme, broken]
