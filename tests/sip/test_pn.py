"""RFC 8599 push parameters of a Contact URI, and Linphone's variants."""

from __future__ import annotations

import pytest

from ringfence.sip.pn import PushParameterError, push_parameters, without_push_parameters
from ringfence.sip.uri import SipURI, parse_uri


def test_rfc_8599_apns_parameters() -> None:
    params = push_parameters(
        "sip:alice@192.0.2.1;pn-provider=apns;pn-prid=00fc13;pn-param=ABCD123456.com.example.app.voip"
    )
    assert params is not None
    assert (params.service, params.sandbox, params.app, params.team) == (
        "apns",
        False,
        "com.example.app",
        "ABCD123456",
    )
    assert params.token_for_call() == "00fc13"
    assert params.token_for_alert() is None  # a VoIP token never gets an alert


def test_linphone_registers_one_token_per_apns_service_and_a_development_provider() -> None:
    params = push_parameters(
        "sip:a@192.0.2.1;pn-provider=apns.dev;pn-prid=aa11:remote&bb22:voip;"
        "pn-param=ABCD123456.org.linphone.phone.remote%26voip"
    )
    assert params is not None
    assert params.sandbox
    assert params.app == "org.linphone.phone"
    assert (params.token_for_call(), params.token_for_alert()) == ("bb22", "aa11")


def test_fcm_and_webpush() -> None:
    fcm = push_parameters("sip:a@192.0.2.1;pn-provider=fcm;pn-prid=tok-1;pn-param=my-project")
    assert fcm is not None
    assert (fcm.service, fcm.app, fcm.token_for_call(), fcm.token_for_alert()) == (
        "fcm",
        "my-project",
        "tok-1",
        "tok-1",
    )
    web = push_parameters("sip:a@192.0.2.1;pn-provider=webpush;pn-prid=https%3A//push.example/x")
    assert web is not None
    assert (web.service, web.token_for_call()) == ("webhook", "https://push.example/x")


@pytest.mark.parametrize(
    "uri",
    [
        "sip:a@192.0.2.1;pn-provider=apns;pn-param=ABCD123456.com.example.voip",
        "sip:a@192.0.2.1;pn-provider=apns;pn-prid=x;pn-param=nodots",
        "sip:a@192.0.2.1;pn-provider=apns;pn-prid=x:other;pn-param=T.com.example.voip",
        "sip:a@192.0.2.1;pn-provider=apns;pn-prid=x;pn-param=T.com.example.remote&voip",
    ],
)
def test_incomplete_parameters_are_refused(uri: str) -> None:
    with pytest.raises(PushParameterError):
        push_parameters(uri)


def test_no_pn_provider_means_no_push_and_parameters_can_be_removed() -> None:
    assert push_parameters("sip:a@192.0.2.1;transport=tcp") is None
    assert push_parameters("tel:+41445551234") is None
    uri = parse_uri("sip:a@192.0.2.1;transport=tcp;pn-provider=fcm;pn-prid=t;pn-param=p")
    assert isinstance(uri, SipURI)
    assert str(without_push_parameters(uri)) == "sip:a@192.0.2.1;transport=tcp"
