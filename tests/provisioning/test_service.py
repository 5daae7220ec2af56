"""Provisioning rules, over real storage."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ringfence.crypto import KeyDestroyedError
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from ringfence.provisioning.features import FeatureConfig, LocationConfig, LocationMode
from ringfence.provisioning.models import AccountChange, AccountStatus
from ringfence.provisioning.service import account_subject
from ringfence.runtime import Runtime
from ringfence.sip.digest import DigestAlgorithm, ha1
from ringfence.storage.tables import accounts


async def _tenant(runtime: Runtime) -> None:
    await runtime.provisioning.create_tenant("acme", "Acme", "sip.acme.example")


def test_ha1_matches_rfc_2617_example() -> None:
    # RFC 2617 §3.5: Mufasa / testrealm@host.com / "Circle Of Life".
    assert ha1(DigestAlgorithm.MD5, "Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )


def test_ha1_sha256_matches_rfc_7616_example() -> None:
    # RFC 7616 §3.9.1: Mufasa / http-auth@example.org / "Circle of Life", SHA-256.
    assert ha1(DigestAlgorithm.SHA256, "Mufasa", "http-auth@example.org", "Circle of Life") == (
        "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    )


@pytest.mark.promise("P16")
async def test_account_keeps_only_sealed_personal_data_and_ha1(runtime: Runtime) -> None:
    await _tenant(runtime)
    account = await runtime.provisioning.create_account(
        "acme", "alice", "correct horse", display_name="Alice Liddell", e164="+41445551234"
    )
    assert account.display_name == "Alice Liddell"
    async with runtime.engine.connect() as connection:
        row = (await connection.execute(select(accounts))).one()
    raw = repr(tuple(row)).encode()
    for secret in (b"Alice Liddell", b"+41445551234", b"correct horse"):
        assert secret not in raw
    for value in (
        ha1(DigestAlgorithm.MD5, "alice", "sip.acme.example", "correct horse"),
        ha1(DigestAlgorithm.SHA256, "alice", "sip.acme.example", "correct horse"),
    ):
        assert value.encode() not in raw  # HA1 values are sealed too
    assert row.display_name_sealed[0] == 1  # envelope version 1


async def test_verify_password(runtime: Runtime) -> None:
    await _tenant(runtime)
    await runtime.provisioning.create_account("acme", "alice", "correct horse")
    tenant = await runtime.provisioning.tenant("acme")
    assert await runtime.provisioning.verify_password(tenant, "alice", "correct horse")
    assert await runtime.provisioning.verify_password(tenant, "alice", "wrong horse") is None
    assert await runtime.provisioning.verify_password(tenant, "nobody", "correct horse") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"username": "al ice"}, "username"),
        ({"username": "x" * 65}, "username"),
        ({"username": "alice\n"}, "username"),  # `$` would match before a final newline
        ({"e164": "+41445551234\n"}, "e164"),
        ({"password": "short"}, "password"),
        ({"e164": "0445551234"}, "e164"),
        ({"display_name": "bell\x07"}, "display_name"),
        (
            {"overrides": {"push": {"instance_max_age_days": 9}}},
            "config.push.instance_max_age_days",
        ),
    ],
)
async def test_invalid_account_input_names_the_field_and_stores_nothing(
    runtime: Runtime, kwargs: dict[str, object], field: str
) -> None:
    await _tenant(runtime)
    args: dict[str, object] = {"username": "alice", "password": "correct horse", **kwargs}
    with pytest.raises(InvalidInputError) as caught:
        await runtime.provisioning.create_account("acme", **args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert await runtime.provisioning.accounts("acme") == []


async def test_duplicates_conflict(runtime: Runtime) -> None:
    await _tenant(runtime)
    with pytest.raises(ConflictError):
        await runtime.provisioning.create_tenant("acme", "Again", "other.example")
    with pytest.raises(ConflictError):
        await runtime.provisioning.create_tenant("other", "Again", "sip.acme.example")
    await runtime.provisioning.create_account("acme", "alice", "correct horse")
    with pytest.raises(ConflictError):
        await runtime.provisioning.create_account("acme", "alice", "another one")


async def test_tenant_code_and_domain_must_match_whole(runtime: Runtime) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await runtime.provisioning.create_tenant("acme\n", "Acme", "sip.acme.example")
    assert caught.value.field == "code"
    with pytest.raises(InvalidInputError) as caught:
        await runtime.provisioning.create_tenant("acme", "Acme", "sip.acme.example\n")
    assert caught.value.field == "sip_domain"
    assert await runtime.provisioning.tenants() == []


async def test_unknown_tenant_and_account(runtime: Runtime) -> None:
    with pytest.raises(NotFoundError):
        await runtime.provisioning.tenant("nope")
    await _tenant(runtime)
    with pytest.raises(NotFoundError):
        await runtime.provisioning.account("acme", "nobody")


async def test_tenant_defaults_change_may_not_break_accounts(runtime: Runtime) -> None:
    await runtime.provisioning.create_tenant(
        "acme",
        "Acme",
        "sip.acme.example",
        FeatureConfig(location=LocationConfig(mode=LocationMode.EMERGENCY, country="CH")),
    )
    await runtime.provisioning.create_account(
        "acme", "alice", "correct horse", overrides={"location": {"mode": "registration"}}
    )
    with pytest.raises(ConflictError, match="alice"):
        await runtime.provisioning.update_tenant("acme", defaults=FeatureConfig())
    tenant = await runtime.provisioning.tenant("acme")
    assert tenant.defaults.location.country == "CH"  # unchanged


async def test_update_account(runtime: Runtime) -> None:
    await _tenant(runtime)
    await runtime.provisioning.create_account(
        "acme", "alice", "correct horse", display_name="Alice", e164="+41445551234"
    )
    updated = await runtime.provisioning.update_account(
        "acme",
        "alice",
        AccountChange(
            display_name="Alice L.",
            clear_e164=True,
            status=AccountStatus.SUSPENDED,
            overrides={"blf": {"enabled": True}},
        ),
    )
    assert updated.display_name == "Alice L."
    assert updated.e164 is None
    assert updated.status is AccountStatus.SUSPENDED
    assert updated.config.blf.enabled is True
    assert await runtime.provisioning.account("acme", "alice") == updated


@pytest.mark.promise("P19")
async def test_delete_tenant_erases_every_account_key(runtime: Runtime) -> None:
    await _tenant(runtime)
    ids = [
        (await runtime.provisioning.create_account("acme", name, "correct horse")).id
        for name in ("alice", "bob")
    ]
    await runtime.provisioning.delete_tenant("acme")
    for account_id in ids:
        with pytest.raises(KeyDestroyedError):
            await runtime.keyring.cipher(account_subject(account_id))
    assert await runtime.provisioning.tenants() == []


async def test_sip_credentials_for_digest(runtime: Runtime) -> None:
    await _tenant(runtime)
    await runtime.provisioning.create_account("acme", "alice", "correct horse")
    found = await runtime.provisioning.sip_credentials("SIP.acme.example", "alice")
    assert found is not None
    assert found.active
    assert found.ha1[DigestAlgorithm.MD5] == ha1(
        DigestAlgorithm.MD5, "alice", "sip.acme.example", "correct horse"
    )
    assert "correct" not in repr(found)
    assert found.ha1[DigestAlgorithm.SHA256] not in repr(found)
    assert await runtime.provisioning.sip_credentials("acme", "alice") is None  # a code
    assert await runtime.provisioning.sip_credentials("sip.acme.example", "bob") is None
