"""GeoIp adapter: ISO country codes from a MaxMind-format .mmdb through geoip2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailmoat.auth.received import is_public


class GeoIp2Reader:
    """Country of an IP from `Settings.geoip_db` (GeoLite2/GeoIP2 Country or City, or any
    database with the same `country.iso_code` layout). None for private addresses,
    addresses the database does not know and anything unparsable."""

    def __init__(self, path: Path | str) -> None:
        import geoip2.database

        self._reader = geoip2.database.Reader(str(path))
        # City databases answer country questions through city(); the type says which.
        self._use_city = "city" in self._reader.metadata().database_type.lower()

    def country(self, ip: str) -> str | None:
        if not is_public(ip):
            return None
        try:
            model: Any = self._reader.city(ip) if self._use_city else self._reader.country(ip)
        except Exception:  # AddressNotFoundError, ValueError, a corrupt record
            return None
        code = model.country.iso_code or model.registered_country.iso_code
        return str(code).upper() if code else None

    def close(self) -> None:
        self._reader.close()
