"""What RFC 4475 and RFC 5118 say each SIP torture-test message must do to a receiver.

One `Expectation` per file in `/work/shared/sip-torture/rfc4475/` (50, `test.dat` included) and
`/work/shared/sip-torture/rfc5118/` (12). Outcomes, response codes and reasons come from the
RFC text of the section that presents the message; `why` paraphrases it, now and then
quoting the RFC, and names the exact defect.

Conventions:

* `outcome` is what the parser (or the message validation right above it) must do. `PARSED`
  covers every message the RFC calls well formed or tells a receiver not to break on (all of
  RFC 4475 sections 3.1.1, 3.2, 3.3 and 3.4); the layer above may still refuse it with `status`.
  `REJECTED` covers RFC 4475 section 3.1.2 (invalid messages), RFC 5118 section 4.2 and the
  unreferenced `test.dat`. Where the RFC also allows a liberal receiver to accept a 3.1.2
  message, `why` says so; this table takes the strict reading.
* `status` is the response a registrar or proxy answers a request with. `None` on a `PARSED`
  request means the RFC gives a registrar/proxy no response to send: the request is simply
  processed (forwarded, or answered by the method's own logic). `None` on a `REJECTED`
  request (only `test.dat`) means no response can be addressed (no Via), so it is dropped.
  `None` on a response always: responses are never answered, only processed or dropped.
  Where the RFC names alternatives, `why` lists them and `status` holds the one a
  registrar/proxy would give.
* The extracted facts (`method` ... `body_length`) are filled only for `PARSED` messages, and
  only where the message makes them unambiguous; `None` means "do not assert".
  `request_uri` is the Request-URI text exactly as on the wire. `via_count` counts Via values,
  comma-separated ones separately, over all Via lines (`v` compact form included).
  `body_length` is the body the parser delivers: Content-Length octets when Content-Length is
  given once, otherwise (RFC 2543 style, no Content-Length on a datagram) the rest of the
  datagram.
* RFC 5118 files are judged as the README prescribes: a harness turns LF into CRLF, adds the
  missing blank line (section 4.10 files) and recomputes Content-Length before parsing, so
  each message is judged on its IPv6 content alone; their `body_length` is that of the
  converted message (CRLF line ends), which the recomputed Content-Length equals.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    PARSED = "parsed"  # the parser must accept it (the layer above may still refuse it)
    REJECTED = "rejected"  # the parser (or message validation) must refuse it as malformed


@dataclass(frozen=True)
class Expectation:
    file: str  # e.g. "rfc4475/wsinv.dat"
    section: str  # e.g. "RFC 4475 §3.1.1.1"
    title: str  # the section title from the RFC
    kind: str  # "request" or "response"
    outcome: Outcome
    # The response a UAS/proxy/registrar gives to a request; None when the request is simply
    # processed, and always None for responses (responses are dropped, never answered).
    status: int | None
    why: str  # the RFC's stated expectation and the exact defect, paraphrased
    # Facts the parser must extract when PARSED, for the test to assert on (None: no assertion).
    method: str | None = None  # request method as on the wire
    request_uri: str | None = None  # exact Request-URI text
    call_id: str | None = None
    cseq: tuple[int, str] | None = None
    via_count: int | None = None  # Via values in total (comma-separated values count separately)
    body_length: int | None = None  # body octets the parser delivers (after framing)


_INTMETH = "!interesting-Method0123456789_*+`.%indeed'~"

EXPECTATIONS: tuple[Expectation, ...] = (
    # ---- RFC 4475 §3.1.1: valid messages ---------------------------------------------------
    Expectation(
        file="rfc4475/wsinv.dat",
        section="RFC 4475 §3.1.1.1",
        title="A Short Tortuous INVITE",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Line folding everywhere, LWS around colons and semicolons, escaped quotes in "
            "quoted strings, an empty Subject (s), mixed short/long and odd-case header names, "
            "unknown parameters and headers, leading zeros in Max-Forwards (0068) and CSeq "
            '(0009): "All elements should treat this as a well-formed request." '
            "UnknownHeaderWithUnusualValue (;;,,;;,;) is kept as an opaque value."
        ),
        method="INVITE",
        request_uri="sip:vivekg@chair-dnrc.example.com;unknownparam",
        call_id="wsinv.ndaksdj@192.0.2.1",
        cseq=(9, "INVITE"),
        via_count=3,
        body_length=150,
    ),
    Expectation(
        file="rfc4475/intmeth.dat",
        section="RFC 4475 §3.1.1.2",
        title="Wide Range of Valid Characters",
        kind="request",
        outcome=Outcome.PARSED,
        status=404,
        why=(
            "Every non-alphanumeric token character in the method, branch, tag and an "
            "extension header name, quoted-pair NUL/BEL/DEL in a display name, odd Call-ID "
            "characters (% is no escape there); well formed. A proxy forwards it if this "
            "unusual URI is defined there, otherwise answers 404; endpoints answer 501 with "
            "Allow. Status is the proxy's 404."
        ),
        method=_INTMETH,
        request_uri=(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
            "(doesn't-it)@example.com"
        ),
        call_id="intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        cseq=(139122385, _INTMETH),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/esc01.dat",
        section="RFC 4475 §3.1.1.3",
        title="Valid Use of the % Escaping Mechanism",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "% HEX HEX escapes in the Request-URI userpart (sips:user@example.com embedded), "
            "the From/To userparts and Contact URI parameters: a parser must accept it; the "
            "application treats escapes as the encoded character, never recursively "
            '("value%41" is not "valueA"), and only where the grammar allows "escaped".'
        ),
        method="INVITE",
        request_uri="sip:sips%3Auser%40example.com@example.net",
        call_id="esc01.239409asdfakjkn23onasd0-3234",
        cseq=(234234, "INVITE"),
        via_count=1,
        body_length=150,
    ),
    Expectation(
        file="rfc4475/escnull.dat",
        section="RFC 4475 §3.1.1.4",
        title="Escaped Nulls in URIs",
        kind="request",
        outcome=Outcome.PARSED,
        status=200,
        why=(
            "URIs with %00 in the userpart: well formed, parsers must accept it; unescaping "
            "the AOR must not shorten the username at the NUL. The request registers two "
            "distinct contacts (%00 and %00%00), so a registrar accepts it (200)."
        ),
        method="REGISTER",
        request_uri="sip:example.com",
        call_id="escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        cseq=(14398234, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/esc02.dat",
        section="RFC 4475 §3.1.1.5",
        title="Use of % When It Is Not an Escape",
        kind="request",
        outcome=Outcome.PARSED,
        status=501,
        why=(
            "RE%47IST%45R is an unknown method, NOT REGISTER; the display names are literally "
            '"%Z%45"; C%6Fntact is an unknown header, so there are two Contact values, not '
            "three. A parser should accept it; a proxy forwards or rejects by Request-URI, an "
            "endpoint (a registrar is a UAS) rejects it with 501."
        ),
        method="RE%47IST%45R",
        request_uri="sip:registrar.example.com",
        call_id="esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        cseq=(29344, "RE%47IST%45R"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/lwsdisp.dat",
        section="RFC 4475 §3.1.1.6",
        title="Message with No LWS between Display Name and <",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "From: caller<sip:caller@example.com> has no LWS between token and <, invalid per "
            'the RFC 3261 grammar but a known specification bug: "Elements should accept this '
            'request as well formed." Display name is "caller".'
        ),
        method="OPTIONS",
        request_uri="sip:user@example.com",
        call_id="lwsdisp.1234abcd@funky.example.com",
        cseq=(60, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/longreq.dat",
        section="RFC 4475 §3.1.1.7",
        title="Long Values in Header Fields",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Well-formed request with very long display name, URI and header parameter names "
            "and values (a very long From tag), a long Call-ID token, an unknown header with a "
            "long name, and 34 Via values under every case variant of Via/v."
        ),
        method="INVITE",
        request_uri="sip:user@example.com",
        call_id=("longreq.one" + "really" * 20 + "longcallid"),
        cseq=(3882340, "INVITE"),
        via_count=34,
        body_length=150,
    ),
    Expectation(
        file="rfc4475/dblreq.dat",
        section="RFC 4475 §3.1.1.8",
        title="Extra Trailing Octets in a UDP Datagram",
        kind="request",
        outcome=Outcome.PARSED,
        status=200,
        why=(
            "One REGISTER (Content-Length: 0) in a UDP datagram followed by octets that look "
            "like an INVITE: per RFC 3261 §18.3 they are noise to be ignored. The REGISTER is "
            "handled normally (a registrar's 200) and the INVITE octets never appear in a "
            "forwarded request."
        ),
        method="REGISTER",
        request_uri="sip:example.com",
        call_id="dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        cseq=(8, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/semiuri.dat",
        section="RFC 4475 §3.1.1.9",
        title="Semicolon-Separated Parameters in URI User Part",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "The Request-URI userpart holds ;par= with an escaped @: receivers accept it as "
            'well formed and the user part is "user;par=u@example.net". Accept is '
            "folded over three lines."
        ),
        method="OPTIONS",
        request_uri="sip:user;par=u%40example.net@example.com",
        call_id="semiuri.0ha0isndaksdj",
        cseq=(8, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/transports.dat",
        section="RFC 4475 §3.1.1.10",
        title="Varied and Unknown Transport Types",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Via values with UDP, SCTP, TLS, UNKNOWN and TCP transports: parsers must accept "
            "it as well formed, and elements process it as if the 2nd and later values named "
            "a known transport."
        ),
        method="OPTIONS",
        request_uri="sip:user@example.com",
        call_id="transports.kijh4akdnaqjkwendsasfdj",
        cseq=(60, "OPTIONS"),
        via_count=5,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/mpart01.dat",
        section="RFC 4475 §3.1.1.11",
        title="Multipart MIME Message",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "MESSAGE with a multipart/mixed body whose second part is binary and contains "
            "0x00 octets: receivers must frame it by Content-Length (553), and parsers must "
            "accept it even if the application does not support the body type."
        ),
        method="MESSAGE",
        request_uri="sip:kumiko@example.org",
        call_id="3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
        cseq=(1, "MESSAGE"),
        via_count=1,
        body_length=553,
    ),
    Expectation(
        file="rfc4475/unreason.dat",
        section="RFC 4475 §3.1.1.12",
        title="Unusual Reason Phrase",
        kind="response",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "200 response whose reason phrase is not OK but unreserved and non-ASCII UTF-8 "
            "characters, which Reason-Phrase allows: well formed, a parser must accept it."
        ),
        call_id="unreason.1234ksdfak3j2erwedfsASdf",
        cseq=(35, "INVITE"),
        via_count=1,
        body_length=154,
    ),
    Expectation(
        file="rfc4475/noreason.dat",
        section="RFC 4475 §3.1.1.13",
        title="Empty Reason Phrase",
        kind="response",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            'Status line "SIP/2.0 100 " with an empty reason phrase: well formed, a parser '
            "must accept it. The SP after the code is required (without it the message could "
            "be rejected, though a liberal receiver would accept it)."
        ),
        call_id="noreason.asndj203insdf99223ndf",
        cseq=(35, "INVITE"),
        via_count=1,
        body_length=0,
    ),
    # ---- RFC 4475 §3.1.2: invalid messages -------------------------------------------------
    Expectation(
        file="rfc4475/badinv01.dat",
        section="RFC 4475 §3.1.2.1",
        title="Extraneous Header Field Separators",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "Via (192.0.2.15;;,;,,) has extra semicolons and commas without parameters or "
            "values, Contact extra semicolons: syntactically invalid, an element should "
            "respond 400 Bad Request."
        ),
    ),
    Expectation(
        file="rfc4475/clerr.dat",
        section="RFC 4475 §3.1.2.2",
        title="Content Length Larger Than Message",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "Content-Length 9999 but only 154 body octets follow. Over UDP (as here) the "
            "receiver should respond 400 Bad Request; on a stream it can only wait for more "
            "data and close the connection if none comes."
        ),
    ),
    Expectation(
        file="rfc4475/ncl.dat",
        section="RFC 4475 §3.1.2.3",
        title="Negative Content-Length",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "Content-Length: -999. An element should respond with an error (the RFC names no "
            "code; 400 for a malformed request) and discard the rest of the datagram; on TCP "
            "the framing error is unrecoverable and the connection should close. The value "
            "must never be used as a counter or index."
        ),
    ),
    Expectation(
        file="rfc4475/scalar02.dat",
        section="RFC 4475 §3.1.2.4",
        title="Request Scalar Fields with Overlarge Values",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "CSeq 36893488147419103232 exceeds 2**32-1, Max-Forwards 300 exceeds 255, Expires "
            "and the Contact expires parameter exceed 2**32-1: respond 400 Bad Request because "
            "of the CSeq (a bad Max-Forwards alone could be treated as absent, bad expiries "
            "alone as the default 3600)."
        ),
    ),
    Expectation(
        file="rfc4475/scalarlg.dat",
        section="RFC 4475 §3.1.2.5",
        title="Response Scalar Fields with Overlarge Values",
        kind="response",
        outcome=Outcome.REJECTED,
        status=None,
        why=(
            "503 response with CSeq 9292394834772304023312 (> 2**32-1), an unreasonably large "
            "Retry-After and a Warning code of more than 3 digits (1812): an element receiving "
            "it simply discards it."
        ),
    ),
    Expectation(
        file="rfc4475/quotbal.dat",
        section="RFC 4475 §3.1.2.6",
        title="Unterminated Quoted String in Display Name",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            'To: "Mr. J. User <sip:j.user@example.com> never closes its quote: an element '
            "should return 400 Bad Request (one could try to infer the closing quote, with "
            "care)."
        ),
    ),
    Expectation(
        file="rfc4475/ltgtruri.dat",
        section="RFC 4475 §3.1.2.7",
        title="<> Enclosing Request-URI",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "Request-URI written as <sip:user@example.com>: invalid. It is reasonable always to "
            "reject it with 400 Bad Request (a liberal element may ignore the brackets but must "
            "not forward them)."
        ),
    ),
    Expectation(
        file="rfc4475/lwsruri.dat",
        section="RFC 4475 §3.1.2.8",
        title="Malformed SIP Request-URI (embedded LWS)",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            'Illegal LWS inside the Request-URI ("sip:user@example.com; lr"): an element '
            "should respond 400 Bad Request (it could ignore the LWS where that is unambiguous, "
            "as for sip)."
        ),
    ),
    Expectation(
        file="rfc4475/lwsstart.dat",
        section="RFC 4475 §3.1.2.9",
        title="Multiple SP Separating Request-Line Elements",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "Two SP between the Request-Line elements (INVITE  sip:...  SIP/2.0): acceptable "
            "to reject as malformed (400); a liberal element may ignore the extra SP but must "
            "not forward them."
        ),
    ),
    Expectation(
        file="rfc4475/trws.dat",
        section="RFC 4475 §3.1.2.10",
        title="SP Characters at End of Request-Line",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "Two SP between SIP/2.0 and the CRLF ending the Request-Line: acceptable to reject "
            "as malformed (400); a liberal element may ignore them but must not forward them."
        ),
    ),
    Expectation(
        file="rfc4475/escruri.dat",
        section="RFC 4475 §3.1.2.11",
        title="Escaped Headers in SIP Request-URI",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "The SIP Request-URI carries an escaped header (?Route=%3Csip:example.com%3E): "
            "malformed, acceptable to reject with 400 Bad Request (a liberal element ignores "
            "the headers; a proxy must not forward them nor turn them into real headers)."
        ),
    ),
    Expectation(
        file="rfc4475/baddate.dat",
        section="RFC 4475 §3.1.2.12",
        title="Invalid Time Zone in Date Header Field",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            'Date: ... 16:00:00 EST, but RFC 3261 allows only "GMT" (not UT, UTC or UCT): '
            "acceptable to reject as malformed (400), though the RFC adds an element should "
            "not unless Date matters to it; a liberal one ignores or converts the date."
        ),
    ),
    Expectation(
        file="rfc4475/regbadct.dat",
        section="RFC 4475 §3.1.2.13",
        title="Failure to Enclose name-addr URI in <>",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "REGISTER whose Contact URI has an escaped header (?Route=...) but no <>; such a "
            "URI must be in name-addr form. Reasonable to respond 400 Bad Request (inferring "
            "the brackets works here but not in general)."
        ),
    ),
    Expectation(
        file="rfc4475/badaspec.dat",
        section="RFC 4475 §3.1.2.14",
        title="Spaces within addr-spec",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "To: ... < sip:t.watson@example.org > has spaces inside the <> around the "
            "addr-spec: malformed; parsers must not break, and rejecting with 400 Bad Request "
            "is reasonable (a liberal element may ignore the spaces)."
        ),
    ),
    Expectation(
        file="rfc4475/baddn.dat",
        section="RFC 4475 §3.1.2.15",
        title="Non-token Characters in Display Name",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            'Unquoted display names with non-token characters ("Bell, Alexander", '
            '"Watson, Thomas"): reasonable always to reject with 400 Bad Request. (The archived '
            "file also ends without the blank line that closes the header section.)"
        ),
    ),
    Expectation(
        file="rfc4475/badvers.dat",
        section="RFC 4475 §3.1.2.16",
        title="Unknown Protocol Version",
        kind="request",
        outcome=Outcome.REJECTED,
        status=505,
        why=(
            "Request-Line (and Via) say SIP/7.0: malformed to an RFC 3261 element, which "
            "should respond 505 Version Not Supported."
        ),
    ),
    Expectation(
        file="rfc4475/mismatch01.dat",
        section="RFC 4475 §3.1.2.17",
        title="Start Line and CSeq Method Mismatch",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "Request-Line method OPTIONS but CSeq method INVITE: any element receiving it "
            "responds 400 Bad Request."
        ),
    ),
    Expectation(
        file="rfc4475/mismatch02.dat",
        section="RFC 4475 §3.1.2.18",
        title="Unknown Method with CSeq Method Mismatch",
        kind="request",
        outcome=Outcome.REJECTED,
        status=501,
        why=(
            "Unknown method NEWMETHOD with CSeq method INVITE: respond 501 Not Implemented; "
            "400 is also acceptable, but 501 (particularly at proxies) is more future-proof."
        ),
    ),
    Expectation(
        file="rfc4475/bigcode.dat",
        section="RFC 4475 §3.1.2.19",
        title="Overlarge Response Code",
        kind="response",
        outcome=Outcome.REJECTED,
        status=None,
        why=(
            "Status code 4294967301 is larger than 699 (and not 3 digits): an element "
            "receiving this response should simply drop it."
        ),
    ),
    # ---- RFC 4475 §3.2: transaction layer ---------------------------------------------------
    Expectation(
        file="rfc4475/badbranch.dat",
        section="RFC 4475 §3.2.1",
        title="Missing Transaction Identifier",
        kind="request",
        outcome=Outcome.PARSED,
        status=400,
        why=(
            "Via branch is the bare magic cookie z9hG4bK with no identifier: a parser must not "
            "break. The element could reject it with 400 (preferably statelessly) or fall back "
            "to RFC 2543-style transaction matching; status is the 400 alternative."
        ),
        method="OPTIONS",
        request_uri="sip:user@example.com",
        call_id="badbranch.sadonfo23i420jv0as0derf3j3n",
        cseq=(8, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    # ---- RFC 4475 §3.3: application layer ---------------------------------------------------
    Expectation(
        file="rfc4475/insuf.dat",
        section="RFC 4475 §3.3.1",
        title="Missing Required Header Fields",
        kind="request",
        outcome=Outcome.PARSED,
        status=400,
        why=(
            "INVITE with no Call-ID, From or To (nor Max-Forwards): an element must not break "
            "on the missing information; ideally it responds 400 Bad Request. call_id is None "
            "because there is none."
        ),
        method="INVITE",
        request_uri="sip:user@example.com",
        cseq=(193942, "INVITE"),
        via_count=1,
        body_length=152,
    ),
    Expectation(
        file="rfc4475/unkscm.dat",
        section="RFC 4475 §3.3.2",
        title="Request-URI with Unknown Scheme",
        kind="request",
        outcome=Outcome.PARSED,
        status=416,
        why=(
            "Request-URI scheme nobodyKnowsThisScheme: a parser must accept it as well formed; "
            "an element rejects it with 416 Unsupported URI Scheme (and must not route on the "
            "To header instead)."
        ),
        method="OPTIONS",
        request_uri="nobodyKnowsThisScheme:totallyopaquecontent",
        call_id="unkscm.nasdfasser0q239nwsdfasdkl34",
        cseq=(3923423, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/novelsc.dat",
        section="RFC 4475 §3.3.3",
        title="Request-URI with Known but Atypical Scheme",
        kind="request",
        outcome=Outcome.PARSED,
        status=416,
        why=(
            "Request-URI with the IANA-registered but atypical scheme soap.beep: must parse. "
            "An element that never accepts this scheme in a Request-URI returns 416; one that "
            "accepts some such URIs returns 404 for the others. A registrar/proxy never does: "
            "416."
        ),
        method="OPTIONS",
        request_uri="soap.beep://192.0.2.103:3002",
        call_id="novelsc.asdfasser0q239nwsdfasdkl34",
        cseq=(3923423, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/unksm2.dat",
        section="RFC 4475 §3.3.4",
        title="Unknown URI Schemes in Header Fields",
        kind="request",
        outcome=Outcome.PARSED,
        status=400,
        why=(
            "REGISTER with isbn: in To, http: in From and name: in Contact: syntactically "
            "valid, parsers must not fail. Proxies treat it like any request; a registrar "
            "rejects it with 400 Bad Request since To must hold a SIP or SIPS URI as the AOR."
        ),
        method="REGISTER",
        request_uri="sip:example.com",
        call_id="unksm2.daksdj@hyphenated-host.example.com",
        cseq=(234902, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/bext01.dat",
        section="RFC 4475 §3.3.5",
        title="Proxy-Require and Require",
        kind="request",
        outcome=Outcome.PARSED,
        status=420,
        why=(
            "Require and Proxy-Require name option tags nothing supports: any element responds "
            "420 Bad Extension with an Unsupported header listing the tags from Require or "
            "Proxy-Require, depending on the role it responds in."
        ),
        method="OPTIONS",
        request_uri="sip:user@example.com",
        call_id="bext01.0ha0isndaksdj",
        cseq=(8, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/invut.dat",
        section="RFC 4475 §3.3.6",
        title="Unknown Content-Type",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "INVITE with a body of type application/unknownformat: syntactically valid, a "
            "parser must not fail. A proxy processes it like any other INVITE (status None); "
            "an endpoint would reject it with 415 Unsupported Media Type."
        ),
        method="INVITE",
        request_uri="sip:user@example.com",
        call_id="invut.0ha0isndaksdjadsfij34n23d",
        cseq=(235448, "INVITE"),
        via_count=1,
        body_length=40,
    ),
    Expectation(
        file="rfc4475/regaut01.dat",
        section="RFC 4475 §3.3.7",
        title="Unknown Authorization Scheme",
        kind="request",
        outcome=Outcome.PARSED,
        status=401,
        why=(
            "REGISTER with Authorization scheme NoOneKnowsThisScheme: well formed, a parser "
            "must not fail. A proxy forwards the header unmodified; a registrar that does not "
            "authenticate ignores it (200); one that does (ours) rejects with 401 and a new "
            "challenge in a scheme it understands; a non-registrar endpoint answers 405."
        ),
        method="REGISTER",
        request_uri="sip:example.com",
        call_id="regaut01.0ha0isndaksdj",
        cseq=(9338, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/multi01.dat",
        section="RFC 4475 §3.3.8",
        title="Multiple Values in Single Value Required Fields",
        kind="request",
        outcome=Outcome.PARSED,
        status=400,
        why=(
            "Two values each of Call-ID, To, From, Max-Forwards and CSeq: an element must not "
            "break and responds 400 Bad Request. call_id and cseq are None because the "
            "message has two of each."
        ),
        method="INVITE",
        request_uri="sip:user@company.com",
        via_count=1,
        body_length=154,
    ),
    Expectation(
        file="rfc4475/mcl01.dat",
        section="RFC 4475 §3.3.9",
        title="Multiple Content-Length Values",
        kind="request",
        outcome=Outcome.PARSED,
        status=400,
        why=(
            "Two conflicting Content-Length values (13 and 5), so the body's extent is unknown, "
            "as with an invalid Content-Length: respond with an error (400), discard the rest "
            "of the UDP datagram; on TCP the framing is lost and the connection closes."
        ),
        method="OPTIONS",
        request_uri="sip:user@example.com",
        call_id="mcl01.fhn2323orihawfdoa3o4r52o3irsdf",
        cseq=(15932, "OPTIONS"),
        via_count=1,
    ),
    Expectation(
        file="rfc4475/bcast.dat",
        section="RFC 4475 §3.3.10",
        title="200 OK Response with Broadcast Via Header Field Value",
        kind="response",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "200 OK whose 2nd Via sent-by is 255.255.255.255: well formed, parsers must not "
            "fail. An endpoint discards it; a proxy should drop it rather than forward it to "
            "the broadcast address."
        ),
        call_id="bcast.0384840201234ksdfak3j2erwedfsASdf",
        cseq=(35, "INVITE"),
        via_count=2,
        body_length=154,
    ),
    Expectation(
        file="rfc4475/zeromf.dat",
        section="RFC 4475 §3.3.11",
        title="Max-Forwards of Zero",
        kind="request",
        outcome=Outcome.PARSED,
        status=483,
        why=(
            "Legal OPTIONS with Max-Forwards: 0. A proxy that would forward it must not, and "
            "responds 483 Too Many Hops; an endpoint processes it as if the value were still "
            "positive."
        ),
        method="OPTIONS",
        request_uri="sip:user@example.com",
        call_id="zeromf.jfasdlfnm2o2l43r5u0asdfas",
        cseq=(39234321, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/cparam01.dat",
        section="RFC 4475 §3.3.12",
        title="REGISTER with a Contact Header Parameter",
        kind="request",
        outcome=Outcome.PARSED,
        status=200,
        why=(
            "Contact without <> ends in ;unknownparam, which is a contact-param, not a URI "
            "parameter. The REGISTER should succeed, and neither the response nor later "
            "fetches may show unknownparam as a url-parameter of the binding."
        ),
        method="REGISTER",
        request_uri="sip:example.com",
        call_id="cparam01.70710@saturn.example.com",
        cseq=(2, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/cparam02.dat",
        section="RFC 4475 §3.3.13",
        title="REGISTER with a url-parameter",
        kind="request",
        outcome=Outcome.PARSED,
        status=200,
        why=(
            "Contact URI inside <> carries an unknown URI parameter: the REGISTER should "
            "succeed and a later retrieval must include unknownparam as a url-parameter."
        ),
        method="REGISTER",
        request_uri="sip:example.com",
        call_id="cparam02.70710@saturn.example.com",
        cseq=(3, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/regescrt.dat",
        section="RFC 4475 §3.3.14",
        title="REGISTER with a URL Escaped Header",
        kind="request",
        outcome=Outcome.PARSED,
        status=200,
        why=(
            "Contact (compact m) URI in <> carries an escaped Route header: the REGISTER "
            "should succeed and a later retrieval must include the escaped Route header in the "
            "binding's contact URI."
        ),
        method="REGISTER",
        request_uri="sip:example.com",
        call_id="regescrt.k345asrl3fdbv@192.0.2.1",
        cseq=(14398234, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc4475/sdp01.dat",
        section="RFC 4475 §3.3.15",
        title="Unacceptable Accept Offering",
        kind="request",
        outcome=Outcome.PARSED,
        status=406,
        why=(
            "INVITE whose Accept (text/nobodyKnowsThis) excludes application/sdp, so the "
            "response may not carry SDP: the recipient could answer 406 Not Acceptable with a "
            "Warning 399, or 400 Bad Request since INVITE UAs must support SDP."
        ),
        method="INVITE",
        request_uri="sip:user@example.com",
        call_id="sdp01.ndaksdj9342dasdd",
        cseq=(8, "INVITE"),
        via_count=1,
        body_length=150,
    ),
    # ---- RFC 4475 §3.4: backward compatibility ----------------------------------------------
    Expectation(
        file="rfc4475/inv2543.dat",
        section="RFC 4475 §3.4.1",
        title="INVITE with RFC 2543 Syntax",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Legal RFC 2543 INVITE, to be accepted by RFC 3261 elements keeping backwards "
            "compatibility: no Via branch, no From tag, no Max-Forwards and no Content-Length "
            "(the body is all octets of the datagram after the blank line)."
        ),
        method="INVITE",
        request_uri="sip:UserB@example.com",
        call_id="inv2543.1717@ift.client.example.com",
        cseq=(56, "INVITE"),
        via_count=1,
        body_length=105,
    ),
    # ---- RFC 4475 archive only ---------------------------------------------------------------
    Expectation(
        file="rfc4475/test.dat",
        section="RFC 4475 (archive only, no section)",
        title="(unreferenced: in the RFC's archive, named by no section; classified here)",
        kind="request",
        outcome=Outcome.REJECTED,
        status=None,
        why=(
            "Not from the RFC text; own classification. The Request-Line lacks the SIP-Version "
            '("INVITE sip:alan@jasomi.com"), the line "Foobar roobar" has no colon, and Via and '
            "CSeq are missing (To/From are bare non-URIs): not a SIP message. With no Via a "
            "response cannot be addressed, so it is dropped."
        ),
    ),
    # ---- RFC 5118 (after LF->CRLF, blank-line and Content-Length repair) ----------------------
    Expectation(
        file="rfc5118/ipv6-good",
        section="RFC 5118 §4.1",
        title="Valid SIP Message with an IPv6 Reference",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Well formatted per the RFC 3261 grammar: a bracketed IPv6 reference in the "
            "Request-URI, the Via sent-by and the Contact."
        ),
        method="REGISTER",
        request_uri="sip:[2001:db8::10]",
        call_id="SSG9559905523997077@hlau_4100",
        cseq=(98176, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc5118/ipv6-bad",
        section="RFC 5118 §4.2",
        title="Invalid SIP Message with an IPv6 Reference",
        kind="request",
        outcome=Outcome.REJECTED,
        status=400,
        why=(
            "The Request-URI sip:2001:db8::10 lacks the mandated [ and ] around the IPv6 "
            "reference: not well formed; a receiver should respond 400 Bad Request."
        ),
    ),
    Expectation(
        file="rfc5118/port-ambiguous",
        section="RFC 5118 §4.3",
        title="Port Ambiguous in a SIP URI",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "sip:[2001:db8::10:5070] is well formed to a parser but will not yield the desired "
            "result: the host is the IPv6 address 2001:db8::10:5070 and there is no port; a "
            "port must appear after the closing ]."
        ),
        method="REGISTER",
        request_uri="sip:[2001:db8::10:5070]",
        call_id="SSG9559905523997077@hlau_4100",
        cseq=(98176, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc5118/port-unambiguous",
        section="RFC 5118 §4.4",
        title="Port Unambiguous in a SIP URI",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "sip:[2001:db8::10]:5070 leaves no doubt where the address ends and the port "
            "(5070) begins: well formatted per RFC 3261."
        ),
        method="REGISTER",
        request_uri="sip:[2001:db8::10]:5070",
        call_id="SSG9559905523997077@hlau_4100",
        cseq=(98176, "REGISTER"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc5118/via-received-param-with-delim",
        section="RFC 5118 §4.5",
        title="IPv6 Reference Delimiters in Via Header",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "received=[2001:db8::9:255] is bracketed, invalid under a strict reading of the RFC "
            "3261 grammar, yet robust implementations must parse the top Via and go on; a "
            "received parameter must be accepted with or without [ ]."
        ),
        method="BYE",
        request_uri="sip:[2001:db8::10]",
        call_id="SSG9559905523997077@hlau_4100",
        cseq=(321, "BYE"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc5118/via-received-param-no-delim",
        section="RFC 5118 §4.5",
        title="IPv6 Reference Delimiters in Via Header",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "received=2001:db8::9:255 without [ ] is valid per the RFC 3261 grammar; a "
            "receiver must parse it successfully."
        ),
        method="OPTIONS",
        request_uri="sip:[2001:db8::10]",
        call_id="SSG95523997077@hlau_4100",
        cseq=(921, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc5118/ipv6-in-sdp",
        section="RFC 5118 §4.6",
        title="SIP Request with IPv6 Addresses in Session Description Protocol (SDP) Body",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Valid and well formed; the IPv6 addresses in the SDP o= and c= lines carry no [ ]. "
            "The archive's Content-Length (268) is wrong; the harness's recomputed value is the "
            "CRLF body length."
        ),
        method="INVITE",
        request_uri="sip:user@[2001:db8::10]",
        call_id="SSG9559905523997077@hlau_4100",
        cseq=(8612, "INVITE"),
        via_count=1,
        body_length=251,
    ),
    Expectation(
        file="rfc5118/mult-ip-in-header",
        section="RFC 5118 §4.7",
        title="Multiple IP Addresses in SIP Headers",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Valid and well formed: the Via list mixes IPv6 references (one with port 6050 "
            "after the ]) and an IPv4 address, and the bottom Via has received=192.0.2.200."
        ),
        method="BYE",
        request_uri="sip:user@host.example.net",
        call_id="997077@lau_4100",
        cseq=(89187, "BYE"),
        via_count=3,
        body_length=0,
    ),
    Expectation(
        file="rfc5118/mult-ip-in-sdp",
        section="RFC 5118 §4.8",
        title="Multiple IP Addresses in SDP",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Valid and well formed: each SDP media line has its own c= line, one IPv4 and one "
            "IPv6. The archive's Content-Length (181) is wrong; the recomputed one is used."
        ),
        method="INVITE",
        request_uri="sip:user@[2001:db8::10]",
        call_id="SSG9559905523997077@hlau_4100",
        cseq=(8912, "INVITE"),
        via_count=1,
        body_length=189,
    ),
    Expectation(
        file="rfc5118/ipv4-mapped-ipv6",
        section="RFC 5118 §4.9",
        title="IPv4-Mapped IPv6 Addresses",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "Well formed: IPv4-mapped IPv6 addresses (::ffff:192.0.2.x) in both Vias (the top "
            "one with port 19823 after the ]), the Contact and the SDP; a receiver must be "
            "prepared to parse them. The archive's Content-Length (236) is recomputed."
        ),
        method="INVITE",
        request_uri="sip:user@example.com",
        call_id="SSG9559905523997077@hlau_4100",
        cseq=(612, "INVITE"),
        via_count=2,
        body_length=245,
    ),
    Expectation(
        file="rfc5118/ipv6-bug-abnf-3-colons",
        section="RFC 5118 §4.10",
        title="IPv6 Reference Bug in RFC 3261 ABNF",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "[2001:db8:::192.0.2.1] has an extra colon that RFC 3261's ABNF (from RFC 2373) "
            "admits but RFC 4291 does not; by the Robustness Principle an implementation must "
            "tolerate it, reading 2001:db8::192.0.2.1 (a proxy may re-serialize it with two)."
        ),
        method="OPTIONS",
        request_uri="sip:user@[2001:db8:::192.0.2.1]",
        call_id="G9559905523997077@hlau_4100",
        cseq=(689, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
    Expectation(
        file="rfc5118/ipv6-correct-abnf-2-colons",
        section="RFC 5118 §4.10",
        title="IPv6 Reference Bug in RFC 3261 ABNF",
        kind="request",
        outcome=Outcome.PARSED,
        status=None,
        why=(
            "[2001:db8::192.0.2.1] is the correct IPv6 reference syntax (RFC 4291) for the same "
            "address; it must be accepted too."
        ),
        method="OPTIONS",
        request_uri="sip:user@[2001:db8::192.0.2.1]",
        call_id="G9559905523997077@hlau_4100",
        cseq=(689, "OPTIONS"),
        via_count=1,
        body_length=0,
    ),
)
