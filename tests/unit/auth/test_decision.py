"""DESIGN §5 decision table."""

from __future__ import annotations

import pytest

from mailmoat.auth.decision import decide


@pytest.mark.parametrize(("spf", "dkim", "dmarc", "policy", "crashed", "warn", "defang"), [
    ("pass", "pass", "pass", "reject", False, False, False),
    ("none", "none", "none", None, False, False, False),
    ("softfail", "none", "none", None, False, False, False),
    ("temperror", "temperror", "temperror", None, False, False, False),
    ("fail", "none", "none", None, False, True, True),
    ("pass", "fail", "pass", "reject", False, True, True),
    ("fail", "none", "fail", "reject", False, True, True),
    ("pass", "none", "fail", "none", False, True, False),  # DMARC alone, p=none
    ("pass", "none", "fail", "quarantine", False, True, True),
    ("fail", "none", "fail", "none", False, True, True),  # not the only failure
    ("pass", "pass", "pass", None, True, True, True),  # a crashed check fails closed
])
def test_decision(spf: str, dkim: str, dmarc: str, policy: str | None, crashed: bool,
                  warn: bool, defang: bool) -> None:
    d = decide(spf=spf, dkim=dkim, dmarc=dmarc, dmarc_policy=policy, check_failed=crashed)
    assert (d.warn, d.defang) == (warn, defang)
