"""REGISTER rules (RFC 3261 §10.3, RFC 3327, RFC 5626 §6) with explicit `now` values."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from ringfence.registrar.rules import (
    DEFAULT_POLICY,
    RegisterOutcome,
    RegistrarError,
    RegistrarPolicy,
    address_of_record,
    contact_value,
    process_register,
    sip_uri_equal,
)
from ringfence.sip.message import Request
from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, parse_uri
from ringfence.state.location import Binding
from tests.registrar.helpers import register, torture

NOW = 10_000.0
AOR = "sip:alice@sip.acme.example"
UDP = Address("UDP", "192.0.2.1", 5060)
TCP = Address("TCP", "192.0.2.1", 40000, "tcp-1")
PHONE = "<sip:alice@192.0.2.1:5060>"
INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-aabbccddeeff>"'


def run(
    request: Request,
    existing: Sequence[Binding] = (),
    *,
    now: float = NOW,
    source: Address = UDP,
    policy: RegistrarPolicy = DEFAULT_POLICY,
    aor: str = AOR,
) -> RegisterOutcome:
    return process_register(
        request, aor=aor, existing=existing, source=source, now=now, policy=policy
    )


def values(outcome: RegisterOutcome, name: str) -> list[str]:
    return [value for key, value in outcome.headers if key == name]


def stored(
    contact: str = "sip:alice@192.0.2.1:5060",
    *,
    call_id: str = "call-1@phone",
    cseq: int = 1,
    expires_at: float = NOW + 1000,
    instance: str | None = None,
    reg_id: int | None = None,
    source: Address = UDP,
) -> Binding:
    return Binding(
        aor=AOR,
        contact=contact,
        instance=instance,
        reg_id=reg_id,
        expires_at=expires_at,
        call_id=call_id,
        cseq=cseq,
        source=source,
    )


def only(outcome: RegisterOutcome) -> Binding:
    assert outcome.bindings is not None
    assert len(outcome.bindings) == 1
    return outcome.bindings[0]


# -- the address-of-record (§10.3 step 5) ---------------------------------------------------


def test_aor_is_canonical() -> None:
    request = register(
        PHONE, to='"Alice" <sips:Al%69ce@SIP.Acme.Example:5061;user=phone;transport=tls>'
    )
    aor = address_of_record(request)
    assert str(aor) == "sip:Alice@sip.acme.example"
    assert (aor.user, aor.domain) == ("Alice", "sip.acme.example")
    assert "Alice" not in repr(aor)


def test_rfc4475_unksm2_to_is_not_sip_400() -> None:
    # RFC 4475 §3.3.4: "the To: header field is required to contain a SIP or SIPS URI as an
    # AOR", so a registrar rejects this request with 400.
    with pytest.raises(RegistrarError) as refused:
        address_of_record(torture("unksm2.dat"))
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("to", "status"),
    [
        ("<tel:+41445551234>", 400),
        ("<sip:alice@sip.acme.example", 400),  # unterminated <
        ("<sip:sip.acme.example>", 404),  # no user: no account can match
    ],
)
def test_aor_refusals(to: str, status: int) -> None:
    with pytest.raises(RegistrarError) as refused:
        address_of_record(register(PHONE, to=to))
    assert refused.value.status == status


def test_aor_needs_a_to() -> None:
    request = register(PHONE)
    request = Request(request.method, request.uri, request.headers.remove("To"))
    with pytest.raises(RegistrarError) as refused:
        address_of_record(request)
    assert refused.value.status == 400


# -- adding, refreshing, removing (§10.3 steps 7 and 8) -------------------------------------


def test_new_binding_is_listed_with_its_expiry() -> None:
    outcome = run(register(PHONE), source=TCP)
    assert (outcome.status, outcome.reason, outcome.ok) == (200, "OK", True)
    assert values(outcome, "Contact") == ["<sip:alice@192.0.2.1:5060>;expires=3600"]
    binding = only(outcome)
    assert binding.aor == AOR
    assert binding.contact == "sip:alice@192.0.2.1:5060"
    assert binding.expires_at == NOW + 3600
    assert (binding.call_id, binding.cseq) == ("call-1@phone", 1)
    assert binding.source == TCP
    assert binding.flow == "tcp-1"  # first hop: the flow ends here (RFC 5626 §6)
    assert binding.user_agent == "TestPhone/1.0"
    assert (binding.instance, binding.reg_id, binding.q, binding.path) == (None, None, None, ())


@pytest.mark.parametrize(
    ("contact", "expires", "granted"),
    [
        (PHONE + ";expires=120", "600", 120),  # the Contact parameter wins
        (PHONE, "600", 600),  # then the Expires header
        (PHONE, None, 3600),  # then the default
        (PHONE + ";expires=7200", None, 3600),  # shortened to max_expires
        (PHONE + ";expires=99999999999", None, 3600),  # beyond 2**32-1: shortened too
        (PHONE + ";expires=soon", None, 3600),  # malformed: 3600 (§10.2)
        (PHONE + ";expires", "600", 3600),  # a parameter without value is malformed
        (PHONE, "Thu, 01 Dec 1994 16:00:00 GMT", 3600),  # RFC 2543 date: malformed (§20.19)
    ],
)
def test_expiry_choice(contact: str, expires: str | None, granted: int) -> None:
    outcome = run(register(contact, expires=expires))
    assert only(outcome).expires_at == NOW + granted
    assert values(outcome, "Contact")[0].endswith(f";expires={granted}")


def test_malformed_expiry_is_3600_even_below_a_larger_maximum() -> None:
    policy = RegistrarPolicy(max_expires=86400)
    assert only(run(register(PHONE + ";expires=x"), policy=policy)).expires_at == NOW + 3600


def test_brief_interval_gets_423_with_min_expires() -> None:
    outcome = run(register(PHONE, expires="30"))
    assert (outcome.status, outcome.reason) == (423, "Interval Too Brief")
    assert values(outcome, "Min-Expires") == ["60"]
    assert outcome.bindings is None


def test_one_brief_contact_refuses_the_whole_request() -> None:
    outcome = run(register(PHONE, "<sip:alice@192.0.2.2>;expires=59"))
    assert outcome.status == 423


def test_423_only_below_one_hour() -> None:
    # §10.3 step 7: "greater than zero AND smaller than one hour AND less than a
    # registrar-configured minimum".
    policy = RegistrarPolicy(min_expires=7200, default_expires=7200, max_expires=7200)
    assert only(run(register(PHONE, expires="3600"), policy=policy)).expires_at == NOW + 3600
    refused = run(register(PHONE, expires="3599"), policy=policy)
    assert refused.status == 423
    assert values(refused, "Min-Expires") == ["7200"]


def test_expires_zero_removes_the_binding() -> None:
    existing = [stored(), stored("sip:alice@192.0.2.2")]
    outcome = run(register(PHONE, expires="0", cseq=2), existing)
    assert outcome.status == 200
    assert outcome.bindings == (existing[1],)
    assert values(outcome, "Contact") == ["<sip:alice@192.0.2.2>;expires=1000"]


def test_removing_an_unknown_contact_changes_nothing() -> None:
    existing = [stored()]
    outcome = run(register("<sip:alice@192.0.2.9>;expires=0", call_id="other"), existing)
    assert outcome.status == 200
    assert outcome.bindings == tuple(existing)


def test_refresh_replaces_in_place() -> None:
    first, second = stored(), stored("sip:alice@192.0.2.2", call_id="call-2")
    outcome = run(register(PHONE, cseq=2, expires="600"), [first, second])
    assert outcome.bindings is not None
    assert [b.contact for b in outcome.bindings] == [first.contact, second.contact]
    assert outcome.bindings[0].expires_at == NOW + 600
    assert outcome.bindings[0].cseq == 2


def test_query_lists_live_bindings_and_changes_nothing() -> None:
    live, expired = stored(), stored("sip:alice@192.0.2.2", expires_at=NOW)
    outcome = run(register(), [live, expired])
    assert outcome.status == 200
    assert outcome.bindings is None
    assert values(outcome, "Contact") == ["<sip:alice@192.0.2.1:5060>;expires=1000"]


def test_expired_bindings_are_dropped_on_update() -> None:
    expired = stored("sip:alice@192.0.2.2", expires_at=NOW - 1)
    outcome = run(register(PHONE), [expired])
    assert only(outcome).contact == "sip:alice@192.0.2.1:5060"


def test_two_contacts_in_one_request() -> None:
    outcome = run(register(PHONE, "<sip:alice@198.51.100.7:5070;transport=tcp>;expires=300"))
    assert outcome.bindings is not None
    assert [(b.contact, b.expires_at) for b in outcome.bindings] == [
        ("sip:alice@192.0.2.1:5060", NOW + 3600),
        ("sip:alice@198.51.100.7:5070;transport=tcp", NOW + 300),
    ]
    assert values(outcome, "Contact") == [
        "<sip:alice@192.0.2.1:5060>;expires=3600",
        "<sip:alice@198.51.100.7:5070;transport=tcp>;expires=300",
    ]


def test_a_contact_listed_twice_is_one_binding() -> None:
    outcome = run(register(PHONE, PHONE + ";expires=600"))
    assert only(outcome).expires_at == NOW + 600


# -- ordering (§10.3 steps 6 and 7) -----------------------------------------------------------


@pytest.mark.parametrize("cseq", [4, 5])
def test_same_call_id_with_a_cseq_not_above_is_refused_500(cseq: int) -> None:
    outcome = run(register(PHONE, cseq=cseq), [stored(cseq=5)])
    assert outcome.status == 500
    assert outcome.bindings is None


def test_same_call_id_with_a_higher_cseq_updates() -> None:
    assert only(run(register(PHONE, cseq=6), [stored(cseq=5)])).cseq == 6


def test_another_call_id_updates_whatever_its_cseq() -> None:
    binding = only(run(register(PHONE, call_id="new", cseq=1), [stored(cseq=500)]))
    assert (binding.call_id, binding.cseq) == ("new", 1)


def test_removal_out_of_order_is_refused_too() -> None:
    assert run(register(PHONE, expires="0", cseq=5), [stored(cseq=5)]).status == 500


# -- Contact: * (§10.3 step 6) ------------------------------------------------------------------


def test_star_removes_every_binding() -> None:
    existing = [stored(cseq=3), stored("sip:alice@192.0.2.2", call_id="other", cseq=90)]
    outcome = run(register("*", expires="0", cseq=4), existing)
    assert outcome.status == 200
    assert outcome.bindings == ()
    assert values(outcome, "Contact") == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        (("*",), None),
        (("*",), "3600"),
        (("*", PHONE), "0"),
    ],
)
def test_star_needs_expires_zero_and_no_other_contact(
    contacts: tuple[str, ...], expires: str | None
) -> None:
    outcome = run(register(*contacts, expires=expires), [stored()])
    assert outcome.status == 400
    assert outcome.bindings is None


def test_star_out_of_order_is_refused_500() -> None:
    existing = [stored(cseq=4), stored("sip:alice@192.0.2.2", call_id="other")]
    assert run(register("*", expires="0", cseq=4), existing).status == 500


# -- which binding a Contact names (§19.1.4) ---------------------------------------------------


def test_an_equal_uri_updates_the_binding() -> None:
    existing = [stored("sip:alice@192.0.2.1:5060;transport=udp", call_id="old")]
    outcome = run(register("<sip:alice@192.0.2.1:5060;Transport=UDP;x=1>"), existing)
    assert only(outcome).contact == "sip:alice@192.0.2.1:5060;Transport=UDP;x=1"


def test_a_different_uri_is_another_binding() -> None:
    existing = [stored("sip:alice@192.0.2.1", call_id="old")]  # no port: not :5060
    outcome = run(register(PHONE), existing)
    assert outcome.bindings is not None
    assert len(outcome.bindings) == 2


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        # RFC 3261 §19.1.4's own examples of equal URIs.
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp", True),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", True),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5", True),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            True,
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            True,
        ),
        # ... and of unequal ones.
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP", False),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", False),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp", True),  # only in one
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp", False),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting", False),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4", False),
        # parameters that must be in both or neither
        ("sip:bob@biloxi.com;maddr=239.255.255.1", "sip:bob@biloxi.com", False),
        ("sip:+4144@biloxi.com;user=phone", "sip:+4144@biloxi.com", False),
        ("sips:bob@biloxi.com", "sip:bob@biloxi.com", False),
        ("sip:bob:secret@biloxi.com", "sip:bob@biloxi.com", False),
        ("sip:bob@[2001:db8::1]", "sip:bob@[2001:DB8:0::1]", True),
    ],
)
def test_sip_uri_equal(a: str, b: str, equal: bool) -> None:
    assert sip_uri_equal(sip(a), sip(b)) is equal
    assert sip_uri_equal(sip(b), sip(a)) is equal


# -- the per-AOR limit -------------------------------------------------------------------------


def test_too_many_registrations_is_403() -> None:
    policy = RegistrarPolicy(max_contacts_per_aor=2)
    existing = [stored("sip:a@192.0.2.1", call_id="a"), stored("sip:b@192.0.2.2", call_id="b")]
    outcome = run(register(PHONE), existing, policy=policy)
    assert (outcome.status, outcome.reason) == (403, "Too many registrations")
    assert outcome.bindings is None
    refresh = run(register("<sip:a@192.0.2.1>", call_id="a", cseq=2), existing, policy=policy)
    assert refresh.status == 200


def test_an_aor_over_a_lowered_limit_may_still_refresh() -> None:
    policy = RegistrarPolicy(max_contacts_per_aor=1)
    existing = [stored("sip:a@192.0.2.1", call_id="a"), stored("sip:b@192.0.2.2", call_id="b")]
    assert run(register("<sip:a@192.0.2.1>", call_id="a", cseq=2), existing, policy=policy).ok


# -- Contact parameters ----------------------------------------------------------------------


def test_contact_parameters_are_kept_and_echoed() -> None:
    contact = (
        "<sip:alice@192.0.2.1:5060;transport=tcp>;q=0.5;+sip.instance="
        + INSTANCE
        + ";pn-provider=apns"
        ";pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.voip;expires=600"
    )
    outcome = run(register(contact))
    binding = only(outcome)
    assert binding.q == 0.5
    assert binding.instance == "urn:uuid:00000000-0000-1000-8000-aabbccddeeff"
    assert dict(binding.params) == {
        "q": "0.5",
        "+sip.instance": INSTANCE,
        "pn-provider": "apns",
        "pn-prid": "00fc13adff78512",
        "pn-param": "ABCD1234.com.example.voip",
        "expires": "600",
    }
    assert values(outcome, "Contact") == [
        "<sip:alice@192.0.2.1:5060;transport=tcp>;q=0.5;+sip.instance="
        + INSTANCE
        + ";pn-provider=apns"
        ";pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.voip;expires=600"
    ]


def test_contact_value_counts_the_seconds_left() -> None:
    assert contact_value(stored(expires_at=NOW + 0.2), NOW).endswith(";expires=1")
    assert contact_value(stored(expires_at=NOW + 59.6), NOW).endswith(";expires=60")


@pytest.mark.parametrize(
    "contact",
    [
        PHONE + ";q=2",
        PHONE + ";q",
        PHONE + ";+sip.instance",
        PHONE + ';+sip.instance="<>"',
        PHONE + ";+sip.instance=" + INSTANCE + ";reg-id=0",
        PHONE + ";+sip.instance=" + INSTANCE + ";reg-id=x",
        PHONE + ";+sip.instance=" + INSTANCE + ";reg-id=2147483648",
        "<sip:alice@192.0.2.1",
        "<tel:+41445551234>",
        "<mailto:alice@example.com>",
    ],
)
def test_malformed_contacts_are_400(contact: str) -> None:
    outcome = run(register(contact))
    assert outcome.status == 400
    assert outcome.bindings is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("Call-ID", ""), ("CSeq", "one REGISTER")],
)
def test_malformed_request_fields_are_400(name: str, value: str) -> None:
    request = register(PHONE)
    request = Request(request.method, request.uri, request.headers.replace(name, value))
    assert run(request).status == 400


# -- RFC 5626 outbound -------------------------------------------------------------------------


def outbound(reg_id: int = 1, host: str = "192.0.2.1", instance: str = INSTANCE) -> str:
    return f"<sip:alice@{host};transport=tcp;ob>;+sip.instance={instance};reg-id={reg_id}"


def test_instance_and_reg_id_name_the_binding_across_flows() -> None:
    old = stored(
        "sip:alice@192.0.2.1;transport=tcp;ob",
        call_id="before-reconnect",
        cseq=9,
        instance="urn:uuid:00000000-0000-1000-8000-aabbccddeeff",
        reg_id=1,
        source=TCP,
    )
    new_flow = Address("TCP", "198.51.100.20", 41000, "tcp-2")
    request = register(outbound(host="198.51.100.20"), call_id="after", supported=["outbound"])
    outcome = run(request, [old], source=new_flow)
    binding = only(outcome)
    assert binding.contact == "sip:alice@198.51.100.20;transport=tcp;ob"
    assert (binding.reg_id, binding.flow, binding.call_id) == (1, "tcp-2", "after")
    assert values(outcome, "Require") == ["outbound"]


def test_another_reg_id_is_another_flow_of_the_same_instance() -> None:
    first = only(run(register(outbound(1), supported=["outbound"]), source=TCP))
    second = run(register(outbound(2), call_id="flow-2", supported=["outbound"]), [first])
    assert second.bindings is not None
    assert [b.reg_id for b in second.bindings] == [1, 2]


def test_instance_matching_is_urn_equivalence() -> None:
    upper = '"<URN:UUID:00000000-0000-1000-8000-AABBCCDDEEFF>"'
    first = only(run(register(outbound(instance=upper))))
    assert first.instance == "urn:uuid:00000000-0000-1000-8000-aabbccddeeff"
    again = run(register(outbound(host="192.0.2.99"), call_id="new"), [first])
    assert only(again).contact == "sip:alice@192.0.2.99;transport=tcp;ob"


def test_an_outbound_binding_can_be_removed_by_instance_and_reg_id() -> None:
    first = only(run(register(outbound(1))))
    removal = register(outbound(1, host="10.0.0.1") + ";expires=0", cseq=2)
    assert run(removal, [first]).bindings == ()


def test_require_outbound_only_when_the_ua_supports_it() -> None:
    outcome = run(register(outbound()))
    assert only(outcome).reg_id == 1
    assert values(outcome, "Require") == []


def test_reg_id_without_instance_is_ignored() -> None:
    outcome = run(register(PHONE + ";reg-id=1", supported=["outbound"]))
    assert only(outcome).reg_id is None
    assert values(outcome, "Require") == []


def test_not_first_hop_and_no_ob_in_path_is_439_when_the_ua_supports_outbound() -> None:
    outcome = run(register(outbound(), vias=2, supported=["outbound"]))
    assert (outcome.status, outcome.reason) == (439, "First Hop Lacks Outbound Support")


def test_not_first_hop_and_no_ob_ignores_reg_id_otherwise() -> None:
    request = register(outbound(), vias=2, path=["<sip:edge.example;lr>"], supported=["path"])
    binding = only(run(request, source=TCP))
    assert binding.reg_id is None
    assert binding.instance is not None
    assert binding.flow is None  # the connection is the edge proxy's, not the UA's


def test_ob_in_the_first_path_uri_allows_outbound_behind_an_edge_proxy() -> None:
    request = register(
        outbound(),
        vias=2,
        path=["<sip:flowtoken@edge.example;lr;ob>"],
        supported=["path", "outbound"],
    )
    outcome = run(request, source=TCP)
    binding = only(outcome)
    assert (binding.reg_id, binding.flow) == (1, None)
    assert binding.source == Address("TCP", "192.0.2.1", 40000)
    assert values(outcome, "Require") == ["outbound"]
    assert values(outcome, "Path") == ["<sip:flowtoken@edge.example;lr;ob>"]


def test_two_registering_contacts_with_a_reg_id_is_400() -> None:
    outcome = run(register(outbound(1), "<sip:alice@192.0.2.7>", supported=["outbound"]))
    assert outcome.status == 400


def test_a_reg_id_contact_may_register_while_another_is_removed() -> None:
    old = stored("sip:alice@192.0.2.7", call_id="old")
    outcome = run(register(outbound(1), "<sip:alice@192.0.2.7>;expires=0"), [old])
    assert only(outcome).reg_id == 1


def test_instance_without_reg_id_follows_uri_rules() -> None:
    instance = "urn:uuid:00000000-0000-1000-8000-aabbccddeeff"
    old = stored("sip:alice@192.0.2.1", call_id="old", instance=instance)
    outcome = run(register(f"<sip:alice@192.0.2.2>;+sip.instance={INSTANCE}"), [old])
    assert outcome.bindings is not None
    assert len(outcome.bindings) == 2


# -- RFC 3327 Path -----------------------------------------------------------------------------


def test_path_is_kept_on_the_binding_and_echoed() -> None:
    path = ["<sip:p3.example.com;lr>", "<sip:p1.example.net;lr>"]
    outcome = run(register(PHONE, vias=3, path=path, supported=["path"]))
    assert only(outcome).path == tuple(path)
    assert values(outcome, "Path") == ["<sip:p3.example.com;lr>, <sip:p1.example.net;lr>"]


def test_path_values_in_one_header_line_are_split() -> None:
    outcome = run(
        register(PHONE, path=["<sip:a.example;lr>,<sip:b.example;lr>"], supported=["path"])
    )
    assert only(outcome).path == ("<sip:a.example;lr>", "<sip:b.example;lr>")


def test_path_without_support_is_420_unless_policy_accepts_it() -> None:
    request = register(PHONE, vias=2, path=["<sip:edge.example;lr>"])
    refused = run(request)
    assert (refused.status, refused.reason) == (420, "Bad Extension")
    assert values(refused, "Unsupported") == ["path"]
    accepted = run(request, policy=RegistrarPolicy(path_requires_support=False))
    assert only(accepted).path == ("<sip:edge.example;lr>",)


def test_malformed_path_is_400() -> None:
    assert run(register(PHONE, path=["<sip:edge.example"], supported=["path"])).status == 400


def test_a_query_echoes_path() -> None:
    outcome = run(register(path=["<sip:edge.example;lr>"], supported=["path"]), [stored()])
    assert values(outcome, "Path") == ["<sip:edge.example;lr>"]


# -- RFC 4475 messages a registrar answers ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "contact", "aor"),
    [
        # §3.3.8 regescrt: an escaped header in the Contact URI; stored as given.
        ("regescrt.dat", "sip:user@example.com?Route=%3Csip:sip.example.com%3E", "user"),
        # §3.3.13 cparam01: "unknownparam" is a Contact header parameter, not the URI's.
        ("cparam01.dat", "sip:+19725552222@gw1.example.net", "watson"),
        # §3.3.14 cparam02: here it is a URI parameter.
        ("cparam02.dat", "sip:+19725552222@gw1.example.net;unknownparam", "watson"),
    ],
)
def test_rfc4475_registrations(name: str, contact: str, aor: str) -> None:
    request = torture(name)
    key = str(address_of_record(request))
    assert key == f"sip:{aor}@example.com"
    outcome = run(request, aor=key)
    assert outcome.status == 200
    assert only(outcome).contact == contact


# -- policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"min_expires": 0},
        {"min_expires": 120, "default_expires": 60},
        {"default_expires": 7200},
        {"max_contacts_per_aor": 0},
    ],
)
def test_policy_refuses_inconsistent_bounds(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        dataclasses.replace(DEFAULT_POLICY, **change)
