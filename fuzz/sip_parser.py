"""atheris (libFuzzer) target: no input may make the SIP parsers or validation raise anything
but the core's own errors, or hang.

Usage: python fuzz/sip_parser.py [libFuzzer options] CORPUS_DIR...  (`make fuzz` for long runs;
`scripts/check` runs a bounded one, seeded with the RFC 4475 / RFC 5118 messages).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from ringfence.sip.errors import SIPError
    from ringfence.sip.message import Request
    from ringfence.sip.parser import StreamParser, parse_datagram
    from ringfence.sip.validation import check_request, check_response


def test_one_input(data: bytes) -> None:
    try:
        message = parse_datagram(data)
    except SIPError:
        message = None
    if message is not None:
        if isinstance(message, Request):
            check_request(message, supported=frozenset({"outbound", "path"}))
        else:
            check_response(message)
    parser = StreamParser()
    # Feed in two chunks, so that framing across reads is exercised too.
    half = len(data) // 2
    for chunk in (data[:half], data[half:]):
        parser.receive_data(chunk)
        try:
            while parser.next_event() is not None:
                pass
        except SIPError:
            return


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
