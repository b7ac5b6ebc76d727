"""Resolver adapters: live DNS through dnspython (with a small TTL cache), an offline zone file,
or a zone file laid over live DNS (the demo)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from mailmoat.ports import DnsTimeout, NoData, NXDomain, Resolver

_TYPES = frozenset({"A", "AAAA", "TXT", "MX", "PTR", "CNAME", "NS", "SPF"})


def _norm(name: str) -> str:
    return name.strip().lower().rstrip(".")


class ZoneFileResolver:
    """DESIGN §9 zone file: {"example.com": {"TXT": [...], "A": [...]}}. A missing name is
    NXDOMAIN, a present name without the type is NODATA, "TIMEOUT" times out, and
    {"*": "TIMEOUT"} makes every type not listed for that name time out."""

    def __init__(self, zone: dict[str, Any]) -> None:
        self.zone = {_norm(k): v for k, v in zone.items()}

    @classmethod
    def from_file(cls, path: Path) -> ZoneFileResolver:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def query(self, name: str, rdtype: str) -> list[str]:
        rdtype = rdtype.upper()
        entry = self.zone.get(_norm(name))
        if entry is None:
            raise NXDomain(name)
        if entry == "TIMEOUT":
            raise DnsTimeout(name)
        value = entry.get(rdtype)
        if value is None:
            if entry.get("*") == "TIMEOUT":
                raise DnsTimeout(f"{name}/{rdtype}")
            raise NoData(f"{name}/{rdtype}")
        if value == "TIMEOUT":
            raise DnsTimeout(f"{name}/{rdtype}")
        if isinstance(value, str):
            value = [value]
        if not value:
            raise NoData(f"{name}/{rdtype}")
        return [str(v) for v in value]


class OverlayResolver:
    """The zone file answers the names it lists (its NXDOMAIN/NODATA/TIMEOUT rules apply to
    them); every other name goes to the fallback, live DNS. For the demo (`make run`): the
    send-test battery's domains are fixed, real mail still gets real answers."""

    def __init__(self, zone: ZoneFileResolver, fallback: Resolver) -> None:
        self.zone = zone
        self.fallback = fallback

    def query(self, name: str, rdtype: str) -> list[str]:
        if _norm(name) in self.zone.zone:
            return self.zone.query(name, rdtype)
        return self.fallback.query(name, rdtype)


class DnsPythonResolver:
    """Live DNS. TXT strings of one record are joined (RFC 7208 §3.3); answers cached by TTL."""

    def __init__(self, timeout: float = 3.0, max_ttl: float = 300.0) -> None:
        import dns.resolver

        self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout
        self._max_ttl = max_ttl
        self._cache: dict[tuple[str, str], tuple[float, list[str] | Exception]] = {}
        self._lock = threading.Lock()

    def query(self, name: str, rdtype: str) -> list[str]:
        import dns.exception
        import dns.resolver

        key = (_norm(name), rdtype.upper())
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            if isinstance(hit[1], Exception):
                raise hit[1]
            return list(hit[1])
        try:
            answer = self._resolver.resolve(key[0], key[1], raise_on_no_answer=True)
        except dns.resolver.NXDOMAIN as exc:
            self._store(key, now + 60, NXDomain(name))
            raise NXDomain(name) from exc
        except dns.resolver.NoAnswer as exc:
            self._store(key, now + 60, NoData(name))
            raise NoData(name) from exc
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTimeout(name) from exc
        records: list[str] = []
        for rr in answer:
            if key[1] in ("TXT", "SPF"):
                records.append(b"".join(rr.strings).decode("utf-8", "replace"))
            else:
                records.append(rr.to_text().rstrip("."))
        ttl = min(float(answer.rrset.ttl if answer.rrset else 60), self._max_ttl)
        self._store(key, now + ttl, records)
        return records

    def _store(self, key: tuple[str, str], expires: float, value: list[str] | Exception) -> None:
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (expires, value)
