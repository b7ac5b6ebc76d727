"""The Lambda handlers load without AWS, ack what names no message, never ack work they could
not do (reported as batch item failures), and process the events/ samples on moto."""

import importlib.util
import json
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from tests.e2e import test_aws_pipeline as moto

from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
from mailmoat.bootstrap import aws as entry
from mailmoat.config import TenantConfig

ROOT = Path(__file__).resolve().parents[2]
RAW_BUCKET, incoming = moto.RAW_BUCKET, moto.incoming
stack = moto.stack  # the moto stack of the end-to-end test, as a fixture here too
EVENTS = ROOT / "events"


FakeContext = moto.FakeContext  # the same Lambda context stand-in as the end-to-end test


def load_handler(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"handler_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def test_s3_test_event_is_acknowledged():
    handler = load_handler("functions/authenticate/app.py")
    assert handler(event("sqs-s3-test-event.json"), FakeContext()) == {"batchItemFailures": []}


def test_unprocessed_records_are_reported_not_acked():
    handler = load_handler("functions/scan/app.py")
    mixed = event("sqs-s3-test-event.json")
    mixed["Records"] += event("sqs-stage-message.json")["Records"]
    result = handler(mixed, FakeContext())
    failed = "8b6f0c7e-31a2-4d0e-9b55-3f1f6d8e2c40"
    assert result == {"batchItemFailures": [{"itemIdentifier": failed}]}


def test_a_message_on_the_wrong_queue_fails():
    handler = load_handler("functions/isolate/app.py")  # the stage message is queued for scan
    with pytest.raises(BatchProcessingError):
        handler(event("sqs-stage-message.json"), FakeContext())


@pytest.mark.parametrize("stage", ["authenticate", "scan", "isolate", "rewrite", "deliver"])
def test_a_stage_handler_without_its_resources_fails_the_records(stage, monkeypatch):
    for name in ("MAILMOAT_RAW_BUCKET", "MAILMOAT_DIRECTORY_TABLE", "MAILMOAT_MESSAGE_LOG_TABLE"):
        monkeypatch.delenv(name, raising=False)
    entry.aws_runtime.cache_clear()
    handler = load_handler(f"functions/{stage}/app.py")
    records = event("sqs-s3-notification.json") if stage == "authenticate" else (
        event("sqs-stage-message.json"))
    for record in records["Records"]:
        record["body"] = record["body"].replace('"stage": "scan"', f'"stage": "{stage}"')
    with pytest.raises(BatchProcessingError, match=r"table name is required|unexpected bucket"):
        handler(records, FakeContext())
    entry.aws_runtime.cache_clear()


def test_the_s3_notification_event_is_processed_with_decoded_keys(stack):
    """events/sqs-s3-notification.json names raw/<id> and a form-encoded key with a space, a
    plus and Japanese; both objects are read and accepted into the message log."""
    raw = incoming()
    for key in ("raw/o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1", "raw/請求書 2026+final"):
        stack.s3.put_object(Bucket=RAW_BUCKET, Key=key, Body=raw)
    handler = stack.handler("authenticate")
    assert handler(event("sqs-s3-notification.json"), FakeContext()) == {"batchItemFailures": []}
    logbook = DynamoMessageLog("messages")
    for message_id in ("o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1", "請求書 2026+final"):
        record = logbook.get(message_id)
        assert record.rcpt_to == ["alice@corp.example"] and record.client_ip == "203.0.113.5"
    assert len(stack.waiting("scan")) == 2


def test_the_stage_message_event_runs_its_stage(stack):
    message_id = "o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1"
    stack.s3.put_object(Bucket=RAW_BUCKET, Key=f"raw/{message_id}", Body=incoming())
    stack.sqs.send_message(QueueUrl=stack.queues["authenticate"],
                           MessageBody=json.dumps({"id": message_id, "stage": "authenticate"}))
    stack.drain("authenticate")
    stack.sqs.purge_queue(QueueUrl=stack.queues["scan"])
    handler = stack.handler("scan")
    assert handler(event("sqs-stage-message.json"), FakeContext()) == {"batchItemFailures": []}
    assert json.loads(stack.waiting("isolate")[0]["Body"]) == {"id": message_id, "stage": "isolate"}


def ses_rule_set(stack) -> object:
    """The template's rule set and the stack's own rule on moto, as CloudFormation makes them."""
    import boto3
    from tests.template.resolve import deployed_template

    rule = deployed_template(Ingress="receipt-rules")["Resources"]["ReceiptRule"]["Properties"]["Rule"]
    ses = boto3.client("ses", region_name=moto.REGION)
    ses.create_receipt_rule_set(RuleSetName="mailmoat-dev-inbound")
    ses.create_receipt_rule(RuleSetName="mailmoat-dev-inbound", Rule={
        "Name": "mailmoat-dev-store", "Enabled": True, "ScanEnabled": rule["ScanEnabled"],
        "TlsPolicy": "Require", "Recipients": ["corp.example"],
        "Actions": [{"S3Action": {"BucketName": RAW_BUCKET, "ObjectKeyPrefix": "raw/"}}]})
    for name, value in {"MAILMOAT_INGRESS": "receipt-rules",
                        "MAILMOAT_RECEIPT_RULE_SET": "mailmoat-dev-inbound",
                        "MAILMOAT_RECEIPT_RULE": "mailmoat-dev-store",
                        "MAILMOAT_RECEIPT_DOMAINS": "corp.example"}.items():
        stack.monkeypatch.setenv(name, value)
    entry.aws_runtime.cache_clear()
    return ses


def test_the_directory_stream_event_publishes_the_registered_addresses(stack):
    """events/dynamodb-directory-stream.json (bob added, carol removed) on moto: the recipient
    conditions become the table's addresses, with aliases, and the stack's rule stops
    accepting the whole domain."""
    from mailmoat.ports import Recipient

    ses = ses_rule_set(stack)
    bob = Recipient("bob@corp.example", "corp", name="Bob")
    if hasattr(bob, "aliases"):  # the alias model lands with the directory work
        bob.aliases = ["robert@corp.example"]
    DynamoDirectory("directory").upsert_recipients([bob])
    handler = load_handler("functions/directory_publish/app.py")
    assert handler(event("dynamodb-directory-stream.json"), FakeContext()) == {"batchItemFailures": []}
    rules = ses.describe_receipt_rule_set(RuleSetName="mailmoat-dev-inbound")["Rules"]
    store, published = rules[0], rules[1:]
    assert store["Name"] == "mailmoat-dev-store" and store["Enabled"] is False
    addresses = {a for r in published for a in r["Recipients"]}
    expected = {"alice@corp.example", "bob@corp.example"} | set(getattr(bob, "aliases", []))
    assert addresses == expected
    assert all(r["Actions"] == store["Actions"] and r["Enabled"] for r in published)
    # The hourly schedule runs the same recompute: nothing left to change.
    assert handler(event("schedule.json"), FakeContext()) == {"batchItemFailures": []}
    assert ses.describe_receipt_rule_set(RuleSetName="mailmoat-dev-inbound")["Rules"] == rules


def test_directory_publish_fails_the_batch_when_it_cannot_publish(stack):
    """No rule set (not deployed, or a wrong name): the batch fails as a whole, so the stream
    retries it and, after the retries, its record lands in DirectoryPublishDLQ (alarmed)."""
    stack.monkeypatch.setenv("MAILMOAT_INGRESS", "receipt-rules")
    stack.monkeypatch.setenv("MAILMOAT_RECEIPT_RULE_SET", "missing-inbound")
    stack.monkeypatch.setenv("MAILMOAT_RECEIPT_RULE", "mailmoat-dev-store")
    entry.aws_runtime.cache_clear()
    handler = load_handler("functions/directory_publish/app.py")
    with pytest.raises(Exception, match=r"RuleSetDoesNotExist|does not exist"):
        handler(event("dynamodb-directory-stream.json"), FakeContext())


def test_reconcile_reaches_the_runtime(stack):
    handler = stack.handler("authenticate")  # sets the environment; reconcile needs no queue of its own
    assert handler is not None
    entry.aws_runtime.cache_clear()
    assert load_handler("functions/reconcile/app.py")(event("schedule.json"), FakeContext()) is None


def test_the_directory_sync_handler_syncs_each_tenant_with_its_secret_from_secrets_manager(
        stack, monkeypatch):
    """The wiring around mailmoat.directory.sync.sync_tenant (tested on recorded Graph and
    Google answers in its own tests): every tenant with a provider, the provider secret read from
    Secrets Manager as <prefix><name>, the DynamoDB directory passed in."""
    import boto3

    from mailmoat.config import DirectoryConfig, M365DirectoryConfig
    from mailmoat.directory import sync
    from mailmoat.directory.sync import SyncResult

    boto3.client("secretsmanager", region_name=moto.REGION).create_secret(
        Name="mailmoat-dev/directory/CORP_GRAPH_SECRET", SecretString="graph-client-secret")
    monkeypatch.setenv("MAILMOAT_DIRECTORY_SECRET_PREFIX", "mailmoat-dev/directory/")
    DynamoDirectory("directory").put_tenant_config(TenantConfig(
        name="corp", domains=["corp.example"], directory=DirectoryConfig(
            provider="m365", m365=M365DirectoryConfig(tenant_id="corp.onmicrosoft.com", client_id="app",
                                                      client_secret_env="CORP_GRAPH_SECRET"))))
    DynamoDirectory("directory").put_tenant_config(TenantConfig(name="plain", domains=["plain.example"]))
    calls = []

    def recorded(directory, tenant, *, read_secret, **kwargs):
        calls.append((type(directory).__name__, tenant.name, read_secret("CORP_GRAPH_SECRET"),
                      read_secret("MISSING")))
        return SyncResult(tenant=tenant.name, provider="m365", dry_run=False, complete=True)

    monkeypatch.setattr(sync, "sync_tenant", recorded)
    entry.aws_runtime.cache_clear()
    handler = load_handler("functions/directory_sync/app.py")
    assert handler(event("schedule.json"), FakeContext()) is None
    assert calls == [("DynamoDirectory", "corp", "graph-client-secret", None)]

    def refused(directory, tenant, **kwargs):
        return SyncResult(tenant=tenant.name, provider="m365", dry_run=False, complete=True,
                          refused="it would remove 40 of 50 recipients")

    monkeypatch.setattr(sync, "sync_tenant", refused)
    with pytest.raises(RuntimeError, match="did not apply for: corp"):  # the Errors alarm fires
        handler(event("schedule.json"), FakeContext())


def test_the_spam_digest_handler_reaches_the_digest(stack, monkeypatch):
    from mailmoat.spam import digest

    seen = []
    monkeypatch.setattr(digest, "send_digests", lambda services, now: seen.append((services, now)))
    entry.aws_runtime.cache_clear()
    handler = load_handler("functions/spam_digest/app.py")
    assert handler(event("schedule.json"), FakeContext()) is None
    [(services, now)] = seen
    assert services.settings.runtime == "aws" and now.tzinfo is not None


def test_the_signature_update_handler_publishes_freshclam_output(stack, tmp_path):
    """The scheduled handler under moto with the test-only freshclam stand-in on PATH."""
    import stat
    import sys

    from tests.adapters.test_aws_signatures import FAKE_FRESHCLAM

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "freshclam"
    script.write_text(FAKE_FRESHCLAM.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    stack.monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    stack.monkeypatch.setenv("FAKE_FRESHCLAM_SEEN", str(tmp_path / "seen.txt"))
    stack.monkeypatch.setenv("MAILMOAT_SIGNATURE_BUCKET", "mailmoat-test-signatures")
    stack.s3.create_bucket(Bucket="mailmoat-test-signatures")
    entry.aws_runtime.cache_clear()
    handler = load_handler("functions/signature_update/app.py")
    assert handler(event("schedule.json"), FakeContext()) is None
    manifest = json.loads(stack.s3.get_object(Bucket="mailmoat-test-signatures",
                                              Key="clamav/manifest.json")["Body"].read())
    assert set(manifest["files"]) == {"daily.cld", "main.cvd"}


def test_the_scan_stage_starts_clamd_from_the_signature_bucket(stack, tmp_path):
    """With the image's MAILMOAT_CLAMD_CONFIG set, the first scan fetches the databases and
    starts clamd; without databases the scan still runs and fails closed (SCAN_FAILED)."""
    stack.monkeypatch.setenv("MAILMOAT_CLAMD_CONFIG", str(tmp_path / "clamd.conf"))
    stack.monkeypatch.setenv("MAILMOAT_CLAMD_PATH", "/bin/false")
    stack.monkeypatch.setenv("MAILMOAT_CLAMD_SOCKET", str(tmp_path / "clamd.sock"))
    stack.monkeypatch.setenv("MAILMOAT_SIGNATURE_BUCKET", "mailmoat-test-signatures")
    stack.monkeypatch.setenv("MAILMOAT_SIGNATURE_DIR", str(tmp_path / "db"))
    stack.s3.create_bucket(Bucket="mailmoat-test-signatures")
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-clamd", Body=incoming())
    stack.drain("authenticate")
    assert stack.drain("scan") == [{"batchItemFailures": []}]  # no databases: not a crash
    from mailmoat.adapters.aws_signatures import S3SignatureMirror

    database = tmp_path / "test.hdb"
    database.write_text("44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test\n")
    mirror = S3SignatureMirror("mailmoat-test-signatures", client=stack.s3)
    import hashlib

    digest = hashlib.sha256(database.read_bytes()).hexdigest()
    mirror.put_manifest({"files": {"test.hdb": {"sha256": digest, "version_id": mirror.upload(
        "test.hdb", database, sha256=digest)}}})
    from mailmoat.adapters.aws_clamd import ManagedClamd

    entry.aws_runtime.cache_clear()
    antivirus = entry.aws_runtime().runtime.services.antivirus
    assert isinstance(antivirus, ManagedClamd)  # the scan image's clamd behind the port
    assert not antivirus.ensure()  # /bin/false as clamd: fetched, started, exits, reported
    assert (tmp_path / "db" / "test.hdb").read_bytes() == database.read_bytes()
    assert antivirus.process.process is not None and antivirus.process.process.returncode == 1
    from mailmoat.adapters.clamd import AntivirusUnavailable
    from mailmoat.retrohunt import signature_state

    with pytest.raises(AntivirusUnavailable):  # no version without a running clamd
        antivirus.version()
    assert signature_state(entry.aws_runtime().runtime.services) is None  # so no retro-hunt


def test_portal_handler_serves_the_http_api_event(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "web"))
    monkeypatch.setenv("MAILMOAT_DATA_DIR", str(tmp_path))  # no AWS settings: local runtime
    handler = load_handler("web/app.py")
    response = handler(event("http-api-portal-get.json"), FakeContext())
    assert response["statusCode"] == 404  # unknown token, same as an expired one
    assert response["headers"]["x-frame-options"] == "DENY"


def test_the_portal_serves_an_isolated_file_page_on_the_aws_runtime(stack, monkeypatch):
    """The portal built on runtime.bootstrap with MAILMOAT_RUNTIME=aws (DynamoDB isolation
    store, S3 quarantine) opens the link the delivered notice carries."""
    import re

    from fastapi.testclient import TestClient

    from mailmoat.bootstrap import bootstrap
    from mailmoat.settings import Settings

    monkeypatch.syspath_prepend(str(ROOT / "web"))
    from mailmoat_web.app import create_app

    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/ses-msg-portal", Body=incoming())
    moto.run_all(stack)
    [sent] = moto.sent_messages()
    import email
    from email import policy

    out = email.message_from_string(sent.raw_data, policy=policy.default)
    text = "\n".join(p.get_content() for p in out.walk() if p.get_content_type() == "text/plain")
    token = re.search(r"https://portal\.example\.net/m/([A-Za-z0-9_-]+)", text).group(1)
    client = TestClient(create_app(bootstrap(Settings()), sweep_every=None))
    page = client.get(f"/m/{token}")
    assert page.status_code == 200 and "invoice.zip" in page.text
    assert client.get("/m/not-a-token").status_code == 404


def test_an_ses_notification_through_sns_carries_every_envelope_recipient(stack):
    """With an SNS topic on the S3 action, SES's receipt notification names all recipients
    (Bcc ones too), which the stored message cannot; the runtime takes them from there."""
    ses = event("ses-receipt.json")["Records"][0]["ses"]
    ses["receipt"]["recipients"] = ["alice@corp.example", "bob@corp.example"]
    ses["receipt"]["action"] = {"type": "S3", "bucketName": RAW_BUCKET,
                                "objectKey": "raw/o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1"}
    stack.s3.put_object(Bucket=RAW_BUCKET, Key="raw/o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1",
                        Body=incoming())
    notification = {"notificationType": "Received", **ses}
    record = event("sqs-s3-notification.json")["Records"][0]
    record["body"] = json.dumps({"Type": "Notification", "Message": json.dumps(notification)})
    handler = stack.handler("authenticate")
    assert handler({"Records": [record]}, FakeContext()) == {"batchItemFailures": []}
    logged = DynamoMessageLog("messages").get("o3vrnil0e2ic28trm7dfhrc2v0cnbeccl4nbp0g1")
    assert logged.rcpt_to == ["alice@corp.example", "bob@corp.example"]


def test_portal_handler_sends_an_admin_to_the_cognito_managed_login(stack, monkeypatch):
    """Through Mangum as API Gateway calls it ($default route, no authorizer): /admin/login on the
    AWS runtime answers with the managed login's authorize URL for the configured callback, and
    the sign-in's secrets ride in a Secure, HttpOnly, SameSite=Lax cookie."""
    from urllib.parse import parse_qs, urlsplit

    import boto3

    monkeypatch.syspath_prepend(str(ROOT / "web"))
    secret = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="admin-session", SecretString="k" * 64)["ARN"]
    for name, value in {"MAILMOAT_COGNITO_USER_POOL_ID": "us-east-1_Mm0Test",
                        "MAILMOAT_COGNITO_CLIENT_ID": "7test0client0id",
                        "MAILMOAT_COGNITO_DOMAIN": "mm-test.auth.us-east-1.amazoncognito.com",
                        "MAILMOAT_ADMIN_SESSION_SECRET_ARN": secret}.items():
        monkeypatch.setenv(name, value)
    handler = load_handler("web/app.py")
    request = event("http-api-portal-get.json")
    request.update(rawPath="/admin/login", rawQueryString="", queryStringParameters=None)
    request["requestContext"]["http"]["path"] = "/admin/login"
    response = handler(request, FakeContext())
    assert response["statusCode"] == 303
    location = urlsplit(response["headers"]["location"])
    assert (location.netloc, location.path) == ("mm-test.auth.us-east-1.amazoncognito.com", "/oauth2/authorize")
    query = parse_qs(location.query)
    assert query["redirect_uri"] == ["https://portal.example.net/admin/oauth2/callback"]
    assert query["client_id"] == ["7test0client0id"] and query["code_challenge_method"] == ["S256"]
    (flow,) = [c for c in response.get("cookies", []) if c.startswith("mm_admin_oidc=")]
    assert "Secure" in flow and "HttpOnly" in flow and "samesite=lax" in flow.lower()
    assert "Path=/admin/oauth2" in flow


def test_directory_publish_reports_when_another_rule_set_is_active_and_never_activates_ours(stack, capsys):
    """SES has one active receipt rule set per account and region: while another is active
    (WorkMail, a second stack) this stack receives nothing. The publish reports it every run
    (ReceiptRuleSetInactive = 1, ERROR log) and leaves the account's choice alone."""
    ses = ses_rule_set(stack)
    ses.create_receipt_rule_set(RuleSetName="workmail-inbound")
    ses.set_active_receipt_rule_set(RuleSetName="workmail-inbound")
    handler = load_handler("functions/directory_publish/app.py")
    assert handler(event("schedule.json"), FakeContext()) == {"batchItemFailures": []}
    assert ses.describe_active_receipt_rule_set()["Metadata"]["Name"] == "workmail-inbound"
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if line.startswith("{") and "ReceiptRuleSetInactive" in line]
    assert [m["ReceiptRuleSetInactive"] for m in metrics] == [[1.0]]
    ses.set_active_receipt_rule_set(RuleSetName="mailmoat-dev-inbound")
    assert handler(event("schedule.json"), FakeContext()) == {"batchItemFailures": []}
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if line.startswith("{") and "ReceiptRuleSetInactive" in line]
    assert [m["ReceiptRuleSetInactive"] for m in metrics] == [[0.0]]
