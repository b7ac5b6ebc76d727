"""GeoIp2Reader on a tiny .mmdb written by mmdb-writer: ISO codes, None for private/unknown."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from mailmoat.adapters.geoip import GeoIp2Reader


def write(path: Path, database_type: str, record_key: str = "country") -> Path:
    writer = MMDBWriter(ip_version=6, database_type=database_type, ipv4_compatible=True)
    writer.insert_network(IPSet(["203.0.113.0/24"]), {record_key: {"iso_code": "jp"}})
    writer.insert_network(IPSet(["2001:db8:1::/48"]), {record_key: {"iso_code": "DE"}})
    writer.insert_network(IPSet(["192.168.0.0/16"]), {record_key: {"iso_code": "US"}})
    writer.to_db_file(str(path))
    return path


@pytest.mark.parametrize("database_type", ["GeoLite2-Country", "GeoIP2-City"])
@pytest.mark.parametrize(("ip", "country"), [
    ("203.0.113.77", "JP"), ("2001:db8:1::9", "DE"), ("198.51.100.1", None),
    ("192.168.1.1", None), ("127.0.0.1", None), ("not an ip", None), ("", None),
])
def test_country(tmp_path: Path, database_type: str, ip: str, country: str | None) -> None:
    reader = GeoIp2Reader(write(tmp_path / "geo.mmdb", database_type))
    try:
        assert reader.country(ip) == country
    finally:
        reader.close()


def test_registered_country_when_country_missing(tmp_path: Path) -> None:
    reader = GeoIp2Reader(write(tmp_path / "geo.mmdb", "GeoLite2-Country", "registered_country"))
    assert reader.country("203.0.113.1") == "JP"
