"""The device API: log in, refresh, log out, fetch the account's configuration."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from ringfence.api.deps import AccountDep, PrincipalDep, Responses, ServicesDep, source_address
from ringfence.api.schemas import (
    CodeIn,
    DirectiveIn,
    LoginIn,
    NoticeOut,
    PrivacyRequestIn,
    ProvisioningOut,
    RefreshIn,
    TokenOut,
    provisioning_out,
)
from ringfence.auth.service import DeviceInfo, TokenPair
from ringfence.privacy.postmortem import Directive
from ringfence.privacy.requests import SubjectRequest, Verification
from ringfence.provisioning.acrobits import account_xml
from ringfence.provisioning.errors import NotFoundError

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


# -- the user's rights under the privacy policy (P19, P21) ---------------------------------


@router.post(
    "/privacy/requests",
    status_code=status.HTTP_201_CREATED,
    responses={**ERRORS, 200: {"description": "The same kind of request is open: that one"}},
)
async def submit_privacy_request(
    body: PrivacyRequestIn, who: PrincipalDep, response: Response, svc: ServicesDep
) -> SubjectRequest:
    """Confirmation, access, rectification or erasure of the data, verified by this session.

    Erasure is final: the account's key is destroyed and this session ends with it; an
    account under legal hold gets a rejected request and nothing changes.
    """
    request, new = await svc.subject_rights.submit(
        who.account_id, body.kind, Verification.SESSION, body.change_map()
    )
    if not new:
        response.status_code = status.HTTP_200_OK
    return request


@router.get("/privacy/requests", responses=ERRORS)
async def list_privacy_requests(who: PrincipalDep, svc: ServicesDep) -> list[SubjectRequest]:
    return await svc.subject_rights.of(who.account_id)


@router.get(
    "/privacy/requests/{request_id}/export",
    responses={**ERRORS, 404: {"description": "No completed access request with this id"}},
)
async def export_privacy_data(
    request_id: Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")],
    who: PrincipalDep,
    svc: ServicesDep,
) -> dict[str, Any]:
    """The export bundle of a completed access request: JSON per data category."""
    return await svc.subject_rights.export(who.account_id, request_id)


@router.post(
    "/privacy/requests/{request_id}/code",
    responses={
        404: {"description": "No request waiting for a code with this id"},
        422: {"description": "Wrong or expired code (the tries left are named)"},
    },
)
async def confirm_privacy_code(
    request_id: Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")], body: CodeIn, svc: ServicesDep
) -> SubjectRequest:
    """The code texted to the number of record, for a request taken by support (P21).

    No session: the requester may have lost the phone. The request's id (from support) and
    the code are the proof; after 5 wrong tries the request is rejected.
    """
    return await svc.subject_rights.confirm_code(request_id, body.code)


@router.put("/privacy/directive", responses=ERRORS)
async def set_directive(body: DirectiveIn, who: PrincipalDep, svc: ServicesDep) -> Directive:
    """Erase, or hand over to a named person and erase, on this user's death (P20)."""
    return await svc.postmortem.set_directive(who.account_id, body.action, body.trustee)


@router.get("/privacy/directive", responses={**ERRORS, 404: {"description": "None set"}})
async def get_directive(who: PrincipalDep, svc: ServicesDep) -> Directive:
    directive = await svc.postmortem.directive(who.account_id)
    if directive is None:
        raise NotFoundError("no directive set", field="directive")
    return directive


@router.delete(
    "/privacy/directive",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ERRORS, 404: {"description": "None set"}},
)
async def withdraw_directive(who: PrincipalDep, svc: ServicesDep) -> Response:
    await svc.postmortem.withdraw(who.account_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/privacy/notices", responses=ERRORS)
async def privacy_notices(who: PrincipalDep, svc: ServicesDep) -> list[NoticeOut]:
    """Notices of policy changes for this account, newest first (P18)."""
    return [
        NoticeOut(
            version=version,
            channel=notice.channel,
            sent_at=notice.sent_at,
            acknowledged_at=notice.acknowledged_at,
        )
        for version, notice in await svc.policies.notices(who.account_id)
    ]


@router.post(
    "/privacy/notices/{version_id}/ack",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ERRORS, 404: {"description": "This account was not told of that version"}},
)
async def acknowledge_notice(
    version_id: Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")],
    who: PrincipalDep,
    svc: ServicesDep,
) -> Response:
    await svc.policies.acknowledge(who.account_id, version_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
