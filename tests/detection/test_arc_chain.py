"""ARC chain validation by class (issue 20 item 3; RFC 8617 §4.2, §5.2; the classes of the
public ARC test suite's validation scenarios, built here with dkimpy's arc_sign and edits).

Any ARC header field means there is a chain to validate: a set with a field missing, a field
twice, a gap, an instance above 50, an unnumbered field, or a seal with h= is a failed chain,
never "no chain".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest

from mailmoat.adapters.dns import ZoneFileResolver
from mailmoat.auth import arc
from mailmoat.context import Envelope
from mailmoat.settings import Settings
from tests.unit.auth.helpers import Key, make_rsa_key, message

try:  # before the composition root moved to mailmoat.bootstrap (so the old commit runs these)
    from mailmoat.runtime import bootstrap  # type: ignore[attr-defined]
except ImportError:
    from mailmoat.bootstrap import bootstrap  # type: ignore[no-redef]

RELAYS = ("relay1.example", "relay2.example", "relay3.example")


@pytest.fixture(scope="module")
def key() -> Key:
    return make_rsa_key()


def zone(key: Key) -> dict[str, Any]:
    return {f"arc._domainkey.{relay}": {"TXT": [key.record]} for relay in RELAYS}


def seal(raw: bytes, key: Key, relay: str, cv: str = "") -> bytes:
    """raw with one more ARC set, sealed by `relay` over its own Authentication-Results
    (RFC 8617 §5.1); `cv` is what that relay found for the chain before it (arc=…)."""
    said = f"; arc={cv}" if cv else ""
    raw = f"Authentication-Results: {relay}; spf=pass smtp.mailfrom=sender.example{said}\r\n" \
          .encode() + raw
    headers = dkimpy.arc_sign(raw, b"arc", relay.encode(), key.private, relay.encode())
    assert headers, "dkimpy refused to seal"
    return b"".join(headers) + raw


def chain(key: Key, sets: int) -> bytes:
    raw = seal(message(), key, RELAYS[0])
    for n in range(1, sets):
        raw = seal(raw, key, RELAYS[n], cv="pass")
    return raw


def drop(raw: bytes, name: str, instance: int) -> bytes:
    """raw without the `name` field of ARC set `instance` (its folded lines too)."""
    pattern = rb"(?im)^" + re.escape(name.encode()) + rb":[^\r\n]*\bi=" + \
        str(instance).encode() + rb";[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*"
    out, count = re.subn(pattern, b"", raw, count=1)
    assert count == 1, f"no {name} i={instance}"
    return out


def field(raw: bytes, name: str, instance: int) -> bytes:
    match = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[^\r\n]*\bi=" +
                      str(instance).encode() + rb";[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", raw)
    assert match, f"no {name} i={instance}"
    return match.group(0)


def renumber(raw: bytes, old: int, new: int) -> bytes:
    """Every field of set `old` given i=`new` (signatures then no longer match, as an
    attacker's renumbering would)."""
    return re.sub(rb"(?im)^(arc-[a-z-]+:\s*(?:[^\r\n]*?[ ;])?i=)" + str(old).encode() + rb";",
                  rb"\g<1>" + str(new).encode() + b";", raw)


def with_cv_fail_at_2(key: Key) -> bytes:
    """Set 1 broken by a change in transit, then relay2 seals with cv=fail (its honest view)."""
    broken = seal(message(), key, RELAYS[0]).replace(b"Friday", b"Monday")
    return seal(broken, key, RELAYS[1], cv="fail")


def as_with_h_tag(key: Key) -> bytes:
    raw = chain(key, 1)
    seal1 = field(raw, "ARC-Seal", 1)
    return raw.replace(seal1, seal1.replace(b"i=1;", b"i=1; h=from:to:subject;", 1))


def unnumbered_extra_seal(key: Key) -> bytes:
    """A valid chain plus an ARC-Seal with no i=: dkimpy skips such a field unseen."""
    raw = chain(key, 1)
    stray = field(raw, "ARC-Seal", 1).replace(b"i=1; ", b"", 1)
    return stray + raw


# (class, build(key) -> raw, auth.arc)
CASES: list[tuple[str, Callable[[Key], bytes], str]] = [
    ("no ARC fields", lambda k: message(), "none"),
    ("valid chain, one set", lambda k: chain(k, 1), "pass"),
    ("valid chain, three sets", lambda k: chain(k, 3), "pass"),
    ("AS missing, i=1 (AMS + AAR only)", lambda k: drop(chain(k, 1), "ARC-Seal", 1), "fail"),
    ("AS missing, i=2 of 2", lambda k: drop(chain(k, 2), "ARC-Seal", 2), "fail"),
    ("AS missing, i=1 of 2", lambda k: drop(chain(k, 2), "ARC-Seal", 1), "fail"),
    ("AMS missing, i=1", lambda k: drop(chain(k, 1), "ARC-Message-Signature", 1), "fail"),
    ("AMS missing, i=1 of 2", lambda k: drop(chain(k, 2), "ARC-Message-Signature", 1), "fail"),
    ("AAR missing, i=1", lambda k: drop(chain(k, 1), "ARC-Authentication-Results", 1), "fail"),
    ("AAR missing, i=2 of 2",
     lambda k: drop(chain(k, 2), "ARC-Authentication-Results", 2), "fail"),
    ("lone AMS", lambda k: field(chain(k, 1), "ARC-Message-Signature", 1) + message(), "fail"),
    ("lone AAR",
     lambda k: field(chain(k, 1), "ARC-Authentication-Results", 1) + message(), "fail"),
    ("duplicate AS for i=1",
     lambda k: field(chain(k, 1), "ARC-Seal", 1) + chain(k, 1), "fail"),
    ("duplicate set i=1", lambda k: (lambda r: renumber(r, 2, 1))(chain(k, 2)), "fail"),
    ("gap: sets i=1 and i=3", lambda k: (lambda r: renumber(r, 2, 3))(chain(k, 2)), "fail"),
    ("gap: only i=2", lambda k: (lambda r: renumber(r, 1, 2))(chain(k, 1)), "fail"),
    ("instance above 50", lambda k: (lambda r: renumber(r, 1, 51))(chain(k, 1)), "fail"),
    ("cv=fail in a later seal", with_cv_fail_at_2, "fail"),
    ("cv=pass claimed at i=1", lambda k: chain(k, 1).replace(b"cv=none", b"cv=pass", 1), "fail"),
    ("AS with an h= tag", as_with_h_tag, "fail"),
    ("ARC-Seal without i= beside a valid set", unnumbered_extra_seal, "fail"),
    ("body changed after sealing", lambda k: chain(k, 1).replace(b"Friday", b"Monday"), "fail"),
]


@pytest.mark.parametrize(("case", "build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_arc_chain_class(case: str, build: Callable[[Key], bytes], expected: str,
                         key: Key) -> None:
    got = arc.verify_chain(build(key), ZoneFileResolver(zone(key)))
    assert got.result == expected, f"{case}: {got.result} ({got.detail})"


def test_seal_missing_through_the_gateway(key: Key, tmp_path: Path) -> None:
    """The issue's sample end to end: AMS and AAR for i=1, no AS → auth.arc = fail, ARC_FAIL."""
    path = tmp_path / "arc-zone.json"
    path.write_text(json.dumps(zone(key)), encoding="utf-8")
    runtime = bootstrap(Settings(mode="test", dns_zone=path), data_dir=tmp_path / "var")
    raw = drop(chain(key, 1), "ARC-Seal", 1)
    ctx = runtime.analyse(raw, Envelope(rcpt_to=["bob@example.test"]), stages=["authenticate"])
    assert ctx.auth.arc == "fail"
    assert ctx.has("ARC_FAIL")
