"""What a password opens in the portal is handed out only after an antivirus passed it (issue 14,
fail-open item 6): on AWS only the scan function has clamd, the portal function has none."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.adapters.clamd import ClamdAntivirus
from mailmoat.runtime import Runtime
from mailmoat.services.rescan import AV_UNCHECKED
from tests.adapters.test_clamd import EICAR, running_clamd
from tests.e2e.test_portal import MEMBERS, Portal, open_portal, path_of
from tests.unit.isolation.builders import PASSWORD, aes_zip, make_runtime, message

MEMBER = re.compile(r'<li class="member verdict-(\w+)">\s*<span class="name">([^<]+)</span>')
HELD_JA = "このファイルはウイルス検査がまだ済んでいません"
HELD_EN = "This file is still to be checked for viruses"


class DownAntivirus:
    """clamd configured but not answering (a socket nobody listens on)."""

    def scan(self, data: bytes) -> object:
        raise ConnectionRefusedError("clamd.sock: connection refused")


def _portal(tmp_path: Path, members: dict[str, bytes]) -> Portal:
    """Scanned as the scan function scans (with an antivirus); the zip is encrypted, so isolated."""
    runtime = make_runtime(tmp_path / "var")
    portal = open_portal(runtime, message(("請求書.zip", aes_zip(members), "application/zip")))
    assert next(a for a in portal.ctx.attachments if a.filename == "請求書.zip").verdict == "encrypted"
    return portal


def _unlocked(portal: Portal, lang: str = "ja") -> str:
    path = path_of(portal, "請求書.zip")
    response = portal.client.post(f"/m/{portal.token}/f/{path}/unlock",
                                  data={"csrf": portal.csrf, "password": PASSWORD},
                                  headers={"accept-language": lang})
    assert response.status_code == 200, response.text
    return response.text


def _member(portal: Portal, index: int) -> object:
    return portal.post(path_of(portal, "請求書.zip"), "member", password=PASSWORD, index=index,
                       confirm="1")


@pytest.mark.parametrize("antivirus", [None, DownAntivirus()], ids=["none", "not-answering"])
def test_without_an_antivirus_answer_what_the_password_opened_stays_isolated(
        tmp_path: Path, antivirus: object, caplog: pytest.LogCaptureFixture) -> None:
    portal = _portal(tmp_path, MEMBERS)
    portal.runtime.services.antivirus = antivirus  # type: ignore[assignment]  # the portal function's
    html = _unlocked(portal)
    assert MEMBER.findall(html) == [("unsupported", "report.txt"), ("unsupported", "data/table.csv")]
    unlocked = html.split('<div class="unlocked">', 1)[1]
    assert unlocked.count(HELD_JA) == 2 and '/member"' not in unlocked  # no download form
    assert HELD_EN in _unlocked(portal, "en")
    for index in range(len(MEMBERS)):
        refused = _member(portal, index)
        assert refused.status_code == 403  # type: ignore[attr-defined]
        assert b"member bytes" not in refused.content  # type: ignore[attr-defined]
    assert portal.runtime.services.isolation.downloads(portal.ctx.id) == []  # type: ignore[union-attr]
    held = [r for r in caplog.records if getattr(r, "symbol", None) == AV_UNCHECKED]
    assert held and all(r.levelname == "WARNING" and r.action == "isolate" for r in held)  # type: ignore[attr-defined]


def test_with_an_antivirus_the_members_are_downloadable_as_before(tmp_path: Path) -> None:
    """The test antivirus of the builders answers clean: nothing is held (a regression guard)."""
    portal = _portal(tmp_path, MEMBERS)
    html = _unlocked(portal)
    assert MEMBER.findall(html) == [("safe", "report.txt"), ("safe", "data/table.csv")]
    assert HELD_JA not in html
    got = _member(portal, 0)
    assert got.status_code == 200 and got.content == MEMBERS["report.txt"]  # type: ignore[attr-defined]


# --- the real clamd ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_clamd(tmp_path_factory.mktemp("clamd"))


@pytest.mark.clamd
def test_with_the_real_clamd_clean_members_download_and_eicar_is_danger(
        tmp_path: Path, real_clamd: str) -> None:
    portal = _portal(tmp_path, {"report.txt": b"member bytes\n", "eicar.com": EICAR})
    runtime: Runtime = portal.runtime
    runtime.services.antivirus = ClamdAntivirus(real_clamd)
    html = _unlocked(portal)
    assert MEMBER.findall(html) == [("safe", "report.txt"), ("danger", "eicar.com")]
    assert HELD_JA not in html
    assert _member(portal, 0).content == b"member bytes\n"  # type: ignore[attr-defined]
    assert _member(portal, 1).status_code == 403  # type: ignore[attr-defined]
