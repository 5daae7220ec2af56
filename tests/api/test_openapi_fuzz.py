"""A bounded schemathesis run over the whole OpenAPI document: no request gets a 5xx.

`from_asgi` loads the schema at collection, so the application is built here, at import: a
runtime in a fresh data directory, migrated and seeded (tenant `acme`, account `alice`, an
admin token) so that the admin operations get past authentication and reach their handlers.
The admin token goes on every admin request; the device API (`/v1/...`) gets alice's password
as HTTP Basic instead, which it accepts, so its handlers are reached too (`/acrobits` takes its
credentials in the query or form, which the fuzzer generates).
Generated tenant codes and usernames almost never exist, so half the cases that address one
are pointed at the seeded tenant and account, for the handlers behind the 404 to be reached.
"""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
import zlib
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error

from ringfence.config import KeySettings, Settings, StorageSettings
from ringfence.runtime import Runtime
from tests.support.clock import FakeClock

TENANT = "acme"
SIP_DOMAIN = "sip.acme.example"
USERNAME = "alice"
PASSWORD = "correct horse"


async def _seed(rt: Runtime) -> str:
    await rt.migrate()
    await rt.provisioning.create_tenant(TENANT, "Acme Telecom", SIP_DOMAIN)
    await rt.provisioning.create_account(
        TENANT, USERNAME, PASSWORD, display_name="Alice Liddell", e164="+41445551234"
    )
    _, token = await rt.auth.create_admin_token("fuzz")
    return token


def _build() -> tuple[Runtime, str]:
    data_dir = Path(tempfile.mkdtemp(prefix="ringfence-fuzz-"))
    kek = base64.b64encode(os.urandom(32)).decode()
    rt = Runtime(
        Settings(storage=StorageSettings(data_dir=data_dir), keys=KeySettings(kek=kek)),
        FakeClock(),
    )
    token = asyncio.run(_seed(rt))
    # Pooled connections belong to the seeding loop; the fuzzer's calls run on another one.
    asyncio.run(rt.engine.dispose())
    asyncio.run(rt.key_engine.dispose())
    return rt, token


RUNTIME, ADMIN_TOKEN = _build()
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_basic = base64.b64encode(f"{USERNAME}@{TENANT}:{PASSWORD}".encode()).decode()
DEVICE_HEADERS = {"Authorization": f"Basic {_basic}"}

schema = schemathesis.openapi.from_asgi("/openapi.json", RUNTIME.app())


def _aim_at_seed(case: Case) -> None:
    """Point every other case that names a tenant or an account at `acme` and `alice`.

    The choice hangs on the generated values, so a run stays reproducible. Deletions keep their
    generated names: the seed must survive the whole run.
    """
    params = case.path_parameters
    if not params or case.method.upper() == "DELETE":
        return
    if zlib.crc32(repr(sorted(params.items())).encode()) % 2:
        return
    aimed = dict(params)
    if "code" in aimed:
        aimed["code"] = TENANT
    if "username" in aimed:
        aimed["username"] = USERNAME
    case.path_parameters = aimed


def test_the_schema_covers_every_router() -> None:
    paths = set(schema.raw_schema["paths"])
    assert {"/healthz", "/v1/provisioning", "/acrobits/provisioning"} <= paths
    assert "/admin/v1/tenants/{code}/accounts/{username}/config" in paths


@schema.parametrize()  # type: ignore[untyped-decorator]  # schemathesis is not type-checked
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: Case) -> None:
    _aim_at_seed(case)
    headers = DEVICE_HEADERS if case.path.startswith("/v1/") else ADMIN_HEADERS
    case.call_and_validate(headers=headers, checks=[not_a_server_error])
