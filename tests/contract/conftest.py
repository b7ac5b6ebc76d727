"""The `gateway` fixture: a factory of the contract Gateway, once over each runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from mailmoat.rewrite.seal import ensure_local_key
from tests.contract.harness import AwsGateway, Gateway, LocalGateway, World

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "mailmoat"}


@pytest.fixture(scope="session")
def arc_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sealing key for every test (both runtimes seal alike; RSA generation is slow)."""
    directory = tmp_path_factory.mktemp("arc")
    ensure_local_key(directory, "mailmoat", "mailmoat.localhost")
    return directory / "private.pem"


@pytest.fixture(params=["local", "aws"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway(kind: str, tmp_path: Path, arc_key: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[World], Gateway]]:
    """gateway(world) stands up the runtime `kind` for this world."""
    with ExitStack() as stack:

        def make(world: World) -> Gateway:
            if kind == "local":
                return LocalGateway.build(world, tmp_path, arc_key)
            for name, value in AWS_ENV.items():
                monkeypatch.setenv(name, value)
            return stack.enter_context(AwsGateway.build(world, tmp_path, arc_key))

        yield make
