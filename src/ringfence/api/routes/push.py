"""Push instances over HTTPS: a device reports its push tokens, lists and deletes them.

The app reports on every start (`PUT`, idempotent); each report renews the instance for the
account's push instance max age (P3). With a push mode other than `push` the report is
refused with 403 and nothing is stored (P4). `DELETE` erases at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from ringfence.api.deps import (
    AccountDep,
    PrincipalDep,
    Responses,
    ServicesDep,
    feature_route,
    is_confidential,
)
from ringfence.api.schemas import PushInstanceIn, PushInstanceOut
from ringfence.provisioning.errors import InsecureTransportError, InvalidInputError
from ringfence.provisioning.features import Feature
from ringfence.pushgw.instances import InstanceReport, PushInstance, PushService, SipAccount
from ringfence.pushgw.traces import CallTrace

router = APIRouter(prefix="/v1/push", tags=["push"])

ERRORS: Responses = {
    401: {"description": "Missing or invalid credentials"},
    422: {"description": "A field is invalid"},
}
Selector = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9:._~-]{1,128}$",
        description="Which account on which installation: chosen by the app, stable",
    ),
]


def instance_out(instance: PushInstance) -> PushInstanceOut:
    report = instance.report
    return PushInstanceOut(
        selector=report.selector,
        service=report.service.value,
        app_id=report.app_id,
        has_call_token=report.call_token is not None,
        has_other_token=report.other_token is not None,
        sandbox=report.sandbox,
        sip_instance=report.sip_instance,
        sip_aor=report.sip_account.aor if report.sip_account else None,
        created_at=instance.created_at,
        updated_at=instance.updated_at,
        expires_at=instance.expires_at,
    )


@router.put(
    "/instances/{selector}",
    responses={
        **ERRORS,
        201: {"description": "A new instance"},
        403: {
            "description": "Push is not this account's background mode (P4), or a SIP "
            "account came over plain HTTP (P2)"
        },
        409: {"description": "The account holds the most instances it may"},
    },
    **feature_route(Feature.PUSH),
)
async def report_instance(
    selector: Selector,
    body: PushInstanceIn,
    account: AccountDep,
    request: Request,
    response: Response,
    svc: ServicesDep,
) -> PushInstanceOut:
    """Keep this device's push tokens for the account's max age, renewed by each report.

    Overlay mode: `sip_account` is the account on the tenant's PBX, which ringfence keeps
    registered there until the instance ends.
    """
    sip_account = None
    if body.sip_account is not None:
        if not is_confidential(request):
            raise InsecureTransportError(
                "sip_account: SIP account details are accepted over HTTPS only (P2)",
                field="sip_account",
            )
        if account.tenant.upstream is None:
            raise InvalidInputError(
                "sip_account: this tenant has no upstream PBX (it is not in overlay mode)",
                field="sip_account",
            )
        given = body.sip_account
        sip_account = SipAccount(
            given.username, given.domain, given.auth_username, given.password, given.ha1
        )
    report = InstanceReport(
        selector=selector,
        service=PushService(body.service),
        app_id=body.app_id,
        call_token=body.call_token,
        other_token=body.other_token,
        sandbox=body.sandbox,
        sip_instance=body.sip_instance,
        sip_account=sip_account,
    )
    instance, new = await svc.push_instances.report(account.id, account.config, report)
    response.status_code = status.HTTP_201_CREATED if new else status.HTTP_200_OK
    return instance_out(instance)


@router.get("/instances", responses=ERRORS)
async def list_instances(who: PrincipalDep, svc: ServicesDep) -> list[PushInstanceOut]:
    """The account's live instances; tokens are never given back."""
    return [instance_out(i) for i in await svc.push_instances.of(who.account_id)]


@router.delete(
    "/instances/{selector}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ERRORS, 404: {"description": "No instance with this selector"}},
)
async def delete_instance(selector: Selector, who: PrincipalDep, svc: ServicesDep) -> Response:
    """Erase the instance at once: its key is destroyed, then its row (P3)."""
    await svc.push_instances.delete(who.account_id, selector)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/traces", responses=ERRORS)
async def call_traces(who: PrincipalDep, svc: ServicesDep) -> list[CallTrace]:
    """Why a call was missed: the calls of the last 7 days that waited for a sleeping device.

    Newest first, step by step: pushes sent and answered, devices back, how it ended.
    """
    return await svc.push_traces.of(who.account_id)
