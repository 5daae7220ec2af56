"""The file-transfer message body: round trips, Acrobits compatibility, and malformed input."""

from __future__ import annotations

import copy
import json
import os
import re
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from ringfence.files.envelope import decrypt, encrypt
from ringfence.files.transfer import CONTENT_TYPE, Attachment, FileTransfer

KEY = bytes(range(32))
SHA = bytes(range(100, 132))


def attachment(**changes: Any) -> Attachment:
    fields: dict[str, Any] = {
        "url": "https://files.example.org/a/3f2c",
        "size": 20032,
        "key": KEY,
        "sha256": SHA,
        "plain_size": 20000,
        "content_type": "image/jpeg",
        "filename": "beach.jpg",
        "crc32": 12638292,
        "description": "the beach at noon",
        "preview_type": "image/jpeg",
        "preview": b"\xff\xd8\xff tiny jpeg",
    }
    fields.update(changes)
    return Attachment(**fields)


def document() -> dict[str, Any]:
    """A valid message body as a peer would send it."""
    obj: dict[str, Any] = json.loads(
        FileTransfer("Nice pics", (attachment(), attachment(filename=None))).to_json()
    )
    return obj


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/x-acro-filetransfer+json"


def test_round_trip() -> None:
    transfer = FileTransfer(
        "Nice pics ☀️",
        (attachment(), attachment(description=None, preview=None, preview_type=None)),
    )
    assert FileTransfer.from_json(transfer.to_json()) == transfer


def test_the_json_follows_the_acrobits_format() -> None:
    obj = json.loads(FileTransfer("hi", (attachment(),)).to_json())
    assert obj["body"] == "hi"
    (item,) = obj["attachments"]
    assert item == {
        "content-type": "image/jpeg",
        "content-url": "https://files.example.org/a/3f2c",
        "content-size": 20032,
        "filename": "beach.jpg",
        "description": "the beach at noon",
        "encryption-key": KEY.hex(),
        "hash": "12638292",
        "preview": {"content-type": "image/jpeg", "content": "/9j/IHRpbnkganBlZw=="},
        "rf-envelope": 1,
        "rf-sha256": SHA.hex(),
        "rf-plain-size": 20000,
    }


def test_none_valued_optional_keys_are_left_out() -> None:
    bare = attachment(filename=None, description=None, preview=None, preview_type=None)
    (item,) = json.loads(FileTransfer("", (bare,)).to_json())["attachments"]
    assert not {"filename", "description", "preview"} & item.keys()
    assert None not in item.values()


def test_the_key_stays_out_of_repr() -> None:
    assert KEY.hex() not in repr(attachment())
    assert repr(KEY) not in repr(attachment())


def test_unknown_keys_are_ignored_and_acrobits_defaults_apply() -> None:
    obj = document()
    obj["x-future"] = {"anything": [1, 2]}
    obj["attachments"][0]["x-thumbnail-hint"] = "ignored"
    del obj["attachments"][0]["content-type"]
    del obj["attachments"][0]["preview"]["content-type"]
    del obj["body"]
    transfer = FileTransfer.from_json(json.dumps(obj).encode())
    assert transfer.body == ""
    first = transfer.attachments[0]
    assert first.content_type == "image/jpeg"
    assert first.preview_type == "image/jpeg"
    assert first.preview == b"\xff\xd8\xff tiny jpeg"
    assert transfer.attachments[1].filename is None


def test_upper_case_hex_is_accepted() -> None:
    obj = document()
    obj["attachments"][0]["encryption-key"] = KEY.hex().upper()
    assert FileTransfer.from_json(json.dumps(obj).encode()).attachments[0].key == KEY


def test_an_encrypted_file_travels_with_its_message() -> None:
    plaintext = os.urandom(70_000)
    env, key, sha = encrypt(plaintext)
    sent = FileTransfer(
        "",
        (
            Attachment(
                url="https://files.example.org/a/1",
                size=len(env),
                key=key,
                sha256=sha,
                plain_size=len(plaintext),
                content_type="application/pdf",
                filename="report.pdf",
                crc32=zlib.crc32(plaintext),
            ),
        ),
    )
    (received,) = FileTransfer.from_json(sent.to_json()).attachments
    assert received.size == len(env)
    assert decrypt(env, received.key, received.sha256) == plaintext
    assert received.crc32 == zlib.crc32(plaintext)


Mutation = Callable[[dict[str, Any]], None]


def setter(key: str, value: object, index: int = 0) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        obj["attachments"][index][key] = value

    return mutate


def deleter(key: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        del obj["attachments"][0][key]

    return mutate


def top(key: str, value: object) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        obj[key] = value

    return mutate


def many(n: int) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        obj["attachments"] = [copy.deepcopy(obj["attachments"][0]) for _ in range(n)]

    return mutate


MALFORMED: list[tuple[str, Mutation, str]] = [
    ("url missing", deleter("content-url"), "attachments[0].content-url: is missing"),
    ("url ftp", setter("content-url", "ftp://files.example.org/a"), "content-url"),
    ("url javascript", setter("content-url", "javascript:alert(1)"), "content-url"),
    ("url without host", setter("content-url", "https:///a"), "content-url"),
    ("url with space", setter("content-url", "https://a.example/x y"), "content-url"),
    ("url not a string", setter("content-url", 5), "content-url: must be a string"),
    ("size missing", deleter("content-size"), "content-size: is missing"),
    ("size string", setter("content-size", "20032"), "content-size: must be an integer"),
    ("size float", setter("content-size", 20032.0), "content-size: must be an integer"),
    ("size bool", setter("content-size", True), "content-size: must be an integer"),
    ("size negative", setter("content-size", -1), "content-size: cannot be negative"),
    ("plain size negative", setter("rf-plain-size", -5), "rf-plain-size: cannot be negative"),
    ("plain size missing", deleter("rf-plain-size"), "rf-plain-size: is missing"),
    ("key missing", deleter("encryption-key"), "encryption-key: is missing"),
    ("key short", setter("encryption-key", "ab" * 16), "encryption-key: must be 64 hex"),
    ("key 63 chars", setter("encryption-key", KEY.hex()[:63]), "encryption-key"),
    ("key not hex", setter("encryption-key", "zz" * 32), "encryption-key"),
    ("key with spaces", setter("encryption-key", " ".join(["ab"] * 32)), "encryption-key"),
    ("sha missing", deleter("rf-sha256"), "rf-sha256: is missing"),
    ("sha not hex", setter("rf-sha256", "g" * 64), "rf-sha256: must be 64 hex"),
    ("hash missing", deleter("hash"), "hash: is missing"),
    ("hash int", setter("hash", 12638292), "hash: must be a string"),
    ("hash not decimal", setter("hash", "0xC0FFEE"), "hash"),
    ("hash too big", setter("hash", str(2**32)), "hash"),
    ("envelope missing", deleter("rf-envelope"), "rf-envelope: is missing"),
    ("envelope 2", setter("rf-envelope", 2), "rf-envelope: version 2"),
    ("filename int", setter("filename", 7), "filename: must be a string"),
    ("description list", setter("description", ["x"]), "description: must be a string"),
    ("preview not object", setter("preview", "abc"), "preview: must be an object"),
    ("preview bad base64", setter("preview", {"content": "***"}), "preview.content: must be"),
    ("preview no content", setter("preview", {"content-type": "image/png"}), "preview.content"),
    ("second attachment", setter("content-size", -3, index=1), "attachments[1].content-size"),
    ("body too long", top("body", "é" * 40_000), "body: is longer than 65536 bytes"),
    ("body not a string", top("body", 5), "body: must be a string"),
    ("attachments missing", top("attachments", None), "attachments: is missing"),
    ("attachments object", top("attachments", {}), "attachments: must be a list"),
    ("no attachments", top("attachments", []), "attachments: must list 1 to 10"),
    ("eleven attachments", many(11), "attachments: must list 1 to 10 attachments, not 11"),
    ("attachment not object", top("attachments", ["x"]), "attachments[0]: must be an object"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_names_the_field(mutate: Mutation, expected: str) -> None:
    obj = document()
    mutate(obj)
    with pytest.raises(ValueError, match=re.escape(expected)):
        FileTransfer.from_json(json.dumps(obj).encode())


def test_ten_attachments_are_fine() -> None:
    obj = document()
    many(10)(obj)
    assert len(FileTransfer.from_json(json.dumps(obj).encode()).attachments) == 10


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b'"\\ud800"']
)
def test_documents_that_are_not_objects_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="body"):
        FileTransfer.from_json(data)


def test_lone_surrogates_are_refused() -> None:
    obj = document()
    raw = json.dumps(obj).replace('"beach.jpg"', '"\\ud800.jpg"', 1).encode()
    with pytest.raises(ValueError, match=r"attachments\[0\]\.filename"):
        FileTransfer.from_json(raw)


def test_constructor_checks_the_same_rules() -> None:
    with pytest.raises(ValueError, match="encryption-key"):
        attachment(key=bytes(16))
    with pytest.raises(ValueError, match="rf-sha256"):
        attachment(sha256=b"")
    with pytest.raises(ValueError, match="preview"):
        attachment(preview=None)
    with pytest.raises(ValueError, match="hash"):
        attachment(crc32=-1)
    with pytest.raises(ValueError, match="attachments"):
        FileTransfer("", ())
