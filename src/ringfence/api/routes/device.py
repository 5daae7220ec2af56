"""The device API: log in, refresh, log out, fetch the account's configuration."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status

from ringfence.api.deps import AccountDep, PrincipalDep, Responses, ServicesDep, source_address
from ringfence.api.schemas import LoginIn, ProvisioningOut, RefreshIn, TokenOut, provisioning_out
from ringfence.auth.service import DeviceInfo, TokenPair
from ringfence.provisioning.acrobits import account_xml

router = APIRouter(prefix="/v1", tags=["device"])

ERRORS: Responses = {
    401: {"description": "Missing or invalid credentials"},
    422: {"description": "A field is invalid"},
    429: {"description": "Too many failed logins; see Retry-After"},
}


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token,
        expires_in=pair.access_expires_in_s,
        refresh_token=pair.refresh_token,
        refresh_expires_in=pair.refresh_expires_in_s,
    )


LOGIN_ERRORS: Responses = {**ERRORS, 403: {"description": "Account suspended"}}


@router.post("/auth/login", responses=LOGIN_ERRORS)
async def login(body: LoginIn, request: Request, svc: ServicesDep) -> TokenOut:
    device = None
    if body.device is not None:
        device = DeviceInfo(body.device.install_id, body.device.platform, body.device.app_id)
    pair = await svc.auth.login(body.login, body.password, source_address(request), device)
    return _tokens(pair)


@router.post("/auth/refresh", responses=ERRORS)
async def refresh(body: RefreshIn, svc: ServicesDep) -> TokenOut:
    return _tokens(await svc.auth.refresh(body.refresh_token))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
async def logout(who: PrincipalDep, svc: ServicesDep) -> None:
    await svc.auth.logout(who)


PROVISIONING_RESPONSES: Responses = {
    **ERRORS,
    200: {"content": {"application/xml": {}}, "description": "JSON, or Account XML"},
}


@router.get(
    "/provisioning",
    responses=PROVISIONING_RESPONSES,
    response_model=ProvisioningOut,
)
async def provisioning(
    account: AccountDep,
    format: Annotated[
        Literal["json", "xml"], Query(description="json, or xml for Account XML")
    ] = "json",
) -> ProvisioningOut | Response:
    """The account's configuration: every feature switch, and the SIP account to register."""
    if format == "xml":
        return Response(
            account_xml(account, login=f"{account.username}@{account.tenant.code}"),
            media_type="application/xml",
        )
    return provisioning_out(account)
