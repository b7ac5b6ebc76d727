"""SES verdict headers: read from the top only, recorded as upstream."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import Message

import pytest

from mailmoat.auth.ses import upstream_verdicts


def msg(*headers: str) -> Message:
    return message_from_bytes(("\r\n".join([*headers, "Subject: x"]) + "\r\n\r\nb").encode(),
                              policy=policy.default)


SES_AR = ("Authentication-Results: amazonses.com; spf=fail (spfCheck: not permitted)"
          " client-ip=198.51.100.1; envelope-from=a@x.example; helo=h; dkim=temperror"
          " header.i=@x.example; dmarc=fail header.from=x.example;")


@pytest.mark.parametrize(("headers", "expected"), [
    ((SES_AR, "X-SES-Spam-Verdict: FAIL", "X-SES-Virus-Verdict: GRAY",
      "Received-SPF: fail (spfCheck: no) client-ip=198.51.100.1;"),
     {"spf": "fail", "dkim": "temperror", "dmarc": "fail", "spam": "fail", "virus": "gray",
      "received_spf": "fail"}),
    # an RFC 8601-clean header is parsed by authres
    (("Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=x.example;"
      " dkim=pass header.d=x.example",), {"spf": "pass", "dkim": "pass"}),
    # a forged SES header below another party's header is not believed
    (("Authentication-Results: mx.other.example; spf=none", SES_AR), {}),
    (("Authentication-Results: amazonses.com; spf=pass",
      SES_AR.replace("spf=fail", "spf=neutral")), {"spf": "pass"}),
    (("Authentication-Results: ;",), {}),  # found by the property test: no authserv-id
    ((), {}),
])
def test_upstream_verdicts(headers: tuple[str, ...], expected: dict[str, str]) -> None:
    assert upstream_verdicts(msg(*headers)) == expected
