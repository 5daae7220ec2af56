"""The admin API: tenants, accounts and their configuration. Needs an admin token."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from ringfence.api.deps import AdminDep, Responses, ServicesDep
from ringfence.api.errors import error_body
from ringfence.api.schemas import (
    AccountConfigOut,
    AccountIn,
    AccountOut,
    AccountPatch,
    AwaitingCodeIn,
    AwaitingDocumentIn,
    CodeIn,
    CodeSentOut,
    DeathNoticeIn,
    DecisionIn,
    DisclosureIn,
    FeatureOverrides,
    HoldIn,
    IdentityDecisionIn,
    OperatorRequestIn,
    PolicyVersionIn,
    ReleaseIn,
    TenantIn,
    TenantOut,
    TenantPatch,
)
from ringfence.privacy.disclosures import Disclosure
from ringfence.privacy.erasure import Destruction, LegalHold
from ringfence.privacy.policy import Notice, Notified, PolicyVersion
from ringfence.privacy.postmortem import Carried
from ringfence.privacy.requests import MAX_DOCUMENT_BYTES, SubjectRequest, Verification
from ringfence.provisioning.features import FeatureConfig
from ringfence.provisioning.models import AccountChange
from ringfence.pushgw.traces import CallTrace

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/admin/v1",
    tags=["admin"],
    responses={
        401: {"description": "Missing or invalid admin token"},
        404: {"description": "No such tenant or account"},
        422: {"description": "A field is invalid"},
    },
)

CodePath = Annotated[str, Path(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")]
UserPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._~+-]{1,64}$")]
CONFLICT: Responses = {409: {"description": "Already exists, or would invalidate accounts"}}


@router.get("/tenants")
async def list_tenants(_: AdminDep, svc: ServicesDep) -> list[TenantOut]:
    return [TenantOut.of(t) for t in await svc.provisioning.tenants()]


@router.post("/tenants", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def create_tenant(body: TenantIn, _: AdminDep, svc: ServicesDep) -> TenantOut:
    tenant = await svc.provisioning.create_tenant(
        body.code,
        body.name,
        body.sip_domain,
        body.defaults,
        body.upstream.model() if body.upstream else None,
    )
    return TenantOut.of(tenant)


@router.get("/tenants/{code}")
async def get_tenant(code: CodePath, _: AdminDep, svc: ServicesDep) -> TenantOut:
    return TenantOut.of(await svc.provisioning.tenant(code))


@router.patch("/tenants/{code}", responses=CONFLICT)
async def update_tenant(
    code: CodePath, body: TenantPatch, _: AdminDep, svc: ServicesDep
) -> TenantOut:
    # `upstream` absent leaves it; null makes the tenant standalone again.
    upstream = (
        (body.upstream.model() if body.upstream else None)
        if "upstream" in body.model_fields_set
        else ...
    )
    tenant = await svc.provisioning.update_tenant(
        code, name=body.name, defaults=body.defaults, upstream=upstream
    )
    return TenantOut.of(tenant)


@router.delete(
    "/tenants/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "An account of the tenant is under legal hold"}},
)
async def delete_tenant(code: CodePath, _: AdminDep, svc: ServicesDep) -> Response:
    """Delete the tenant and erase each of its accounts (keys destroyed), unless one is held."""
    await svc.erasure.erase_tenant(code, reason="tenant deleted by an admin")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tenants/{code}/config")
async def get_tenant_config(code: CodePath, _: AdminDep, svc: ServicesDep) -> FeatureConfig:
    return (await svc.provisioning.tenant(code)).defaults


@router.put("/tenants/{code}/config", responses=CONFLICT)
async def put_tenant_config(
    code: CodePath, body: FeatureConfig, _: AdminDep, svc: ServicesDep
) -> FeatureConfig:
    return (await svc.provisioning.update_tenant(code, defaults=body)).defaults


@router.get("/tenants/{code}/accounts")
async def list_accounts(
    code: CodePath,
    _: AdminDep,
    svc: ServicesDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AccountOut]:
    return [
        AccountOut.of(a) for a in await svc.provisioning.accounts(code, offset=offset, limit=limit)
    ]


@router.post("/tenants/{code}/accounts", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def create_account(
    code: CodePath, body: AccountIn, _: AdminDep, svc: ServicesDep
) -> AccountOut:
    account = await svc.provisioning.create_account(
        code,
        body.username,
        body.password,
        display_name=body.display_name,
        e164=body.e164,
        email=body.email,
        overrides=body.config.as_change() if body.config else None,
    )
    return AccountOut.of(account)


@router.get("/tenants/{code}/accounts/{username}")
async def get_account(
    code: CodePath, username: UserPath, _: AdminDep, svc: ServicesDep
) -> AccountOut:
    return AccountOut.of(await svc.provisioning.account(code, username))


@router.patch("/tenants/{code}/accounts/{username}")
async def update_account(
    code: CodePath, username: UserPath, body: AccountPatch, _: AdminDep, svc: ServicesDep
) -> AccountOut:
    """Change an account. A new password or a suspension revokes all its tokens."""
    given = body.model_fields_set
    change = AccountChange(
        display_name=body.display_name,
        clear_display_name="display_name" in given and body.display_name is None,
        e164=body.e164,
        clear_e164="e164" in given and body.e164 is None,
        email=body.email,
        clear_email="email" in given and body.email is None,
        status=body.status,
        password=body.password,
        overrides=body.config.as_change() if body.config else None,
    )
    return AccountOut.of(await svc.provisioning.update_account(code, username, change))


@router.delete(
    "/tenants/{code}/accounts/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"description": "The account is under legal hold"}},
)
async def delete_account(
    code: CodePath, username: UserPath, _: AdminDep, svc: ServicesDep
) -> Response:
    """Erase the account: its key is destroyed, then its records deleted; 409 if held."""
    await svc.erasure.erase_account(code, username, reason="account deleted by an admin")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tenants/{code}/accounts/{username}/config")
async def get_account_config(
    code: CodePath, username: UserPath, _: AdminDep, svc: ServicesDep
) -> AccountConfigOut:
    account = await svc.provisioning.account(code, username)
    return AccountConfigOut(overrides=account.overrides, effective=account.config)


@router.patch("/tenants/{code}/accounts/{username}/config")
async def patch_account_config(
    code: CodePath, username: UserPath, body: FeatureOverrides, _: AdminDep, svc: ServicesDep
) -> AccountConfigOut:
    """Lay overrides over the account's; a `null` value removes that override."""
    account = await svc.provisioning.update_account(
        code, username, AccountChange(overrides=body.as_change())
    )
    return AccountConfigOut(overrides=account.overrides, effective=account.config)


# -- disclosure register (P17) --------------------------------------------------------------

IdPath = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]


@router.post("/disclosures", status_code=status.HTTP_201_CREATED)
async def record_disclosure(body: DisclosureIn, _: AdminDep, svc: ServicesDep) -> Disclosure:
    """Record a legal-process request as it arrives; its legal basis is required."""
    subject = (body.subject.tenant, body.subject.username) if body.subject else None
    disclosure = await svc.disclosures.record(
        authority=body.authority,
        reference=body.reference,
        legal_basis=body.legal_basis,
        requested=body.requested,
        subject=subject,
    )
    return disclosure


@router.get("/disclosures")
async def list_disclosures(_: AdminDep, svc: ServicesDep) -> list[Disclosure]:
    """The register, oldest first."""
    return await svc.disclosures.entries()


@router.get("/disclosures/{disclosure_id}")
async def get_disclosure(disclosure_id: IdPath, _: AdminDep, svc: ServicesDep) -> Disclosure:
    return await svc.disclosures.get(disclosure_id)


@router.post(
    "/disclosures/{disclosure_id}/decision",
    responses={409: {"description": "Decided already: decisions are final"}},
)
async def decide_disclosure(
    disclosure_id: IdPath, body: DecisionIn, _: AdminDep, svc: ServicesDep
) -> Disclosure:
    """Record what was handed over (or why not), and who approved it. Once."""
    decided = await svc.disclosures.decide(
        disclosure_id, disclosed=body.disclosed, given=body.given, approved_by=body.approved_by
    )
    return decided


# -- push traces: why a call was missed (#4) ------------------------------------------------


@router.get("/tenants/{code}/accounts/{username}/push-traces")
async def account_push_traces(
    code: CodePath, username: UserPath, _: AdminDep, svc: ServicesDep
) -> list[CallTrace]:
    """The account's push traces of the last 7 days, newest first: why a call was missed."""
    return await svc.push_traces.of(await svc.provisioning.account_id(code, username))


# -- legal holds and the destruction record (P15) ------------------------------------------


@router.post("/tenants/{code}/accounts/{username}/holds", status_code=status.HTTP_201_CREATED)
async def place_hold(
    code: CodePath, username: UserPath, body: HoldIn, _: AdminDep, svc: ServicesDep
) -> LegalHold:
    """Stop every erasure of the account's data until the hold is released."""
    return await svc.erasure.place_hold(
        code, username, reason=body.reason, reference=body.reference, placed_by=body.placed_by
    )


@router.get("/tenants/{code}/accounts/{username}/holds")
async def list_holds(
    code: CodePath, username: UserPath, _: AdminDep, svc: ServicesDep
) -> list[LegalHold]:
    """The account's holds, released ones included, oldest first."""
    return await svc.erasure.holds(code, username)


@router.post(
    "/holds/{hold_id}/release",
    responses={409: {"description": "Released already"}},
)
async def release_hold(
    hold_id: IdPath, body: ReleaseIn, _: AdminDep, svc: ServicesDep
) -> LegalHold:
    return await svc.erasure.release_hold(hold_id, released_by=body.released_by)


@router.get("/destructions")
async def list_destructions(_: AdminDep, svc: ServicesDep) -> list[Destruction]:
    """What was destroyed, when and why: account ids and data categories, no data."""
    return await svc.erasure.destructions()


@router.post(
    "/tenants/{code}/accounts/{username}/privacy/requests",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The same kind of request is open: that one"}},
)
async def submit_privacy_request(
    code: CodePath,
    username: UserPath,
    body: OperatorRequestIn,
    response: Response,
    _: AdminDep,
    svc: ServicesDep,
) -> SubjectRequest:
    """A data-subject request taken by an operator who checked the requester's identity."""
    subject = await svc.provisioning.account_id(code, username)
    request, new = await svc.subject_rights.submit(
        subject, body.kind, Verification.OPERATOR, body.change_map()
    )
    if not new:
        response.status_code = status.HTTP_200_OK
    logger.info("data-subject request %s taken by an operator", request.id)
    return request


@router.post(
    "/tenants/{code}/accounts/{username}/privacy/requests/awaiting-document",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The same kind of request is open: that one"}},
)
async def receive_privacy_request(
    code: CodePath,
    username: UserPath,
    body: AwaitingDocumentIn,
    response: Response,
    _: AdminDep,
    svc: ServicesDep,
) -> SubjectRequest:
    """A request waiting for the requester's ID document (P21: the last resort)."""
    subject = await svc.provisioning.account_id(code, username)
    request, new = await svc.subject_rights.receive(subject, body.kind)
    if not new:
        response.status_code = status.HTTP_200_OK
    return request


@router.post(
    "/tenants/{code}/accounts/{username}/privacy/requests/awaiting-code",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "The same kind of request is open: that one"},
        409: {"description": "No SMS gateway is configured"},
        502: {"description": "The SMS gateway did not take the code; nothing was recorded"},
    },
)
async def receive_privacy_request_by_code(
    code: CodePath,
    username: UserPath,
    body: AwaitingCodeIn,
    response: Response,
    _: AdminDep,
    svc: ServicesDep,
) -> SubjectRequest:
    """A request verified by a code texted to the account's number of record (P21).

    The requester reads the code back to the operator (`.../code` here) or enters it in the
    app's web form (`POST /v1/privacy/requests/{id}/code`); it is valid 15 minutes.
    """
    subject = await svc.provisioning.account_id(code, username)
    request, new = await svc.subject_rights.receive_by_code(subject, body.kind)
    if not new:
        response.status_code = status.HTTP_200_OK
    return request


@router.post(
    "/privacy/requests/{request_id}/code/send",
    responses={
        409: {"description": "No SMS gateway is configured"},
        502: {"description": "The SMS gateway did not take the code"},
    },
)
async def send_code(request_id: IdPath, _: AdminDep, svc: ServicesDep) -> CodeSentOut:
    """A new code for a request waiting for verification (at most 3); the last one is void."""
    return CodeSentOut(expires_at=await svc.subject_rights.send_code(request_id))


@router.post("/privacy/requests/{request_id}/code")
async def confirm_code(
    request_id: IdPath, body: CodeIn, _: AdminDep, svc: ServicesDep
) -> SubjectRequest:
    """The code the requester read back: right, the request is carried out (5 tries)."""
    return await svc.subject_rights.confirm_code(request_id, body.code)


@router.put(
    "/privacy/requests/{request_id}/document",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("image/jpeg", "image/png", "application/pdf")
            },
        }
    },
    responses={413: {"description": "Over 10 MiB"}},
)
async def attach_document(
    request_id: IdPath, request: Request, _: AdminDep, svc: ServicesDep
) -> Response:
    """The requester's ID document: sealed with its own key, kept only until the decision."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_DOCUMENT_BYTES:
            limit = f"document: at most {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB"
            return JSONResponse(error_body("too_large", limit, "document"), status_code=413)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    await svc.subject_rights.attach_document(request_id, media_type, bytes(data))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/privacy/requests/{request_id}/identity")
async def decide_identity(
    request_id: IdPath, body: IdentityDecisionIn, _: AdminDep, svc: ServicesDep
) -> SubjectRequest:
    """Accept or refuse the document; it is destroyed now, whatever the decision."""
    return await svc.subject_rights.decide_identity(
        request_id, accepted=body.accepted, verified_by=body.verified_by
    )


@router.get("/privacy/requests/{request_id}/export")
async def export_for_operator(request_id: IdPath, _: AdminDep, svc: ServicesDep) -> dict[str, Any]:
    """The bundle of a completed access request, for the operator to hand to its subject."""
    return await svc.subject_rights.export_any(request_id)


@router.get("/privacy/requests/overdue")
async def overdue_requests(_: AdminDep, svc: ServicesDep) -> list[SubjectRequest]:
    """Open data-subject requests past their 30 days (P21)."""
    return await svc.subject_rights.overdue()


@router.post("/tenants/{code}/accounts/{username}/death-notice")
async def notice_of_death(
    code: CodePath, username: UserPath, body: DeathNoticeIn, _: AdminDep, svc: ServicesDep
) -> Carried:
    """Carry out the account's post-mortem directive (P20).

    With a hand-over, the answer holds the export bundle and the trustee, given this once and
    stored nowhere; then the account is erased. Under a legal hold the request is rejected and
    nothing changes.
    """
    return await svc.postmortem.notice_of_death(
        code, username, evidence=body.evidence, verified_by=body.verified_by
    )


# -- policy versions and notices (P18) --------------------------------------------------------


@router.post(
    "/policy/versions",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "The version label is taken"}},
)
async def publish_policy(body: PolicyVersionIn, _: AdminDep, svc: ServicesDep) -> PolicyVersion:
    """Publish a version that takes effect after the notice period; then notify."""
    return await svc.policies.publish(body.version, body.summary, body.effective_at, body.url)


@router.get("/policy/versions")
async def list_policies(_: AdminDep, svc: ServicesDep) -> list[PolicyVersion]:
    return await svc.policies.versions()


@router.post("/policy/versions/{version_id}/notify")
async def notify_policy(version_id: IdPath, _: AdminDep, svc: ServicesDep) -> Notified:
    """Tell every account not yet told: by email where possible, else in the app."""
    return await svc.policies.notify(version_id)


@router.get("/policy/versions/{version_id}/notices")
async def policy_notices(version_id: IdPath, _: AdminDep, svc: ServicesDep) -> list[Notice]:
    """Who was told, how and when, and who confirmed."""
    return await svc.policies.acknowledgements(version_id)
