"""Bytes to messages: one datagram at a time, or a byte stream framed by Content-Length.

This layer checks only what framing needs: the start line (RFC 3261 §7.1, §7.2), the header
line syntax (§7.3, folded lines unfolded), the body's extent (§7.5, §18.3, §20.14). What the
header values mean is checked above it (`ringfence.sip.validation`), so that a message with a
bad header can still be answered (a 400 copies the request's Via, From, To, Call-ID, CSeq).

Limits keep a hostile peer from making us buffer without end: a header block larger than
`max_header_bytes` or with more than `max_headers` lines is refused (513, RFC 3261 §21.5.14),
and so is a body over `max_body_bytes` on a stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ringfence.sip.errors import ParseError
from ringfence.sip.message import Headers, Message, Request, Response

MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 256
#: 4 MiB of message body, then room for the headers: the largest MESSAGE we relay.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: The largest UDP payload (RFC 768 length field, less the IP and UDP headers).
MAX_DATAGRAM_BYTES = 65_507

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - a grammar rule, not a secret
# Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP between the three
# (RFC 4475 §3.1.2.9, §3.1.2.10), and a Request-URI holds no whitespace (§3.1.2.8).
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^\s]+) (SIP/[0-9]+\.[0-9]+)", re.IGNORECASE)
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase; Status-Code = 3DIGIT.
_STATUS_LINE = re.compile(r"(SIP/[0-9]+\.[0-9]+) ([0-9]{3})(?: ([^\r\n]*))?", re.IGNORECASE)
# message-header = field-name HCOLON field-value; HCOLON = *( SP / HTAB ) ":" SWS
_HEADER_LINE = re.compile(rf"({_TOKEN})[ \t]*:[ \t]*(.*)", re.DOTALL)
_DIGITS = re.compile(r"[0-9]+")
# The same, for a whole block of unfolded CRLF-terminated lines at once (`_parse_plain_head`):
# the value without the whitespace around it.
# (Greedy up to the last non-blank character: a lazy value would retry the end at every one.)
_PLAIN_HEADER = re.compile(
    rf"^({_TOKEN})[ \t]*:[ \t]*((?:[^\r\n]*[^\r\n \t])?)[ \t]*\r?$", re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """RFC 5626 §3.5.1: a double CRLF on a stream; the answer is a single CRLF (pong)."""


def _decode_head(head: bytes) -> str:
    try:
        # RFC 3261 §7.3.1: header text is UTF-8 (display names, reason phrases).
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"header block is not UTF-8 (byte {exc.start})") from exc


def _parse_head(head: bytes, *, max_headers: int) -> tuple[str, list[tuple[str, str]]]:
    text = _decode_head(head)
    fast = _parse_plain_head(text, max_headers)
    if fast is not None:
        return fast
    return _parse_lines(text, max_headers)


def _parse_lines(text: str, max_headers: int) -> tuple[str, list[tuple[str, str]]]:
    """The header block line by line: unfolds continuation lines, names a bad line."""
    lines = text.split("\r\n")
    start = lines[0]
    fields: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # RFC 3261 §7.3.1: a line starting with whitespace continues the previous one;
            # the fold (CRLF and leading whitespace) is equivalent to a single SP.
            if not fields:
                raise ParseError("continuation line before any header")
            fields[-1].append(line.strip(" \t"))
            continue
        fields.append([line])
        if len(fields) > max_headers:
            raise ParseError(f"more than {max_headers} header lines", status_hint=513)
    headers: list[tuple[str, str]] = []
    for parts in fields:
        line = " ".join(part for part in parts if part) if len(parts) > 1 else parts[0]
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise ParseError(f"malformed header line {line[:40]!r}")
        headers.append((match.group(1), match.group(2).rstrip(" \t")))
    return start, headers


def _parse_plain_head(text: str, max_headers: int) -> tuple[str, list[tuple[str, str]]] | None:
    """The header block in one pass of `_PLAIN_HEADER`, when nothing in it needs the slow path.

    That is: every line ends in CRLF (no lone CR or LF), none is folded, there are at most
    `max_headers`, and every line matches. Otherwise None, and `_parse_head` goes line by
    line, to unfold or to name the line that is wrong. Both give the same fields.
    """
    newlines = text.count("\n")
    if newlines > max_headers or newlines != text.count("\r") or newlines != text.count("\r\n"):
        return None
    if "\r\n " in text or "\r\n\t" in text:
        return None
    start, _, rest = text.partition("\r\n")
    if not rest:
        return (start, []) if not newlines else None
    fields = _PLAIN_HEADER.findall(rest)
    if len(fields) != newlines:
        return None  # a line that does not match: the slow path names it
    return start, fields


def _start(start: str, headers: Headers, body: bytes, raw: bytes) -> Message:
    if request := _REQUEST_LINE.fullmatch(start):
        method, uri, version = request.groups()
        return Request(method, uri, headers, body, version.upper(), raw)
    if status := _STATUS_LINE.fullmatch(start):
        version, code, reason = status.groups()
        return Response(int(code), reason or "", headers, body, version.upper(), raw)
    raise ParseError(f"malformed start line {start[:60]!r}")


def _content_length(values: list[str]) -> int | None:
    """The one Content-Length, or None when absent or given several times."""
    if len(values) != 1:
        return None
    value = values[0].strip()
    if not _DIGITS.fullmatch(value) or len(value) > 10:
        # RFC 4475 §3.1.2.3 (negative), §3.1.2.5 (overlarge): not a length at all.
        raise ParseError(f"Content-Length {value[:20]!r} is not a length")
    return int(value)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ParseError("no blank line after the header block")
    return data[:end], data[end + 4 :]


def parse_datagram(
    data: bytes,
    *,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_headers: int = MAX_HEADERS,
) -> Message:
    """Parse one message from a datagram (UDP, or one WebSocket message, RFC 7118 §5).

    Content-Length, when given once, delimits the body and anything after it is ignored
    (RFC 4475 §3.1.1.11); absent or given several times, the datagram's end does (RFC 3261
    §18.3; the duplicate is refused above this layer).

    Raises:
        ParseError: not a SIP message, or over the limits.
    """
    if len(data) > MAX_DATAGRAM_BYTES:
        raise ParseError(f"datagram of {len(data)} bytes", status_hint=513)
    head, rest = _split_head(data)
    if len(head) > max_header_bytes:
        raise ParseError(f"header block over {max_header_bytes} bytes", status_hint=513)
    start, fields = _parse_head(head, max_headers=max_headers)
    headers = Headers(fields)
    length = _content_length(headers.get_all("Content-Length"))
    if length is None:
        body = rest
    elif length > len(rest):
        # RFC 4475 §3.1.2.2: more octets announced than the datagram holds.
        raise ParseError(f"Content-Length {length} exceeds the {len(rest)} bytes received")
    else:
        body = rest[:length]
    return _start(start, headers, body, data[: len(head) + 4 + len(body)])


class StreamParser:
    """Frames messages out of a byte stream (TCP, TLS): feed bytes, take events.

    A `ParseError` from `next_event` is fatal for the connection: framing is lost, so the
    transport closes it (RFC 3261 §18.3).
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._buffer = bytearray()
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_body_bytes = max_body_bytes

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next_event(self) -> Message | KeepAlivePing | None:
        """The next complete message or keep-alive, or None until more bytes arrive.

        Raises:
            ParseError: the stream does not carry SIP; close the connection.
        """
        buffer = self._buffer
        while buffer.startswith(b"\r\n"):
            if buffer.startswith(b"\r\n\r\n"):
                del buffer[:4]
                return KeepAlivePing()
            if b"\r\n\r\n".startswith(buffer):
                return None  # maybe the first half of a ping
            # RFC 3261 §7.5: CRLFs before a start line are ignored (a pong, say).
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self._max_header_bytes:
                raise ParseError(f"header block over {self._max_header_bytes} bytes", 513)
            return None
        if end > self._max_header_bytes:
            raise ParseError(f"header block over {self._max_header_bytes} bytes", 513)
        start, fields = _parse_head(bytes(buffer[:end]), max_headers=self._max_headers)
        headers = Headers(fields)
        values = headers.get_all("Content-Length")
        if not values:
            raise ParseError("no Content-Length on a stream transport (RFC 3261 §18.3)")
        length = _content_length(values)
        if length is None:
            raise ParseError("several Content-Length values on a stream transport")
        if length > self._max_body_bytes:
            raise ParseError(f"body of {length} bytes over {self._max_body_bytes}", 413)
        total = end + 4 + length
        if len(buffer) < total:
            return None
        raw = bytes(buffer[:total])
        del buffer[:total]
        return _start(start, headers, raw[end + 4 :], raw)
