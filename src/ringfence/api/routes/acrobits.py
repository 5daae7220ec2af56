"""Acrobits-compatible web services, so Cloud Softphone-based apps work unchanged.

External provisioning: set the portal's provisioning web service to
`POST https://HOST/acrobits/provisioning` with post data
`cloud_username=%username%&cloud_password=%password%` (or GET with the same query). The login
is `username@tenant`. The answer is Account XML; a refusal is an `<error><message>` document
whose text the app shows.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response

from ringfence.api.deps import Responses, ServicesDep, source_address
from ringfence.auth.errors import AccountSuspendedError, InvalidCredentialsError, RateLimitedError
from ringfence.provisioning.acrobits import account_xml, error_xml
from ringfence.provisioning.errors import InvalidInputError

router = APIRouter(prefix="/acrobits", tags=["acrobits"])

XML = "application/xml"
RESPONSES: Responses = {
    200: {"content": {XML: {}}, "description": "Account XML"},
    403: {"content": {XML: {}}, "description": "Wrong login or password, or suspended"},
    422: {"content": {XML: {}}, "description": "Login is not username@tenant"},
    429: {"content": {XML: {}}, "description": "Too many failed attempts; see Retry-After"},
}


async def _provision(svc: ServicesDep, request: Request, login: str, password: str) -> Response:
    try:
        account_id = await svc.auth.check_password(login, password, source_address(request))
    except InvalidInputError as exc:
        return Response(error_xml(exc.message), status_code=422, media_type=XML)
    except RateLimitedError as exc:
        retry = str(max(1, round(exc.retry_after_s)))
        return Response(
            error_xml(str(exc)), status_code=429, media_type=XML, headers={"Retry-After": retry}
        )
    except (InvalidCredentialsError, AccountSuspendedError) as exc:
        # Acrobits shows a non-2xx answer's <message>; 403 is what its own samples use.
        return Response(error_xml(str(exc)), status_code=403, media_type=XML)
    account = await svc.provisioning.account_by_id(account_id)
    return Response(account_xml(account, login=login, password=password), media_type=XML)


@router.get("/provisioning", responses=RESPONSES, response_class=Response)
async def provisioning_get(
    request: Request,
    svc: ServicesDep,
    cloud_username: Annotated[str, Query(min_length=1, max_length=320)],
    cloud_password: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    return await _provision(svc, request, cloud_username, cloud_password)


@router.post("/provisioning", responses=RESPONSES, response_class=Response)
async def provisioning_post(
    request: Request,
    svc: ServicesDep,
    cloud_username: Annotated[str, Form(min_length=1, max_length=320)],
    cloud_password: Annotated[str, Form(min_length=1, max_length=128)],
) -> Response:
    return await _provision(svc, request, cloud_username, cloud_password)
