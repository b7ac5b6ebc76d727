"""On AWS the identity is the Cognito JWT's claims that API Gateway verified; the console reads
them from the Lambda event (Mangum's scope["aws.event"]), simulated here by a thin ASGI layer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailmoat.runtime import Runtime
from tests.unit.admin.helpers import admin_store, mail, receive
from tests.unit.admin.test_console import _BrokenMailer


def as_lambda(app: Any) -> Any:
    """What Mangum does for an HTTP API event: the event rides along in the ASGI scope. The
    claims come from a test header here; in production API Gateway writes requestContext."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            claims = headers.get(b"x-test-claims")
            authorizer = {"jwt": {"claims": json.loads(claims)}} if claims else {}
            scope = {**scope, "aws.event": {"requestContext": {"authorizer": authorizer}}}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def aws_client(runtime: Runtime) -> TestClient:
    from mailmoat_web.app import create_app

    runtime.settings = runtime.settings.model_copy(update={"runtime": "aws"})
    return TestClient(as_lambda(create_app(runtime, sweep_every=None)))


def claims(**values: Any) -> dict[str, str]:
    return {"x-test-claims": json.dumps(values)}


def test_the_tenant_claim_decides_what_an_admin_sees(aws_client: TestClient) -> None:
    alice = claims(email="admin@example.test", **{"custom:tenant": "example.test"})
    assert aws_client.get("/admin/t/example.test/trace", headers=alice).status_code == 200
    assert aws_client.get("/admin/t/other.test/trace", headers=alice).status_code == 404
    home = aws_client.get("/admin/", headers=alice, follow_redirects=False)
    assert home.headers["location"] == "/admin/t/example.test/trace"
    ops = claims(email="ops@provider.example", **{"cognito:groups": "[mailmoat-operators]"})
    assert aws_client.get("/admin/t/other.test/trace", headers=ops).status_code == 200
    assert "operator-banner" in aws_client.get("/admin/", headers=ops).text


def test_without_claims_there_is_no_console_and_no_local_sign_in(aws_client: TestClient) -> None:
    assert aws_client.get("/admin/", follow_redirects=False).status_code == 404
    assert aws_client.get("/admin/login").status_code == 404
    aws_client.get("/")  # the CSRF cookie
    response = aws_client.post("/admin/login", data={"csrf": aws_client.cookies["mm_csrf"],
                                                     "email": "admin@example.test",
                                                     "password": "correct horse battery staple"})
    assert response.status_code == 404


def test_redrive_on_aws_leaves_the_message_to_the_reconciler(aws_client: TestClient, runtime: Runtime) -> None:
    working = runtime.services.mailer_for
    runtime.services.mailer_for = lambda _tenant: _BrokenMailer()
    message_id = receive(runtime, mail(subject="held on aws"), ["alice@example.test"])
    runtime.services.mailer_for = working
    alice = claims(email="admin@example.test", **{"custom:tenant": "example.test"})
    aws_client.get("/admin/t/example.test/held", headers=alice)
    response = aws_client.post(f"/admin/t/example.test/messages/{message_id}/redrive", headers=alice,
                               data={"csrf": aws_client.cookies["mm_csrf"]}, follow_redirects=False)
    assert response.status_code == 303
    record = runtime.services.log.get(message_id)
    assert record is not None and record.state == "accepted"  # not processed in the portal function
    entry = admin_store(runtime).entries("example.test")[0]
    assert (entry.action, entry.admin, entry.target) == ("message.redrive", "admin@example.test", message_id)
    forged = aws_client.post(f"/admin/t/example.test/messages/{message_id}/redrive", headers=alice,
                             data={"csrf": "nope"}, follow_redirects=False)
    assert forged.status_code == 403
