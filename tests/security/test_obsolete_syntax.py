"""Obsolete syntax (issue 19, item 10): RFC 5322 §4 lists forms receivers must accept. Each goes
through the whole local gateway (SMTP on loopback → pipeline → Maildir) and must come out
delivered, with its Subject read and an ARC seal that verifies on the delivered bytes.

Before the fix, `Subject : x` (obs-optional, §4.5) turned the rest of the header block into body
text and made dkimpy raise inside sealing: the message was held with REWRITE_FAILED."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Gateway
from tests.conftest import free_port, make_settings
from tests.unit.auth.helpers import Key, make_rsa_key

SENDER_SELECTOR = "s1"
SENDER_DOMAIN = "sender.example"

# (case, header lines above the common ones, the Subject the log must show)
OBSOLETE_FORMS: list[tuple[str, list[bytes], str]] = [
    ("obs-optional: space before colon", [b"Subject : space before colon"], "space before colon"),
    ("obs-optional: tab before colon", [b"Subject\t: tab before colon"], "tab before colon"),
    ("obs-optional: spaces before colon on several fields",
     [b"Subject   : several", b"X-Note : noted", b"Comments : commented"], "several"),
    ("obs-FWS: folding with an all-blank line", [b"Subject: folded", b" \t", b"  over lines"],
     "folded over lines"),
    ("obs-date: two-digit year and alphabetic zone",
     [b"Subject: old date", b"Date: 30 Nov 26 10:00 EST"], "old date"),
    ("obs-date: military zone, no day of week", [b"Subject: zone z", b"Date: 30 Nov 2026 10:00:00 Z"],
     "zone z"),
    ("obs-day-of-week with comments", [b"Subject: cfws date",
                                       b"Date: (sent) Mon , 30 Nov 2026 10:00:00 (local) +0900"], "cfws date"),
    ("obs-phrase: period in a display name", [b"Subject: phrase",
                                               b"Reply-To: John Q. Public <jqp@sender.example>"], "phrase"),
    ("obs-route in an address", [b"Subject: route",
                                  b"Reply-To: <@relay.example,@r2.example:jqp@sender.example>"], "route"),
    ("obs-local-part with CFWS", [b"Subject: local part",
                                   b"Reply-To: john . (middle) doe@sender.example"], "local part"),
    ("obs-domain with CFWS", [b"Subject: domain", b"Reply-To: jqp@sender . example"], "domain"),
    ("obs-addr-list with empty members", [b"Subject: empty members",
                                           b"Cc: , carol@sender.example,, dave@sender.example"], "empty members"),
    ("obs-bcc: empty", [b"Subject: empty bcc", b"Bcc: ,"], "empty bcc"),
    ("obs-id: message id with odd left part", [b"Subject: odd id",
                                                b'Message-ID: <"odd id"@sender.example>'], "odd id"),
    ("obs-in-reply-to with phrases", [b"Subject: reply",
                                       b"In-Reply-To: Your message of <x@sender.example>"], "reply"),
    ("obs-received without a date", [b"Subject: old received",
                                      b"Received: from a.sender.example by b.sender.example"], "old received"),
    ("obs-fields: a repeated Subject", [b"Subject: first", b"Subject: second"], "first"),
    ("obs-utext: control characters in unstructured text", [b"Subject: ctl\x01here"], "ctl\x01here"),
]


@pytest.fixture(scope="module")
def sender_key() -> Key:
    return make_rsa_key()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, sender_key: Key) -> Iterator[Gateway]:
    tmp_path = tmp_path_factory.mktemp("obsolete")
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps({
        SENDER_DOMAIN: {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        f"{SENDER_SELECTOR}._domainkey.{SENDER_DOMAIN}": {"TXT": [sender_key.record]},
    }), encoding="utf-8")
    gw = Gateway(bootstrap(make_settings(tmp_path, smtp_port=free_port(), dns_zone=zone)))
    gw.start()
    yield gw
    gw.stop()


def _our_seal_dns(data_dir: Path) -> dkim.DNSFunction:
    """Our seal's public key, as `make run` asks the operator to publish it (arc/public.txt)."""
    record = (data_dir / "arc" / "public.txt").read_text(encoding="ascii")
    name, _, rest = record.partition(" IN TXT ")
    value = rest.strip().strip('"').encode("ascii")

    def lookup(qname: bytes | str, timeout: int = 5) -> bytes:
        asked = qname.decode() if isinstance(qname, bytes) else qname
        return value if asked.rstrip(".") == name.rstrip(".") else b""

    return lookup


def _message(n: int, lines: list[bytes]) -> bytes:
    head = [b"From: Alice <alice@sender.example>", b"To: alice@example.test"]
    if not any(line.lower().startswith(b"message-id") for line in lines):
        head.append(b"Message-ID: <obs-%d@sender.example>" % n)
    if not any(line.lower().startswith(b"date") for line in lines):
        head.append(b"Date: Mon, 30 Nov 2026 10:00:00 +0900")
    return b"\r\n".join(lines + head) + b"\r\n\r\nHello.\r\n"


def _deliver(gateway: Gateway, raw: bytes) -> tuple[bytes, str]:
    with smtplib.SMTP("127.0.0.1", gateway.runtime.settings.smtp_port, timeout=60) as smtp:
        smtp.sendmail("alice@sender.example", ["alice@example.test"], raw)
    assert gateway.worker is not None and gateway.worker.drain(timeout=60)
    record = gateway.runtime.services.log.recent(1)[0]
    box = gateway.runtime.settings.data_dir / "maildir" / "example.test" / "alice" / "new"
    delivered = [p for p in box.iterdir() if p.name.startswith(f"{record.id}.")] if box.exists() else []
    assert record.state == "delivered", (record.state, record.error)
    assert len(delivered) == 1
    return delivered[0].read_bytes(), record.id


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("case", "lines", "subject"), OBSOLETE_FORMS, ids=[c[0] for c in OBSOLETE_FORMS])
def test_obsolete_form_is_delivered_with_a_valid_seal(gateway: Gateway, case: str, lines: list[bytes],
                                                      subject: str) -> None:
    raw = _message(OBSOLETE_FORMS.index((case, lines, subject)), lines)
    delivered, record_id = _deliver(gateway, raw)
    record = gateway.runtime.services.log.get(record_id)
    assert record is not None
    report = json.loads(record.report) if isinstance(record.report, str) else record.report
    symbols = {f["symbol"] for f in report["findings"]}
    assert not symbols & {"REWRITE_FAILED", "HELD", "MIME_PARSE_FAILED"}, symbols
    assert report["subject"] == subject
    cv, results, reason = dkim.arc_verify(delivered, dnsfunc=_our_seal_dns(gateway.runtime.settings.data_dir))
    assert cv == dkim.CV_Pass, (reason, results)


@pytest.mark.timeout(120)
def test_a_relaxed_dkim_signature_over_space_before_colon_still_verifies(
        gateway: Gateway, sender_key: Key) -> None:
    unsigned = _message(100, [b"Subject : signed with an obsolete field"])
    # Signed as a sender's MTA would sign the bytes it sent: relaxed canonicalisation drops the
    # white space before the colon, so the signature covers "subject:signed ...".
    signature = dkim.sign(unsigned.replace(b"Subject :", b"Subject:"), SENDER_SELECTOR.encode(),
                          SENDER_DOMAIN.encode(), sender_key.private, canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"to", b"subject"])
    delivered, record_id = _deliver(gateway, signature + unsigned)
    record = gateway.runtime.services.log.get(record_id)
    assert record is not None
    report = json.loads(record.report) if isinstance(record.report, str) else record.report
    assert report["auth"]["dkim"] == "pass", report["auth"]["details"]["dkim"]
    assert report["subject"] == "signed with an obsolete field"
    assert dkim.arc_verify(delivered, dnsfunc=_our_seal_dns(gateway.runtime.settings.data_dir))[0] == dkim.CV_Pass
