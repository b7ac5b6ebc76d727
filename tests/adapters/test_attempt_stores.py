"""Both AttemptStores (SQLite, DynamoDB on moto) keep the limiter's promise: a reservation is one
atomic step, so of many concurrent reservations on one counter at most `free` are granted; refused
ones charge nothing; a success clears an account and refunds a network (mailmoat.attempts)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb_attempts import DynamoAttemptStore
from mailmoat.adapters.sqlite import SqliteDatabase
from mailmoat.adapters.sqlite_attempts import SqliteAttemptStore
from mailmoat.attempts import AttemptLimiter, AttemptRule, source_network
from mailmoat.ports import AttemptStore

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
ACCOUNT = AttemptRule("acct", 3, timedelta(minutes=15), timedelta(seconds=10), timedelta(minutes=2))
NETWORK = AttemptRule("net", 4, timedelta(minutes=15), timedelta(seconds=60), timedelta(hours=1), "refund")


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[AttemptStore]:
    if request.param == "sqlite":
        yield SqliteAttemptStore(SqliteDatabase(tmp_path / "db.sqlite3"))
        return
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    from cfnlint.decode import cfn_yaml

    from tests.e2e.test_aws_pipeline import ROOT

    props: Any = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]["SignInAttemptsTable"]["Properties"]
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="attempts", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[dict(a) for a in props["AttributeDefinitions"]],
            KeySchema=[dict(k) for k in props["KeySchema"]])
        store = DynamoAttemptStore("attempts")
        store.table = AtomicWrites(store.table)
        yield store


class AtomicWrites:
    """DynamoDB checks a write's condition and writes in one step; moto, called from several
    threads in one process, checks and writes without a lock, so two conditional puts on the
    same version can both succeed (seen in CI: 5 of 16 granted, 3 free). Each write is made
    atomic here, as AWS makes it; reads stay concurrent, so the read-then-conditional-write race
    the adapter's optimistic locking must handle is still there."""

    def __init__(self, table: Any) -> None:
        self._table, self._lock = table, threading.Lock()

    def put_item(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._table.put_item(**kwargs)

    def delete_item(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._table.delete_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def test_concurrent_reservations_grant_at_most_the_free_attempts(store: AttemptStore) -> None:
    limiter = AttemptLimiter(store, Clock())
    granted: list[bool] = []
    start = threading.Barrier(16)

    def reserve() -> None:
        start.wait(timeout=10)
        granted.append(limiter.reserve([(ACCOUNT, "alice@example.test")]) is not None)

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert granted.count(True) == ACCOUNT.free and len(granted) == 16


def test_the_wait_doubles_and_the_window_starts_over(store: AttemptStore) -> None:
    clock = Clock()
    limiter = AttemptLimiter(store, clock)
    for _ in range(ACCOUNT.free):
        assert limiter.reserve([(ACCOUNT, "a")]) is not None
    assert limiter.reserve([(ACCOUNT, "a")]) is None
    clock.at += timedelta(seconds=10)
    assert limiter.reserve([(ACCOUNT, "a")]) is not None
    clock.at += timedelta(seconds=19)
    assert limiter.reserve([(ACCOUNT, "a")]) is None  # 20 s now
    clock.at += timedelta(seconds=1)
    assert limiter.reserve([(ACCOUNT, "a")]) is not None
    clock.at += timedelta(minutes=16)  # quiet for longer than the window
    for _ in range(ACCOUNT.free):
        assert limiter.reserve([(ACCOUNT, "a")]) is not None


def test_a_refused_counter_charges_none_and_success_clears_or_refunds(store: AttemptStore) -> None:
    clock = Clock()
    limiter = AttemptLimiter(store, clock)
    for n in range(ACCOUNT.free):
        assert limiter.reserve([(NETWORK, "192.0.2.0/24"), (ACCOUNT, "busy")]) is not None
    # The account refuses: the network's reservation is given back.
    assert limiter.reserve([(NETWORK, "192.0.2.0/24"), (ACCOUNT, "busy")]) is None
    reservation = limiter.reserve([(NETWORK, "192.0.2.0/24"), (ACCOUNT, "other")])
    assert reservation is not None  # the network's 4th: the refused one was not counted
    reservation.succeeded()  # refunds the network, clears "other"
    assert limiter.reserve([(NETWORK, "192.0.2.0/24")]) is not None
    assert limiter.reserve([(NETWORK, "192.0.2.0/24")]) is None


def test_source_networks() -> None:
    assert source_network("192.0.2.77") == "192.0.2.0/24"
    assert source_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert source_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source_network(None) == source_network("testclient") == "-"


def test_without_a_store_nothing_is_granted() -> None:
    assert AttemptLimiter(None, Clock()).reserve([(ACCOUNT, "a")]) is None
