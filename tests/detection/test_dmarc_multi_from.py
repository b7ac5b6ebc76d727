"""DMARC through the gateway's authenticate stage (issue 20 item 4): several author domains
(RFC 7489 §6.6.1, the strictest policy), a From with no domain and malformed records
(permerror with DMARC_PERMERROR), and RFC 9091's np= for non-existent subdomains.

DNS is tests/fixtures/dmarc-multi-from-zone.json. No message is signed and there is no client
IP unless a case gives one, so DMARC fails for every domain with a record except pass.example,
whose SPF passes for 203.0.113.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailmoat.context import Envelope, MessageContext
from mailmoat.settings import Settings
from tests.unit.auth.helpers import message

try:  # before the composition root moved to mailmoat.bootstrap (so the old commit runs these)
    from mailmoat.runtime import bootstrap  # type: ignore[attr-defined]
except ImportError:
    from mailmoat.bootstrap import bootstrap  # type: ignore[no-redef]

ZONE = Path(__file__).resolve().parents[1] / "fixtures" / "dmarc-multi-from-zone.json"
PASSING = {"client_ip": "203.0.113.5", "helo": "mx.pass.example",
           "mail_from": "bounce@pass.example"}


@pytest.fixture
def authenticate(tmp_path: Path) -> Any:
    runtime = bootstrap(Settings(mode="test", dns_zone=ZONE), data_dir=tmp_path / "var")

    def run(raw: bytes, **envelope: str) -> MessageContext:
        env = Envelope(rcpt_to=["bob@example.test"], **envelope)  # type: ignore[arg-type]
        return runtime.analyse(raw, env, stages=["authenticate"])

    return run


def two_from_lines(first: str, second: str) -> bytes:
    return message(from_addr=second, extra=[f"From: {first}"])


# (class, raw, envelope, auth.dmarc, auth.dmarc_policy, symbol expected)
MULTI_FROM: list[tuple[str, bytes, dict[str, str], str, str | None, str]] = [
    ("p=none first, p=reject second", message(from_addr="a@example.org, b@example.com"), {},
     "fail", "reject", "DMARC_FAIL"),
    ("p=reject first, p=none second", message(from_addr="b@example.com, a@example.org"), {},
     "fail", "reject", "DMARC_FAIL"),
    ("p=none and p=quarantine", message(from_addr="a@example.org, q@quarantine.example"), {},
     "fail", "quarantine", "DMARC_FAIL"),
    ("three domains, reject last",
     message(from_addr="a@example.org, q@quarantine.example, b@example.com"), {},
     "fail", "reject", "DMARC_FAIL"),
    ("two From lines, p=none then p=reject", two_from_lines("a@example.org", "b@example.com"),
     {}, "fail", "reject", "DMARC_FAIL"),
    ("one passes, one fails p=none", message(from_addr="p@pass.example, a@example.org"),
     PASSING, "fail", "none", "DMARC_FAIL"),
    ("one passes, the other p=reject fails",
     message(from_addr="p@pass.example, b@example.com"), PASSING, "fail", "reject", "DMARC_FAIL"),
    ("a pass and a From without a domain", message(from_addr="p@pass.example, alice"), PASSING,
     "permerror", None, "DMARC_PERMERROR"),
    ("a p=reject failure beats a malformed record",
     message(from_addr="x@badp.example, b@example.com"), {}, "fail", "reject", "DMARC_FAIL"),
]

NO_DOMAIN_OR_MALFORMED: list[tuple[str, str, dict[str, str], str, str | None, str]] = [
    ("From: undisclosed-recipients:;", "undisclosed-recipients:;", {}, "permerror", None,
     "DMARC_PERMERROR"),
    ("From: bare local part", "alice", {}, "permerror", None, "DMARC_PERMERROR"),
    ("From: <>", "<>", {}, "permerror", None, "DMARC_PERMERROR"),
    ("From: name <alice@>", "Alice <alice@>", {}, "permerror", None, "DMARC_PERMERROR"),
    ("v=DMARC1 without p=", "x@nop.example", {}, "permerror", None, "DMARC_PERMERROR"),
    ("unknown p= value", "x@badp.example", {}, "permerror", None, "DMARC_PERMERROR"),
    ("v= not the first tag", "x@vlate.example", {}, "permerror", None, "DMARC_PERMERROR"),
    ("unknown sp= value", "x@badsp.example", {}, "permerror", None, "DMARC_PERMERROR"),
    ("unknown np= value", "x@badnp.example", {}, "permerror", None, "DMARC_PERMERROR"),
    ("subdomain under a malformed record", "x@mail.badp.example", {}, "permerror", None,
     "DMARC_PERMERROR"),
    # RFC 7489 §6.6.3 step 6: no valid p= but a valid rua → read as p=none (not an error).
    ("no p= but a rua (step 6)", "x@nop-rua.example", {}, "fail", "none", "DMARC_FAIL"),
]

NP: list[tuple[str, str, str]] = [
    ("NXDOMAIN subdomain, np= published", "x@ghost.np.example", "reject"),
    ("NODATA for A, AAAA and MX, np= published", "x@txtonly.np.example", "reject"),
    ("subdomain with an A record", "x@real.np.example", "quarantine"),
    ("subdomain with only an MX", "x@mailonly.np.example", "quarantine"),
    ("existence unknown (timeouts): not proof of non-existence", "x@slow.np.example",
     "quarantine"),
    ("the organisational domain itself", "x@np.example", "none"),
    ("NXDOMAIN subdomain, no np=: sp=", "x@ghost.spnp.example", "none"),
    ("NXDOMAIN subdomain, no np= or sp=: p=", "x@ghost.onlyp.example", "quarantine"),
]


@pytest.mark.parametrize(("case", "raw", "envelope", "result", "policy", "symbol"), MULTI_FROM,
                         ids=[c[0] for c in MULTI_FROM])
def test_several_from_domains_strictest_policy(authenticate: Any, case: str, raw: bytes,
                                               envelope: dict[str, str], result: str,
                                               policy: str | None, symbol: str) -> None:
    ctx = authenticate(raw, **envelope)
    assert (ctx.auth.dmarc, ctx.auth.dmarc_policy) == (result, policy), ctx.auth.details
    assert ctx.has(symbol) and ctx.has("FROM_MULTIPLE")
    if policy in ("reject", "quarantine"):  # DESIGN §5: banner and neutralised links
        assert ctx.auth.warn and ctx.auth.defang


@pytest.mark.parametrize(("case", "from_addr", "envelope", "result", "policy", "symbol"),
                         NO_DOMAIN_OR_MALFORMED, ids=[c[0] for c in NO_DOMAIN_OR_MALFORMED])
def test_no_domain_and_malformed_records(authenticate: Any, case: str, from_addr: str,
                                         envelope: dict[str, str], result: str,
                                         policy: str | None, symbol: str) -> None:
    ctx = authenticate(message(from_addr=from_addr), **envelope)
    assert (ctx.auth.dmarc, ctx.auth.dmarc_policy) == (result, policy), ctx.auth.details
    assert ctx.has(symbol)


def test_permerror_is_not_a_pass(authenticate: Any) -> None:
    """A passing author domain next to one with no domain does not make the message a pass:
    the allow-lists' authenticated From (policy.authenticated_senders) needs a pass."""
    ctx = authenticate(message(from_addr="p@pass.example, undisclosed-recipients:;"), **PASSING)
    assert ctx.auth.dmarc == "permerror"
    assert "DMARC_PERMERROR" in {f.symbol for f in ctx.findings}


@pytest.mark.parametrize(("case", "from_addr", "policy"), NP, ids=[c[0] for c in NP])
def test_np_for_non_existent_subdomains(authenticate: Any, case: str, from_addr: str,
                                        policy: str) -> None:
    ctx = authenticate(message(from_addr=from_addr))
    assert (ctx.auth.dmarc, ctx.auth.dmarc_policy) == ("fail", policy), ctx.auth.details
