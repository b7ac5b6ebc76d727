"""Run the RFC 7208 SPF test suite (openspf.org, from the pyspf sdist) through mailmoat.auth.spf.

The zone data of each scenario becomes a ZoneFileResolver (DESIGN §9 zone format), so the
checks go through exactly the path the authenticate stage uses: pyspf → our Resolver port.
Prints `SPF RFC 7208 conformance: N/M passed`; exits 1 below the threshold.

Usage: .venv/bin/python tests/conformance/spf_rfc7208.py [rfc7208-tests.yml] [-v]
The default suite file is tests/conformance/data/rfc7208-tests.yml (BSD licence beside it),
taken from `pip download --no-deps --no-binary :all: pyspf==2.0.14`, test/rfc7208-tests.yml.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from mailmoat.adapters.dns import ZoneFileResolver
from mailmoat.auth.spf import query

THRESHOLD = 202
DEFAULT_SUITE = Path(__file__).parent / "data" / "rfc7208-tests.yml"


def _txt(value: Any) -> str:
    # A list is one record made of several strings; they are concatenated (RFC 7208 §3.3).
    return "".join(value) if isinstance(value, list) else str(value)


def zone_from_suite(zonedata: dict[str, list[Any]]) -> dict[str, Any]:
    """Convert a scenario's zonedata to our zone file, with the suite driver's conventions:
    SPF-type records are also served as TXT when the name lists no TXT record; a TXT of
    NONE means "the name exists without TXT"; a bare TIMEOUT makes every type not listed
    before it time out."""
    zone: dict[str, Any] = {}
    for name, records in zonedata.items():
        entry: dict[str, Any] = {}
        has_txt = False
        spf_as_txt: list[str] = []
        for i, record in enumerate(records):
            if record == "TIMEOUT":
                if i == 0:
                    entry = {"*": "TIMEOUT"}
                else:
                    entry["*"] = "TIMEOUT"
                break
            ((rtype, value),) = record.items()
            if value == "TIMEOUT":
                entry[rtype] = "TIMEOUT"
                continue
            if rtype == "TXT":
                has_txt = True
            if rtype in ("TXT", "SPF"):
                if value == "NONE":
                    continue
                text = _txt(value)
                if rtype == "SPF":
                    spf_as_txt.append(text)
                entry.setdefault(rtype, []).append(text)
            elif rtype == "MX":
                pref, host = value
                entry.setdefault("MX", []).append(f"{pref} {host}")
            else:  # A, AAAA, PTR, CNAME
                entry.setdefault(rtype, []).append(str(value))
        if not has_txt and spf_as_txt and entry.get("TXT") != "TIMEOUT":
            entry["TXT"] = spf_as_txt
        zone[name.lower()] = entry
    return zone


def run(path: Path, verbose: bool = False) -> tuple[int, int]:
    passed = total = 0
    with path.open("rb") as fh:
        scenarios = [s for s in yaml.safe_load_all(fh) if s]
    for scenario in scenarios:
        resolver = ZoneFileResolver(zone_from_suite(scenario.get("zonedata") or {}))
        for test_id, test in (scenario.get("tests") or {}).items():
            total += 1
            expected = test["result"]
            expected_set = set(expected) if isinstance(expected, list) else {expected}
            result, explanation = query(resolver, str(test["host"]), str(test["mailfrom"]),
                                        str(test["helo"]), default_explanation="DEFAULT")
            ok = result in expected_set
            if ok and test.get("explanation") is not None:
                ok = explanation == test["explanation"]
            passed += ok
            if verbose and not ok:
                print(f"FAIL {test_id} ({scenario.get('description')}): got {result!r} "
                      f"{explanation!r}, want {expected!r} {test.get('explanation')!r}")
    return passed, total


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    path = Path(args[0]) if args else DEFAULT_SUITE
    passed, total = run(path, verbose)
    print(f"SPF RFC 7208 conformance: {passed}/{total} passed")
    return 0 if passed >= THRESHOLD else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
