"""Free text that privacy records require: present, bounded, printable (lines and tabs allowed)."""

from __future__ import annotations

from ringfence.provisioning.errors import InvalidInputError

#: Longest accepted text: names and references, then descriptions and legal wording.
MAX_SHORT = 200
MAX_TEXT = 4000


def required_text(field: str, value: str, limit: int) -> str:
    """`value` stripped of surrounding blanks.

    Raises:
        InvalidInputError: it is empty, longer than `limit`, or holds control characters
            other than line breaks and tabs (the error names `field`).
    """
    value = value.strip()
    if not value:
        raise InvalidInputError(f"{field}: required", field=field)
    if len(value) > limit or any(not (c.isprintable() or c in "\n\t") for c in value):
        raise InvalidInputError(f"{field}: at most {limit} printable characters", field=field)
    return value
