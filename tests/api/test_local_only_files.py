"""Promise P10: avatars and other local-only files never leave the device.

The mechanism is an absence: no endpoint takes a file from the app. These tests hold the
API to it as it grows. Every request body the OpenAPI document declares is structured data
(JSON, or the form Acrobits apps post); the binary bodies are the ID document an operator
uploads (P21, admin only, sealed and destroyed at the decision) and the attachment a user
sends someone, which the service takes only as an envelope it cannot open (P9). And no
handler reads a raw body behind the document's back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ringfence.api.routes
from ringfence.runtime import Runtime

STRUCTURED = {"application/json", "application/x-www-form-urlencoded"}
ID_DOCUMENT = ("PUT", "/admin/v1/privacy/requests/{request_id}/document")
ATTACHMENT = ("PUT", "/v1/files/{file_id}/content")


@pytest.mark.promise("P10")
def test_no_endpoint_takes_a_file_from_the_app(runtime: Runtime) -> None:
    spec = runtime.app().openapi()
    bodies = {
        (method.upper(), path): set(operation["requestBody"]["content"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "requestBody" in operation
    }
    assert bodies, "the document declares request bodies"
    files = {key: types - STRUCTURED for key, types in bodies.items() if types - STRUCTURED}
    assert files == {
        ID_DOCUMENT: {"image/jpeg", "image/png", "application/pdf"},
        ATTACHMENT: {"application/vnd.ringfence.envelope"},
    }
    assert ID_DOCUMENT[1].startswith("/admin/")
    operation = spec["paths"][ID_DOCUMENT[1]]["put"]
    assert operation["security"], "the ID document route needs the admin token"


@pytest.mark.promise("P10")
def test_no_handler_reads_a_raw_body_but_the_id_document() -> None:
    readers = [
        (source.name, function.name, node.func.attr)
        for source in sorted(Path(next(iter(ringfence.api.routes.__path__))).glob("*.py"))
        for function in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"body", "stream", "form"}
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "request"
    ]
    assert sorted(set(readers)) == [
        ("admin.py", "attach_document", "stream"),
        ("files.py", "upload", "stream"),
    ]
