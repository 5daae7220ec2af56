"""Provisioning rules, over real storage."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import delete, select

from ringfence.crypto import KeyDestroyedError
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from ringfence.provisioning.features import FeatureConfig, LocationConfig, LocationMode
from ringfence.provisioning.models import AccountChange, AccountStatus
from ringfence.provisioning.service import (
    IMPORT_BATCH,
    SIP_CACHE_STALE_MAX_S,
    SIP_CACHE_TTL_S,
    SIP_LOAD_BATCH,
    NewAccount,
    ProvisioningService,
    account_subject,
)
from ringfence.runtime import Runtime
from ringfence.sip.digest import DigestAlgorithm, ha1
from ringfence.storage.tables import accounts, subject_keys
from tests.support.clock import FakeClock


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


def _md5(username: str, password: str) -> str:
    return ha1(DigestAlgorithm.MD5, username, "sip.acme.example", password)


async def _other_node_knowing_alice(runtime: Runtime, clock: FakeClock) -> ProvisioningService:
    """Alice's account, and a second node (its own service, same databases) that has
    warmed its SIP credentials cache: changes made through `runtime` do not reach it."""
    await _tenant(runtime)
    await runtime.provisioning.create_account("acme", "alice", "correct horse")
    node = ProvisioningService(runtime.store, runtime.keyring, clock)
    await node.warm_sip_credentials()
    return node


async def _md5_known_to(node: ProvisioningService, username: str) -> str:
    found = await node.sip_credentials("sip.acme.example", username)
    assert found is not None
    return found.ha1[DigestAlgorithm.MD5]


async def test_sip_credentials_cache_is_warmed_in_batches(runtime: Runtime, backend: str) -> None:
    await _tenant(runtime)
    names = [f"user{n}" for n in range(SIP_LOAD_BATCH + 3)]  # two pages
    for name in names:
        await runtime.provisioning.create_account("acme", name, f"pw-{name}-long")
    # Another node (its own service over the same databases) warms its cache at start.
    node = ProvisioningService(runtime.store, runtime.keyring, runtime.clock)
    assert await node.warm_sip_credentials() == len(names)
    # The answers come from memory: the rows are gone, behind the services' backs.
    async with runtime.engine.begin() as connection:
        await connection.execute(delete(accounts))
    for name in (names[0], names[-1]):
        found = await node.sip_credentials("sip.acme.example", name)
        assert found is not None
        assert found.ha1[DigestAlgorithm.MD5] == _md5(name, f"pw-{name}-long")


async def test_warm_stops_at_its_limit(runtime: Runtime) -> None:
    await _tenant(runtime)
    for name in ("alice", "bob", "carol"):
        await runtime.provisioning.create_account("acme", name, "correct horse")
    node = ProvisioningService(runtime.store, runtime.keyring, runtime.clock)
    assert await node.warm_sip_credentials(limit=2) == 2


async def test_stale_sip_credentials_are_served_then_refreshed(
    runtime: Runtime, clock: FakeClock, backend: str
) -> None:
    node = await _other_node_knowing_alice(runtime, clock)
    # The password changes on the other node: this one does not hear of it...
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(password="new battery")
    )
    assert await _md5_known_to(node, "alice") == _md5("alice", "correct horse")
    # ...until the TTL has passed: the entry is still answered from, and queued.
    assert await node.refresh_sip_credentials() == 0
    clock.advance(SIP_CACHE_TTL_S + 1)
    assert await _md5_known_to(node, "alice") == _md5("alice", "correct horse")
    assert await node.refresh_sip_credentials() == 1
    assert await node.refresh_sip_credentials() == 0
    assert await _md5_known_to(node, "alice") == _md5("alice", "new battery")


async def test_refresh_forgets_an_account_deleted_elsewhere(
    runtime: Runtime, clock: FakeClock, backend: str
) -> None:
    node = await _other_node_knowing_alice(runtime, clock)
    await runtime.provisioning.delete_account("acme", "alice")
    clock.advance(SIP_CACHE_TTL_S + 1)
    assert await node.sip_credentials("sip.acme.example", "alice") is not None  # stale
    assert await node.refresh_sip_credentials() == 1
    assert await node.sip_credentials("sip.acme.example", "alice") is None


async def test_too_old_sip_credentials_are_loaded_before_answering(
    runtime: Runtime, clock: FakeClock
) -> None:
    node = await _other_node_knowing_alice(runtime, clock)
    await runtime.provisioning.update_account(
        "acme", "alice", AccountChange(status=AccountStatus.SUSPENDED)
    )
    clock.advance(SIP_CACHE_STALE_MAX_S + 1)
    found = await node.sip_credentials("sip.acme.example", "alice")
    assert found is not None
    assert not found.active


async def test_changes_on_this_node_evict_at_once(runtime: Runtime) -> None:
    await _tenant(runtime)
    await runtime.provisioning.create_account("acme", "alice", "correct horse")
    service = runtime.provisioning
    await service.warm_sip_credentials()
    await service.update_account("acme", "alice", AccountChange(password="new battery"))
    found = await service.sip_credentials("sip.acme.example", "alice")
    assert found is not None
    assert found.ha1[DigestAlgorithm.MD5] == _md5("alice", "new battery")
    # A tenant's defaults decide the push mode of its accounts.
    assert found.push
    await service.update_tenant(
        "acme", defaults=FeatureConfig.model_validate({"push": {"mode": "keepalive"}})
    )
    found = await service.sip_credentials("sip.acme.example", "alice")
    assert found is not None
    assert not found.push


async def _count_rows(runtime: Runtime) -> tuple[int, int]:
    async with runtime.engine.connect() as connection:
        accounts_n = len((await connection.execute(select(accounts.c.id))).all())
    async with runtime.key_engine.connect() as connection:
        keys_n = len((await connection.execute(select(subject_keys.c.subject))).all())
    return accounts_n, keys_n


async def test_import_creates_accounts_in_batches(runtime: Runtime, backend: str) -> None:
    await _tenant(runtime)
    rows = [NewAccount(f"user{n}", f"password-{n}") for n in range(IMPORT_BATCH + 2)]
    rows.append(NewAccount("carol", "carol's secret", display_name="Carol", e164="+41445550000"))
    assert await runtime.provisioning.import_accounts("acme", rows) == len(rows)
    assert await _count_rows(runtime) == (len(rows), len(rows))
    found = await runtime.provisioning.sip_credentials("sip.acme.example", f"user{IMPORT_BATCH}")
    assert found is not None
    assert found.ha1[DigestAlgorithm.MD5] == _md5(f"user{IMPORT_BATCH}", f"password-{IMPORT_BATCH}")
    carol = await runtime.provisioning.account("acme", "carol")
    assert (carol.display_name, carol.e164) == ("Carol", "+41445550000")


async def test_import_with_a_bad_row_writes_nothing(runtime: Runtime) -> None:
    await _tenant(runtime)
    good = [NewAccount(f"user{n}", f"password-{n}") for n in range(3)]
    with pytest.raises(InvalidInputError) as bad_password:
        await runtime.provisioning.import_accounts("acme", [*good, NewAccount("dan", "short")])
    assert bad_password.value.field == "rows[3].password"
    with pytest.raises(InvalidInputError) as bad_number:
        await runtime.provisioning.import_accounts(
            "acme", [NewAccount("dan", "long enough", e164="0445550000"), *good]
        )
    assert bad_number.value.field == "rows[0].e164"
    with pytest.raises(ConflictError) as repeated:
        await runtime.provisioning.import_accounts("acme", [*good, good[1]])
    assert repeated.value.field == "rows[3].username"
    assert await _count_rows(runtime) == (0, 0)


async def test_import_refuses_taken_usernames(runtime: Runtime, backend: str) -> None:
    await _tenant(runtime)
    await runtime.provisioning.create_account("acme", "alice", "correct horse")
    rows = [NewAccount("bob", "bob's secret"), NewAccount("alice", "another one")]
    with pytest.raises(ConflictError, match="'alice' exists"):
        await runtime.provisioning.import_accounts("acme", rows)
    assert await _count_rows(runtime) == (1, 1)


async def test_one_request_reloads_the_tenant_domains_the_others_answer_from_the_old_set(
    runtime: Runtime, clock: FakeClock
) -> None:
    await _tenant(runtime)
    node = ProvisioningService(runtime.store, runtime.keyring, clock)
    assert await node.is_tenant_domain("sip.acme.example")
    await runtime.provisioning.create_tenant("globex", "Globex", "sip.globex.example")
    assert not await node.is_tenant_domain("sip.globex.example")  # cached
    clock.advance(SIP_CACHE_TTL_S + 1)
    # The first reloads (and waits for the database); the second, meanwhile, answers
    # from the set it has.
    first, second = await asyncio.gather(
        node.is_tenant_domain("sip.globex.example"), node.is_tenant_domain("sip.globex.example")
    )
    assert (first, second) == (True, False)
    assert await node.is_tenant_domain("sip.globex.example")
