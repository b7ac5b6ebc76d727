"""Production mode refuses to start without what protection depends on.

Checked: an antivirus that answers PING, a libmagic that can name file types, a provisioned
ARC sealing key, and no test fake among the adapters. A fake would report "clean" and switch
protection off without a trace, so every test fake must say what it is with a class
attribute `fake = True` (classes named InMemory* and Fake* are taken as fakes as well).
"""

from __future__ import annotations

from collections.abc import Mapping

from mailmoat.scan import filetype

FAKE_PREFIXES = ("InMemory", "Fake")
TEST_PACKAGES = frozenset({"tests", "conftest"})
# What a process may need; one that runs every stage (local) needs all, a Lambda function only
# what its own work uses (only the scan function scans, only the rewrite function seals).
ANTIVIRUS, LIBMAGIC, ARC_KEY = "antivirus", "libmagic", "arc-key"
ALL_NEEDS = frozenset({ANTIVIRUS, LIBMAGIC, ARC_KEY})


class ProductionRefused(RuntimeError):
    """Production mode was asked for and a part it depends on is missing or a fake."""


def production_refusals(*, antivirus: object | None, arc_key_provisioned: bool,
                        adapters: Mapping[str, object],
                        needs: frozenset[str] = ALL_NEEDS) -> list[str]:
    """One line per reason production mode cannot run with these parts; empty when it can.

    `adapters` maps a port's name to the adapter built for it (every port, the antivirus too:
    a fake antivirus that answers PING is still refused as a fake)."""
    reasons: list[str] = []
    av_problem = _antivirus_problem(antivirus) if ANTIVIRUS in needs else None
    if av_problem:
        reasons.append(f"no reachable antivirus ({av_problem}): "
                       "set MAILMOAT_CLAMD_SOCKET to a running clamd")
    magic_problem = filetype.magic_problem() if LIBMAGIC in needs else None
    if magic_problem:
        reasons.append(f"libmagic cannot name file types ({magic_problem}): "
                       "install the Debian package libmagic1")
    if ARC_KEY in needs and not arc_key_provisioned:
        reasons.append("ARC sealing key not provisioned (a key generated on the fly is not the "
                       "one published in DNS): set MAILMOAT_ARC_KEY_FILE or, on AWS, the ARC "
                       "key secret")
    for port, adapter in adapters.items():
        if adapter is not None and is_fake(adapter):
            cls = type(adapter)
            reasons.append(f"fake adapter for {port}: {cls.__module__}.{cls.__qualname__} "
                           "is a test fake")
    return [" ".join(reason.split()) for reason in reasons]  # each reason stays one line


def require_production(*, antivirus: object | None, arc_key_provisioned: bool,
                       adapters: Mapping[str, object], needs: frozenset[str] = ALL_NEEDS) -> None:
    """Raise ProductionRefused with every reason (joined by "; ") when production cannot run."""
    reasons = production_refusals(antivirus=antivirus, arc_key_provisioned=arc_key_provisioned,
                                  adapters=adapters, needs=needs)
    if reasons:
        raise ProductionRefused("; ".join(reasons))


def is_fake(adapter: object) -> bool:
    """Marked `fake = True`, named InMemory*/Fake*, or defined in the test suite (nothing under
    tests/ is shipped, so an adapter from there is a stand-in whatever its name)."""
    cls = type(adapter)
    return (getattr(cls, "fake", False) is True or cls.__name__.startswith(FAKE_PREFIXES)
            or cls.__module__.split(".")[0] in TEST_PACKAGES)


def _antivirus_problem(antivirus: object | None) -> str | None:
    if antivirus is None:
        return "none configured"
    ping = getattr(antivirus, "ping", None)
    where = getattr(antivirus, "address", None) or type(antivirus).__name__
    if not callable(ping):
        return f"{where} cannot be pinged"
    try:
        answered = ping() is True
    except Exception as exc:  # a ping that raises is an antivirus that is not there
        return f"{where} does not answer PING ({type(exc).__name__}: {exc})"
    return None if answered else f"{where} does not answer PING"
