"""Shared fixtures: a runtime on a temporary data directory with the demo tenant."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.config import load_config
from mailmoat.context import Envelope, MessageContext
from mailmoat.runtime import Runtime
from mailmoat.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DEMO_CONFIG = ROOT / "config" / "demo.toml"


# Switches for the test run itself, not settings of the gateway: `make soak` sets MAILMOAT_SOAK
# for tests/faults, which read it at import (after pytest_configure has run); the browser tests
# write their screenshots to MAILMOAT_SCREENSHOTS (docs/ for the README) when it is set.
TEST_RUN_SWITCHES = frozenset({"MAILMOAT_SOAK", "MAILMOAT_SCREENSHOTS"})


def pytest_configure(config: pytest.Config) -> None:
    """Tests set what they need themselves: `make` exports MAILMOAT_CONFIG and
    MAILMOAT_DATA_DIR for `make run`, and a developer's shell may hold others. Inherited, they
    would change what bootstrap() builds (e.g. the demo tenants instead of a test's table)."""
    for name in [n for n in os.environ if n.startswith("MAILMOAT_")]:
        if name not in TEST_RUN_SWITCHES:
            del os.environ[name]
    # Every `mailmoat serve` a test starts would bind the one default metrics port (9465), and
    # parallel test workers would collide there: none unless a test asks (tests/e2e/test_metrics.py).
    os.environ["MAILMOAT_METRICS_PORT"] = "0"


# moto's fake credentials and region: with these set, nothing a test does can reach a real account.
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def use_aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def isolated_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty DynamoDB table "isolated" on moto, keyed like template.yaml's IsolatedFilesTable
    (hash key "token"), for the tests that run DynamoIsolationStore; moto stays on until teardown."""
    import boto3
    from moto import mock_aws

    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="isolated", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "token", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "token", "KeyType": "HASH"}])
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_smtp(port: int, proc: Any, timeout: float = 30.0) -> bool:
    """Wait until a started `mailmoat serve` answers SMTP on loopback `port`; False (the
    process killed) when it does not within `timeout`."""
    import smtplib
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as smtp:
                smtp.noop()
            return True
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return False


def stop_process(proc: Any, timeout: float = 20.0) -> None:
    """SIGTERM a started `mailmoat serve` (its graceful stop), SIGKILL when it does not end in time."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"mode": "test", "data_dir": tmp_path / "var", "config": DEMO_CONFIG,
                              "dns_zone": FIXTURES / "empty-zone.json"}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    yield bootstrap(settings, config=load_config(settings.config))


@pytest.fixture
def analyse(runtime: Runtime) -> Callable[..., MessageContext]:
    """Run the offline pipeline (delivery left out) on bytes or a fixture name."""

    def run(message: bytes | str, *, rcpt: list[str] | None = None,
            stages: tuple[str, ...] = ("authenticate", "scan", "isolate", "rewrite"),
            **envelope: Any) -> MessageContext:
        raw = (FIXTURES / message).read_bytes() if isinstance(message, str) else message
        env = Envelope(rcpt_to=rcpt or ["alice@example.test"], **envelope)
        return runtime.analyse(raw, env, stages=stages)

    return run


@pytest.fixture(scope="session")
def rspamd_url() -> Iterator[str]:
    """A real rspamd (Debian) on loopback ports of its own, with bench/rspamd as its local config
    (no network checks); one per test process, since its first start compiles for ~20 s."""
    import shutil

    from bench import rspamd_server

    if not rspamd_server.installed() and (os.geteuid() != 0 or not shutil.which("apt-get")):
        pytest.skip("rspamd is not installed and this is not root to apt-get it "
                    "(sudo apt-get install rspamd, or scripts/system-deps.sh test)")
    ports = {"normal": free_port(), "controller": free_port(), "proxy": free_port()}
    with rspamd_server.RspamdServer(ports) as server:
        yield server.url
