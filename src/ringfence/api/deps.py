"""What route handlers receive: the services, the caller, and the feature gate (P1)."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from ringfence.auth.errors import InvalidCredentialsError
from ringfence.auth.service import AdminToken, AuthService, Principal
from ringfence.clock import Clock
from ringfence.config import HTTPSettings
from ringfence.files.service import FileService
from ringfence.messaging.history import MessageHistory, MessageSender
from ringfence.privacy.disclosures import DisclosureRegister
from ringfence.privacy.erasure import Erasure
from ringfence.privacy.policy import Policies
from ringfence.privacy.postmortem import PostMortem
from ringfence.privacy.requests import SubjectRights
from ringfence.provisioning.features import Feature
from ringfence.provisioning.models import Account
from ringfence.provisioning.service import ProvisioningService
from ringfence.pushgw.instances import PushInstances
from ringfence.pushgw.traces import PushTraces

#: The `responses=` argument of a route, documenting its error answers.
Responses = dict[int | str, dict[str, Any]]

#: OpenAPI extension naming the feature switch that gates a route; tests enumerate it.
FEATURE_EXTENSION = "x-ringfence-feature"


@dataclass(frozen=True, slots=True)
class Services:
    provisioning: ProvisioningService
    auth: AuthService
    clock: Clock
    http: HTTPSettings
    disclosures: DisclosureRegister
    erasure: Erasure
    subject_rights: SubjectRights
    postmortem: PostMortem
    policies: Policies
    push_instances: PushInstances
    push_traces: PushTraces
    history: MessageHistory
    messages: MessageSender
    files: FileService


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def source_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_confidential(request: Request) -> bool:
    """Whether the request came over HTTPS (P2).

    Served over TLS here, or behind a proxy that says so: uvicorn's `proxy_headers` takes
    the scheme and the client from X-Forwarded-Proto/For for the proxies
    `FORWARDED_ALLOW_IPS` trusts (127.0.0.1 by default), so a forged header from any other
    address changes nothing. Plain HTTP from loopback counts only with `[http]
    trust_loopback` (development on one machine).
    """
    if request.url.scheme in ("https", "wss"):
        return True
    if not services(request).http.trust_loopback:
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_bearer = HTTPBearer(auto_error=False, description="An access token from /v1/auth/login")
_basic = HTTPBasic(auto_error=False, description="username@tenant and the account password")
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="A token from `ringfence admin token create`",
)

ServicesDep = Annotated[Services, Depends(services)]


async def principal(
    request: Request,
    svc: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> Principal:
    """The device's account, from a bearer token or (for one-shot provisioning) Basic auth."""
    if bearer is not None:
        return await svc.auth.authenticate(bearer.credentials)
    if basic is not None:
        account_id = await svc.auth.check_password(
            basic.username, basic.password, source_address(request)
        )
        return Principal(account_id=account_id, session_id=None)
    raise InvalidCredentialsError("an access token or username@tenant and password is required")


PrincipalDep = Annotated[Principal, Depends(principal)]


async def current_account(svc: ServicesDep, who: PrincipalDep) -> Account:
    return await svc.provisioning.account_by_id(who.account_id)


AccountDep = Annotated[Account, Depends(current_account)]


async def admin(
    svc: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> AdminToken:
    if bearer is None:
        raise InvalidCredentialsError("an admin token is required")
    return await svc.auth.authenticate_admin(bearer.credentials)


AdminDep = Annotated[AdminToken, Depends(admin)]


def require_feature(feature: Feature) -> Callable[[Account], Awaitable[Account]]:
    """A dependency that lets the request through only if the account has `feature` on (P1).

    Use it with `feature_route(feature)` so the route is also marked in the OpenAPI document.
    """

    async def gate(account: AccountDep) -> Account:
        account.config.require(feature)
        return account

    return gate


def feature_route(feature: Feature) -> dict[str, Any]:
    """Route keyword arguments for a route gated by `feature`."""
    return {
        "dependencies": [Depends(require_feature(feature))],
        "openapi_extra": {FEATURE_EXTENSION: feature.value},
    }
