"""The Contact user parts ringfence registers upstream, and how it recognises them."""

from __future__ import annotations

import string
import uuid

import pytest

from ringfence.overlay.contact import PREFIX, ContactTokens

SECRET = b"s" * 32
INSTANCE = "6f1c2a4e-8b0d-4c3e-9a7f-0d1e2f3a4b5c"
# RFC 3261 §25.1: unreserved = alphanum / mark; a user part may carry them unescaped.
UNRESERVED = set(string.ascii_letters + string.digits + "-_.!~*'()")


def flip(hex_digit: str) -> str:
    return "0" if hex_digit != "0" else "1"


def test_an_instance_round_trips() -> None:
    tokens = ContactTokens(SECRET)
    user = tokens.user_of(INSTANCE)
    assert user.startswith(PREFIX)
    assert user == f"rfo-{uuid.UUID(INSTANCE).hex}-{user[-20:]}"
    assert len(user) == len("rfo-") + 32 + 1 + 20
    assert tokens.instance_of(user) == INSTANCE
    # The same secret (a restart) makes the same Contact; other instances other ones.
    assert ContactTokens(SECRET).user_of(INSTANCE) == user
    others = {tokens.user_of(str(uuid.UUID(int=n))) for n in range(50)}
    assert len(others) == 50
    assert all(tokens.instance_of(other) is not None for other in others)


def test_an_upper_case_id_gives_the_canonical_instance_back() -> None:
    tokens = ContactTokens(SECRET)
    assert tokens.instance_of(tokens.user_of(INSTANCE.upper())) == INSTANCE


def test_a_flipped_digit_anywhere_is_refused() -> None:
    tokens = ContactTokens(SECRET)
    user = tokens.user_of(INSTANCE)
    hex_positions = [i for i in range(len(PREFIX), len(user)) if user[i] != "-"]
    assert len(hex_positions) == 52  # the id's 32 digits and the MAC's 20
    for i in hex_positions:
        forged = user[:i] + flip(user[i]) + user[i + 1 :]
        assert tokens.instance_of(forged) is None, forged


def test_another_secret_recognises_nothing() -> None:
    user = ContactTokens(SECRET).user_of(INSTANCE)
    other = ContactTokens(b"t" * 32)
    assert other.instance_of(user) is None
    assert other.user_of(INSTANCE) != user


@pytest.mark.parametrize(
    "user",
    [
        "",
        "201",
        "alice",
        "rfo-",
        "rfo",
        "rf-" + "0" * 32 + "-" + "0" * 20,
        "RFO-{hex}-{mac}",
        "rfo-{HEX}-{mac}",
        "rfo-{hex}-{MAC}",
        "rfo-{hex}{mac}",
        "rfo-{hex}-{mac}0",
        "rfo-{hex}-{mac}\n",
        "rfo-{hex}-{mac};x=1",
        " rfo-{hex}-{mac}",
        "rfo-{hex}-{mac_short}",
        "rfo-{hex_short}-{mac}",
        "rfo-{dashed}-{mac}",
        "rfo-{hex}-",
        "x-rfo-{hex}-{mac}",
    ],
)
def test_malformed_and_foreign_users_are_refused(user: str) -> None:
    tokens = ContactTokens(SECRET)
    good = tokens.user_of(INSTANCE)
    hex_id, mac = good[len(PREFIX) : len(PREFIX) + 32], good[-20:]
    candidate = user.format(
        hex=hex_id,
        HEX=hex_id.upper(),
        mac=mac,
        MAC=mac.upper(),
        mac_short=mac[:-1],
        hex_short=hex_id[:-1],
        dashed=INSTANCE,
    )
    assert candidate != good
    assert tokens.instance_of(candidate) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        ContactTokens(b"x" * 15)
    with pytest.raises(ValueError, match="16 bytes"):
        ContactTokens(b"")
    ContactTokens(b"x" * 16)  # just enough


def test_the_user_part_needs_no_escaping_in_a_sip_uri() -> None:
    tokens = ContactTokens(SECRET)
    for n in range(100):
        user = tokens.user_of(str(uuid.UUID(int=n * 0x0123456789ABCDEF0123456789ABCDEF % 2**128)))
        assert set(user) <= UNRESERVED, user
