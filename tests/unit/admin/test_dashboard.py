"""The console dashboard from a seeded message log: the numbers (core stats over the MessageLog
port, SQLite and DynamoDB), the page in ja and en with server-drawn SVG, tenant scope, escaping."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import lxml.html
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.admin.stats import dashboard_stats, period_days, sender_domain
from mailmoat.ports import MessageLog, MessageRecord
from mailmoat.runtime import Runtime
from mailmoat_web.admin.dashboard import nice_top
from tests.adapters.test_aws_dynamodb import create_tables
from tests.conftest import use_aws_test_credentials
from tests.unit.admin.helpers import Console, add_operator, open_console, text_of

NOW = datetime.now(UTC).replace(microsecond=0)
DASHBOARD = "/admin/t/example.test/dashboard"
XSS_SYMBOL = "<script>alert(1)</script>"
XSS_DOMAIN = "<svg onload=alert(2)>"  # parseaddr gives up on it: the raw text is the domain


class FixedClock:
    def now(self) -> datetime:
        return NOW


def _report(sender: str | None, *, attachments: Sequence[dict[str, Any]] = (),
            symbols: Sequence[str] = (), countries: Sequence[str] = ()) -> dict[str, Any]:
    return {"from": sender, "attachments": list(attachments),
            "findings": [{"symbol": s, "target": "message"} for s in symbols],
            "route": [{"ip": "203.0.113.5", "country": c} for c in countries]}


# (id, age, tenant, state, disposition, report)
SEED: list[tuple[str, timedelta, str, str, str | None, dict[str, Any] | None]] = [
    ("m1", timedelta(hours=1), "example.test", "delivered", "deliver",
     _report("Sender <a@sender.example>", attachments=[{"verdict": "safe", "action": "keep", "symbols": []}],
             symbols=["DKIM_PASS"], countries=["JP"])),
    ("m2", timedelta(hours=3), "example.test", "quarantined", "quarantine",
     _report("x@spam.example", symbols=["DNSBL_LISTED", "SPF_FAIL"], countries=["JP", "US"])),
    ("m3", timedelta(days=2), "example.test", "delivered", "deliver",
     _report("Sender <b@Sender.Example>", attachments=[
         {"verdict": "danger", "action": "isolate", "symbols": ["VELVETSWEATSHOP"]},
         {"verdict": "encrypted", "action": "isolate", "symbols": ["ENCRYPTED_ARCHIVE"]}],
         symbols=["SPF_FAIL"], countries=["CN"])),
    ("m4", timedelta(days=5), "example.test", "held", None, None),
    ("m5", timedelta(days=20), "example.test", "delivered", "deliver", _report("c@old.example")),
    ("m6", timedelta(days=40), "example.test", "delivered", "deliver", _report("d@older.example")),
    ("x1", timedelta(hours=2), "example.test", "delivered", "deliver",
     _report(None, symbols=[XSS_SYMBOL])),
    ("o1", timedelta(hours=1), "other.test", "delivered", "deliver",
     _report("carol@othersender.example", symbols=["OTHER_TENANT_ONLY"], countries=["DE"])),
    ("s1", timedelta(hours=1), "example.test", "split", None, None),
]


def seed(log: MessageLog) -> None:
    for id_, age, tenant, state, disposition, report in SEED:
        mail_from = f"x@{XSS_DOMAIN}" if id_ == "x1" else "bounce@envelope.example"
        log.accept(MessageRecord(id=id_, received_at=NOW - age, state="accepted", mail_from=mail_from,
                                 rcpt_to=[f"alice@{tenant}"], tenant=tenant, subject=f"subject {id_}"))
        fields: dict[str, Any] = {"state": state}
        if disposition:
            fields["disposition"] = disposition
        if report is not None:
            fields["report"] = report
        log.update(id_, **fields)


@pytest.fixture
def seeded(runtime: Runtime) -> Runtime:
    runtime.services.clock = FixedClock()
    seed(runtime.services.log)
    return runtime


# --- the numbers ----------------------------------------------------------------------------

def test_seven_days_of_one_tenant(seeded: Runtime) -> None:
    stats = dashboard_stats(seeded.services.log, "example.test", 7, NOW)
    assert stats.total == 5  # m1 m2 m3 m4 x1: not m5/m6 (older), o1 (other tenant), s1 (split parent)
    assert stats.held == 1 and stats.isolated == 2 and stats.isolated_messages == 1
    assert dict(stats.dispositions) == {"deliver": 3, "quarantine": 1, "held": 1}
    assert dict(stats.verdicts) == {"safe": 1, "danger": 1, "encrypted": 1}
    assert stats.top_symbols[0] == ("SPF_FAIL", 2)
    assert "OTHER_TENANT_ONLY" not in dict(stats.top_symbols)
    assert dict(stats.top_sender_domains)["sender.example"] == 2  # From header, case folded
    assert dict(stats.route_countries) == {"JP": 2, "US": 1, "CN": 1}
    assert len(stats.buckets) == 7 and stats.unit == "day"
    assert sum(b.count for b in stats.buckets) == 5
    assert stats.buckets[-1].start == NOW.replace(hour=0, minute=0, second=0)


@pytest.mark.parametrize(("days", "total", "unit", "buckets"), [
    (1, 3, "hour", 24), (7, 5, "day", 7), (30, 6, "day", 30)])
def test_periods(seeded: Runtime, days: int, total: int, unit: str, buckets: int) -> None:
    stats = dashboard_stats(seeded.services.log, "example.test", days, NOW)
    assert (stats.total, stats.unit, len(stats.buckets)) == (total, unit, buckets)
    assert sum(b.count for b in stats.buckets) == total


def test_one_day_counts_per_hour(seeded: Runtime) -> None:
    counts = [b.count for b in dashboard_stats(seeded.services.log, "example.test", 1, NOW).buckets]
    # m1 an hour ago (22), x1 two hours ago (21), m2 three hours ago (20); 23 is this hour.
    assert (counts[20], counts[21], counts[22], counts[23]) == (1, 1, 1, 0)


def test_an_operator_view_without_tenant_counts_every_tenant(seeded: Runtime) -> None:
    assert dashboard_stats(seeded.services.log, None, 1, NOW).total == 4  # m1 m2 x1 o1


def test_a_busy_period_is_cut_at_the_bound_and_says_so(seeded: Runtime) -> None:
    stats = dashboard_stats(seeded.services.log, "example.test", 7, NOW, max_records=2)
    assert stats.truncated and stats.total <= 2  # the newest two rows (a split parent is one)


@pytest.mark.parametrize(("value", "days"), [("1", 1), ("7", 7), ("30", 30), ("2", 7), ("x", 7),
                                             (None, 7), ("-1", 7)])
def test_period_days(value: Any, days: int) -> None:
    assert period_days(value) == days


@pytest.mark.parametrize(("value", "top"), [(0, 0), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20),
                                            (180, 200), (501, 1000)])
def test_nice_top(value: int, top: int) -> None:
    assert nice_top(value) == top


def test_sender_domain_prefers_the_from_header() -> None:
    record = MessageRecord(id="r", received_at=NOW, state="delivered", mail_from="b@envelope.example",
                           report={"from": "名前 <a@From.Example.>"})
    assert sender_domain(record) == "from.example"
    record.report = None
    assert sender_domain(record) == "envelope.example"
    record.mail_from = None
    assert sender_domain(record) == ""


# --- the page ---------------------------------------------------------------------------------

@pytest.fixture
def seeded_console(seeded: Runtime) -> Console:
    console = open_console(seeded)
    assert console.login("admin@example.test").status_code == 303
    return console


def test_the_page_in_japanese_with_svg_charts(seeded_console: Console) -> None:
    response = seeded_console.get(DASHBOARD)
    assert response.status_code == 200
    html = response.text
    assert "<h1>ダッシュボード</h1>" in html
    assert html.count("<svg") == 6  # per day + five bar charts
    text = text_of(html)
    assert "受信メール 5" in text and "保留 1" in text and "隔離ファイル 2" in text
    assert "1 日ごとのメール" in text and "配送" in text and "危険" in text
    assert "sender.example" in text and "SPF_FAIL" in text
    assert 'aria-current="page">過去 7 日' in html
    assert f'href="{DASHBOARD}"' in html  # in the navigation


def test_the_page_in_english_for_one_day(seeded_console: Console) -> None:
    html = seeded_console.get(f"{DASHBOARD}?days=1&lang=en").text
    text = text_of(html)
    assert "Dashboard" in text and "Mail per hour" in text and "Messages received 3" in text
    assert "Quarantined" in text and "Top sender domains" in text
    assert 'aria-current="page">Last 24 hours' in html


def test_the_page_keeps_the_csp_no_script_no_inline_style(seeded_console: Console) -> None:
    response = seeded_console.get(DASHBOARD)
    csp = response.headers["content-security-policy"]
    assert "style-src 'self'" in csp and "script-src" not in csp and "default-src 'none'" in csp
    tree = lxml.html.fromstring(response.text)
    assert not tree.xpath("//script | //style | //*[local-name()='script' or local-name()='style']")
    attributes = {name.lower() for element in tree.iter() if isinstance(element.tag, str)
                  for name in element.attrib}
    assert "style" not in attributes and not any(a.startswith("on") for a in attributes)
    assert tree.xpath("//svg//rect[@fill]")  # colours are presentation attributes


def test_user_derived_text_is_escaped_in_the_svg(seeded_console: Console) -> None:
    html = seeded_console.get(f"{DASHBOARD}?days=1").text
    assert XSS_SYMBOL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<svg onload" not in html and "&lt;svg onload=alert(2)" in html


def test_another_tenants_numbers_never_show(seeded_console: Console) -> None:
    html = seeded_console.get(f"{DASHBOARD}?days=30").text
    assert "othersender.example" not in html and "OTHER_TENANT_ONLY" not in html and ">DE<" not in html


def test_an_admin_gets_404_for_another_tenant_and_sign_in_is_required(seeded: Runtime,
                                                                    seeded_console: Console) -> None:
    assert seeded_console.get("/admin/t/other.test/dashboard").status_code == 404
    assert seeded_console.get("/admin/t/nosuch.test/dashboard").status_code == 404
    anonymous = open_console(seeded)
    response = anonymous.get(DASHBOARD)
    assert response.status_code == 303 and response.headers["location"] == "/admin/login"


def test_an_operator_sees_each_tenant(seeded: Runtime) -> None:
    add_operator(seeded)
    console = open_console(seeded)
    assert console.login("ops@provider.example").status_code == 303
    other = console.get("/admin/t/other.test/dashboard?days=1&lang=en")
    assert other.status_code == 200 and "othersender.example" in other.text
    assert "sender.example" in console.get(DASHBOARD).text


def test_an_empty_period_says_so(seeded: Runtime, seeded_console: Console) -> None:
    seeded.services.clock = type("Later", (), {"now": lambda self: NOW + timedelta(days=400)})()
    text = text_of(seeded_console.get(f"{DASHBOARD}?days=1&lang=en").text)
    assert "No mail in this period." in text and "Messages received 0" in text


# --- DynamoDB ------------------------------------------------------------------------------------

@pytest.fixture
def dynamo_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoMessageLog]:
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        create_tables(boto3.client("dynamodb", region_name="us-east-1"))
        yield DynamoMessageLog("messages")


def test_dynamodb_log_gives_the_same_numbers(dynamo_log: DynamoMessageLog) -> None:
    seed(dynamo_log)
    assert dynamo_log.claim_delivery("m1", "alice@example.test")  # claim rows are never counted
    stats = dashboard_stats(dynamo_log, "example.test", 7, NOW)
    assert stats.total == 5 and stats.held == 1 and stats.isolated == 2
    assert dict(stats.dispositions) == {"deliver": 3, "quarantine": 1, "held": 1}
    assert dict(stats.route_countries) == {"JP": 2, "US": 1, "CN": 1}
    window = dynamo_log.received_between("example.test", NOW - timedelta(days=3), NOW, 10)
    assert [r.id for r in window] == ["s1", "m1", "x1", "m2", "m3"]  # newest first, rows as stored
    assert len(dynamo_log.received_between(None, NOW - timedelta(days=60), NOW, 3)) == 3


def test_dynamodb_window_reads_a_bounded_number_of_pages(dynamo_log: DynamoMessageLog,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seed(dynamo_log)
    calls: list[dict[str, Any]] = []
    table_scan = dynamo_log.table.scan

    def one_item_pages(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return table_scan(**kwargs, Limit=1)

    monkeypatch.setattr(dynamo_log.table, "scan", one_item_pages)
    monkeypatch.setattr(DynamoMessageLog, "WINDOW_MAX_PAGES", 3)
    dynamo_log.received_between(None, NOW - timedelta(days=60), NOW, 100)
    assert len(calls) == 3
