"""Admin sign-in on AWS: authorization code + PKCE against the Cognito managed login.

The token endpoint and the pool's JWKS are recorded HTTP answers (`responses`); the RSA key is
made here and the ID tokens are signed here (google-auth's RSASigner), so every check of the
verification is exercised against a real signature. The app-level tests run the real FastAPI
app in AWS mode on moto tables, with the cookie key read from Secrets Manager."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from google.auth import crypt
from google.auth import jwt as google_jwt
from moto import mock_aws

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.config import TenantConfig
from mailmoat.runtime import Runtime
from mailmoat.settings import AwsSettings
from mailmoat_web.admin import oidc
from mailmoat_web.admin.console import admin_from_claims
from tests.adapters.test_aws_dynamodb import create_tables
from tests.conftest import use_aws_test_credentials
from tests.unit.admin.helpers import admin_store, mail, receive, until_final
from tests.unit.admin.test_console import _BrokenMailer
from tests.webforms import form_csrf

POOL = "us-east-1_Mm0Test"
CLIENT = "7test0client0id"
DOMAIN = "mailmoat-test-123456789012.auth.us-east-1.amazoncognito.com"
ISSUER = f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}"
JWKS_URL = f"{ISSUER}/.well-known/jwks.json"
TOKEN_URL = f"https://{DOMAIN}/oauth2/token"
PORTAL = "https://abc123.execute-api.us-east-1.amazonaws.com"
CALLBACK = f"{PORTAL}/admin/oauth2/callback"
LOGIN = oidc.CognitoLogin(POOL, CLIENT, DOMAIN)

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def jwks(key: rsa.RSAPrivateKey = KEY, kid: str = "k1") -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"keys": [{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                      "n": _b64(numbers.n), "e": _b64(numbers.e)}]}


def id_token(nonce: str | None, *, key: rsa.RSAPrivateKey = KEY, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": "5f0c-user", "iss": ISSUER, "aud": CLIENT, "token_use": "id", "nonce": nonce,
        "iat": now, "exp": now + 3600, "auth_time": now, "email": "admin@example.test",
        "email_verified": True, "custom:tenant": "example.test"}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    signer = crypt.RSASigner.from_string(_pem(key), key_id=kid)
    return google_jwt.encode(signer, payload).decode("ascii")  # type: ignore[no-untyped-call]


def answer_token(rsps: responses.RequestsMock, token: str, *, status: int = 200) -> None:
    rsps.post(TOKEN_URL, json={"id_token": token, "access_token": "a", "token_type": "Bearer",
                               "expires_in": 3600} if status == 200 else {"error": "invalid_grant"},
              status=status)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(JWKS_URL, json=jwks())
        yield mock


def _pending(nonce: str = "n0nce") -> oidc.PendingSignIn:
    return oidc.PendingSignIn(state="st4te", nonce=nonce, verifier="v" * 64)


# --- the pieces ------------------------------------------------------------------------------------

def test_authorize_url_carries_state_nonce_and_an_s256_challenge() -> None:
    url, pending = oidc.begin(LOGIN, CALLBACK)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", DOMAIN, "/oauth2/authorize")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT
    assert query["redirect_uri"] == CALLBACK and query["scope"] == "openid email"
    assert (query["state"], query["nonce"]) == (pending.state, pending.nonce)
    assert query["code_challenge_method"] == "S256"
    digest = hashlib.sha256(pending.verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert 43 <= len(pending.verifier) <= 128  # RFC 7636 §4.1
    second, _ = oidc.begin(LOGIN, CALLBACK)
    assert second != url  # fresh secrets every time


def test_flow_cookie_is_signed_and_short_lived() -> None:
    now = [1_000_000.0]
    cookie = oidc.FlowCookie(b"k" * 32, clock=lambda: now[0])
    value = cookie.dump(_pending())
    assert cookie.load(value) == _pending()
    assert oidc.FlowCookie(b"x" * 32).load(value) is None  # another key
    assert cookie.load(value[:-2] + "AA") is None
    assert cookie.load(None) is None and cookie.load("x" * 5000) is None


def test_a_good_sign_in_gives_the_claims(rsps: responses.RequestsMock) -> None:
    answer_token(rsps, id_token("n0nce"))
    claims = oidc.complete(LOGIN, _pending(), "st4te", "c0de", CALLBACK, jwks=oidc.JwksCache())
    assert claims["email"] == "admin@example.test" and claims["custom:tenant"] == "example.test"
    exchange = next(c for c in rsps.calls if c.request.url == TOKEN_URL)
    body = parse_qs(str(exchange.request.body))
    assert body == {"grant_type": ["authorization_code"], "client_id": [CLIENT], "code": ["c0de"],
                    "redirect_uri": [CALLBACK], "code_verifier": ["v" * 64]}
    admin = admin_from_claims(claims)
    assert admin is not None and (admin.email, admin.tenant) == ("admin@example.test", "example.test")


@pytest.mark.parametrize(("case", "state", "token_kwargs"), [
    ("wrong state", "other", {}),
    ("wrong nonce", "st4te", {"nonce": "replayed"}),
    ("wrong audience", "st4te", {"aud": "another-client"}),
    ("wrong issuer", "st4te", {"iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"}),
    ("expired", "st4te", {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}),
    ("issued in the future", "st4te", {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}),
    ("access token", "st4te", {"token_use": "access"}),
    ("no nonce", "st4te", {"nonce": None}),
    ("bad signature", "st4te", {"key": OTHER_KEY}),
    ("unknown key id", "st4te", {"kid": "k9"}),
])
def test_a_bad_callback_gives_no_claims(rsps: responses.RequestsMock, case: str, state: str,
                                        token_kwargs: dict[str, Any]) -> None:
    nonce = token_kwargs.pop("nonce", "n0nce")
    token = id_token(nonce, **token_kwargs)
    answer_token(rsps, token)
    with pytest.raises(oidc.SignInFailed):
        oidc.complete(LOGIN, _pending(), state, "c0de", CALLBACK, jwks=oidc.JwksCache())
    if case == "wrong state":  # checked before anything leaves the function
        assert not any(c.request.url == TOKEN_URL for c in rsps.calls)


def test_unsigned_and_hmac_tokens_are_refused(rsps: responses.RequestsMock) -> None:
    def unsigned(alg: str) -> str:
        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        header = part(f'{{"alg":"{alg}","kid":"k1"}}'.encode())
        body = part(f'{{"iss":"{ISSUER}","aud":"{CLIENT}","token_use":"id","nonce":"n0nce",'
                    f'"iat":{int(time.time())},"exp":{int(time.time()) + 60}}}'.encode())
        return f"{header}.{body}.{part(b'sig') if alg != 'none' else ''}"

    for alg in ("none", "HS256"):
        with pytest.raises(oidc.SignInFailed):
            oidc.verify_id_token(LOGIN, unsigned(alg), "n0nce", oidc.JwksCache())
    for junk in ("", "a.b", "not a token at all", "a.b.c.d"):
        with pytest.raises(oidc.SignInFailed):
            oidc.verify_id_token(LOGIN, junk, "n0nce", oidc.JwksCache())


def test_token_endpoint_refusals_and_outages(rsps: responses.RequestsMock) -> None:
    answer_token(rsps, "", status=400)
    with pytest.raises(oidc.SignInFailed, match="400"):
        oidc.complete(LOGIN, _pending(), "st4te", "c0de", CALLBACK, jwks=oidc.JwksCache())
    with pytest.raises(oidc.SignInFailed, match="no pending"):
        oidc.complete(LOGIN, None, "st4te", "c0de", CALLBACK, jwks=oidc.JwksCache())
    with pytest.raises(oidc.SignInFailed, match="code"):
        oidc.complete(LOGIN, _pending(), "st4te", "", CALLBACK, jwks=oidc.JwksCache())


def test_jwks_is_cached_and_refetched_for_a_new_key(rsps: responses.RequestsMock) -> None:
    cache = oidc.JwksCache()
    for _ in range(3):
        oidc.verify_id_token(LOGIN, id_token("n"), "n", cache)
    assert sum(c.request.url == JWKS_URL for c in rsps.calls) == 1
    with pytest.raises(oidc.SignInFailed):  # an unknown kid within the refresh interval: no refetch
        oidc.verify_id_token(LOGIN, id_token("n", kid="k2", key=OTHER_KEY), "n", cache)
    assert sum(c.request.url == JWKS_URL for c in rsps.calls) == 1


def test_claims_map_to_an_admin() -> None:
    assert admin_from_claims({"email": "x@a.test"}) is None  # no tenant claim
    assert admin_from_claims({"email": "x@a.test", "custom:tenant": "*"}) is None  # operators by group only
    assert admin_from_claims({"email": "x@a.test", "custom:tenant": "a.test", "email_verified": False}) is None
    ops = admin_from_claims({"email": "Ops@P.example", "cognito:groups": ["mailmoat-operators"]})
    assert ops is not None and ops.operator and ops.email == "ops@p.example"
    # Only a real group list counts: a string is not what a Cognito ID token carries.
    assert admin_from_claims({"email": "o@p.example", "cognito:groups": "mailmoat-operators"}) is None


# --- through the real app in AWS mode, on moto ------------------------------------------------------

@dataclass
class AwsConsole:
    client: TestClient
    rsps: responses.RequestsMock
    log: DynamoMessageLog

    def start(self) -> dict[str, str]:
        """GET /admin/login: where the browser is sent, as a dict of the authorize query."""
        response = self.client.get("/admin/login", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith(f"https://{DOMAIN}/oauth2/authorize?")
        assert "mm_admin_oidc" in response.cookies
        assert "samesite=lax" in response.headers["set-cookie"].lower()
        return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}

    def sign_in(self, **claims: Any) -> Any:
        query = self.start()
        answer_token(self.rsps, id_token(claims.pop("nonce", query["nonce"]), **claims))
        return self.client.get("/admin/oauth2/callback", params={"code": "c0de", "state": query["state"]})


@pytest.fixture
def aws_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[AwsConsole]:
    from mailmoat.bootstrap import bootstrap
    from mailmoat_web.app import create_app

    use_aws_test_credentials(monkeypatch)
    monkeypatch.setattr(oidc, "_JWKS", oidc.JwksCache())
    # moto first: it routes requests through its own `responses` mock, the recording inside wins.
    with mock_aws(), responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(JWKS_URL, json=jwks())
        create_tables(boto3.client("dynamodb", region_name="us-east-1"))
        secret = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="admin-session", SecretString="s" * 64)["ARN"]
        directory = DynamoDirectory("directory")
        for name in ("example.test", "other.test"):
            directory.put_tenant_config(TenantConfig(name=name, domains=[name]))  # type: ignore[call-arg]
        settings = AwsSettings(
            runtime="aws", mode="test", data_dir=tmp_path, raw_bucket="raw", directory_table="directory",
            message_log_table="messages", isolated_files_table="isolated", idempotency_table="idempotency",
            portal_base_url=PORTAL, cognito_user_pool_id=POOL, cognito_client_id=CLIENT,
            cognito_domain=DOMAIN, admin_session_secret_arn=secret)
        runtime = bootstrap(settings)
        # PORTAL is https, as on AWS: the client must send the Secure cookies back.
        client = TestClient(create_app(runtime, sweep_every=None), base_url=PORTAL)
        yield AwsConsole(client, rsps, DynamoMessageLog("messages"))


def test_sign_in_through_cognito_opens_the_console(aws_console: AwsConsole) -> None:
    client = aws_console.client
    assert client.get("/admin/", follow_redirects=False).headers["location"] == "/admin/login"
    response = aws_console.sign_in()
    assert response.status_code == 200
    assert 'http-equiv="refresh"' in response.text and "/admin/" in response.text
    assert "mm_admin" in response.cookies and "mm_admin_oidc" not in client.cookies
    assert client.get("/admin/t/example.test/trace").status_code == 200
    assert client.get("/admin/t/other.test/trace").status_code == 404  # another tenant's console
    home = client.get("/admin/", follow_redirects=False)
    assert home.headers["location"] == "/admin/t/example.test/trace"
    # Sign-out ends the console session and sends the browser to Cognito's /logout.
    kept_copy = client.cookies.get("mm_admin", path="/admin")
    out = client.post("/admin/logout", data={"csrf": form_csrf(client.get("/admin/t/example.test/trace").text)})
    assert out.status_code == 200
    assert f"https://{DOMAIN}/logout?client_id={CLIENT}" in out.text
    assert client.get("/admin/t/example.test/trace", follow_redirects=False).status_code == 303
    thief = TestClient(client.app, base_url=PORTAL)  # a copy of the cookie taken before signing out
    thief.cookies.set("mm_admin", kept_copy or "", path="/admin")
    assert thief.get("/admin/t/example.test/trace", follow_redirects=False).status_code == 303
    again = aws_console.sign_in()  # a new sign-in works again
    assert again.status_code == 200 and client.get("/admin/t/example.test/trace").status_code == 200


def test_an_operator_group_member_sees_every_tenant(aws_console: AwsConsole) -> None:
    aws_console.sign_in(**{"custom:tenant": None, "cognito:groups": ["mailmoat-operators"],
                           "email": "ops@provider.example"})
    assert aws_console.client.get("/admin/t/other.test/trace").status_code == 200
    assert "operator-banner" in aws_console.client.get("/admin/").text


@pytest.mark.parametrize("claims", [
    {"custom:tenant": None},  # no tenant claim
    {"custom:tenant": "unknown.test"},  # a tenant this gateway does not serve
    {"aud": "another-client"},
    {"nonce": "another-sign-in"},
])
def test_a_refused_sign_in_makes_no_session(aws_console: AwsConsole, claims: dict[str, Any]) -> None:
    response = aws_console.sign_in(**claims)
    assert response.status_code == 401
    assert "mm_admin" not in aws_console.client.cookies
    assert "refresh" not in response.text  # no automatic round trip to Cognito: no loop
    assert aws_console.client.get("/admin/t/example.test/trace", follow_redirects=False).status_code == 303


def test_callback_without_the_flow_cookie_or_with_a_wrong_state(aws_console: AwsConsole) -> None:
    client = aws_console.client
    query = aws_console.start()
    answer_token(aws_console.rsps, id_token(query["nonce"]))
    wrong = client.get("/admin/oauth2/callback", params={"code": "c0de", "state": "guessed"})
    assert wrong.status_code == 401 and "mm_admin" not in client.cookies
    query = aws_console.start()
    client.cookies.delete("mm_admin_oidc", path=oidc.FLOW_COOKIE_PATH)
    stolen = client.get("/admin/oauth2/callback", params={"code": "c0de", "state": query["state"]})
    assert stolen.status_code == 401 and "mm_admin" not in client.cookies
    cancelled = client.get("/admin/oauth2/callback", params={"error": "access_denied"})
    assert cancelled.status_code == 401
    assert not any(c.request.url == TOKEN_URL for c in aws_console.rsps.calls)


def test_local_password_sign_in_is_not_offered_on_aws(aws_console: AwsConsole) -> None:
    client = aws_console.client
    home = client.get("/")  # the CSRF cookie
    response = client.post("/admin/login", data={"csrf": form_csrf(home.text) if 'name="csrf"' in home.text else "0" * 64,
                                                 "email": "admin@example.test", "password": "x" * 20})
    assert response.status_code == 404


# --- a Cognito session in the console (local stores, AWS mode) ----------------------------------------

def test_redrive_on_aws_leaves_the_message_to_the_reconciler(runtime: Runtime) -> None:
    from mailmoat_web.admin.console import AdminConsole
    from mailmoat_web.app import create_app

    working = runtime.services.mailer_for
    runtime.services.mailer_for = lambda _tenant: _BrokenMailer()
    message_id = receive(runtime, mail(subject="held on aws"), ["alice@example.test"])
    assert until_final(runtime, message_id) == "held"
    runtime.services.mailer_for = working
    # As on AWS: admins sign in through Cognito, and the stages run in their own functions
    # (no in-process queue), so the portal only hands the message to the first stage's queue.
    runtime.services.admin.federated = True
    runtime = dataclasses.replace(runtime, inbox=None)
    app = create_app(runtime, sweep_every=None)
    console = AdminConsole(runtime)
    app.state.admin_console = console
    client = TestClient(app)
    client.cookies.set("mm_admin", console.sessions.issue_federated("admin@example.test", "example.test"),
                       path="/admin")
    held = client.get("/admin/t/example.test/held")
    assert held.status_code == 200
    response = client.post(f"/admin/t/example.test/messages/{message_id}/redrive",
                           data={"csrf": form_csrf(held.text)}, follow_redirects=False)
    assert response.status_code == 303
    record = runtime.services.log.get(message_id)
    assert record is not None and record.state == "accepted"  # not processed in the portal function
    entry = admin_store(runtime).entries("example.test")[0]
    assert (entry.action, entry.admin, entry.target) == ("message.redrive", "admin@example.test", message_id)
    forged = client.post(f"/admin/t/example.test/messages/{message_id}/redrive",
                         data={"csrf": "nope"}, follow_redirects=False)
    assert forged.status_code == 403
    # A local account's cookie is not a Cognito session.
    client.cookies.delete("mm_admin")
    client.cookies.set("mm_admin", console.sessions.issue("admin@example.test", "hash"), path="/admin")
    assert client.get("/admin/t/example.test/held", follow_redirects=False).status_code == 303
