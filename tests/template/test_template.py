"""The SAM stack's promises (DESIGN §1, §7; STYLE habit 1) checked on template.yaml itself."""

import ast
import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tests.template.resolve import deployed_template, raw_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
STAGES = ("authenticate", "scan", "isolate", "rewrite", "deliver")
MAX_HANDLER_LINES = 15
# The only actions allowed on Resource "*": the Service Authorization Reference lists no resource
# type for them (docs/aws-limits.md), so an ARN would be denied on a real account. parliament
# (test_iam_parliament.py) checks the other direction: every ARN matches its action's type.
STAR_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    "ses:DescribeReceiptRuleSet", "ses:DescribeReceiptRule", "ses:CreateReceiptRule",
    "ses:UpdateReceiptRule", "ses:DeleteReceiptRule", "ses:DescribeActiveReceiptRuleSet",
    "ses:ListRelays", "ses:CreateRelay", "dynamodb:ListStreams"}


def load_template(**parameters) -> dict:
    """The stack a deploy with the default parameters (plus these) gets: conditions decided."""
    return deployed_template(**parameters)


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def receipt_rules_template() -> dict:
    """Classic SES receiving and SES re-send, the stack parameter's alternative."""
    return load_template(Ingress="receipt-rules", DeliveryMode="ses")


def of_type(template: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def props(resource: dict) -> dict:
    return resource.get("Properties", {})


def referenced(value) -> set[str]:
    """Logical ids a value points at through Ref, GetAtt or ${...} in Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
            found |= referenced(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= referenced(inner)
    return found


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def function_env(template: dict, name: str) -> dict:
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    env.update(props(template["Resources"][name]).get("Environment", {}).get("Variables", {}))
    return env


def function_timeout(template: dict, name: str) -> int:
    return props(template["Resources"][name]).get(
        "Timeout", template["Globals"]["Function"].get("Timeout", 3))


def functions(template: dict) -> dict[str, dict]:
    return of_type(template, "AWS::Serverless::Function")


def role_statements(template: dict, function_name: str) -> list[dict]:
    role = template["Resources"][props(functions(template)[function_name])["Role"]["Fn::GetAtt"][0]]
    statements = []
    for policy in props(role).get("Policies", []):
        statements += as_list(policy["PolicyDocument"]["Statement"])
    for arn in props(role).get("ManagedPolicyArns", []):
        (managed,) = referenced(arn)
        statements += as_list(props(template["Resources"][managed])["PolicyDocument"]["Statement"])
    return statements


def allows(statements: list[dict], action: str, target: str) -> bool:
    """Whether an Allow statement grants `action` on a resource that mentions `target`."""
    for st in statements:
        if st["Effect"] != "Allow" or action not in as_list(st["Action"]):
            continue
        if target in referenced(st["Resource"]) or target in json.dumps(st["Resource"]):
            return True
    return False


# --- checks that return problems, so each can be shown to fail on a broken template ----------

def queue_problems(template: dict) -> list[str]:
    problems = []
    queues = of_type(template, "AWS::SQS::Queue")
    dlqs = {k for k in queues if k.endswith("DLQ")}
    used_dlqs = set()
    for name, queue in queues.items():
        if name in dlqs:
            continue
        redrive = props(queue).get("RedrivePolicy")
        if not redrive:
            problems.append(f"{name}: no RedrivePolicy")
            continue
        target = referenced(redrive.get("deadLetterTargetArn"))
        if not target or not target <= dlqs:
            problems.append(f"{name}: dead-letter target {target} is not a DLQ")
        if redrive.get("maxReceiveCount") != 5:
            problems.append(f"{name}: maxReceiveCount {redrive.get('maxReceiveCount')}")
        used_dlqs |= target
    for fn in functions(template).values():
        for event in props(fn).get("Events", {}).values():
            used_dlqs |= referenced(event["Properties"].get("DestinationConfig", {}))
    problems += [f"{dlq}: no queue or stream sends to it" for dlq in sorted(dlqs - used_dlqs)]
    return problems


def iam_problems(template: dict) -> list[str]:
    problems = []
    documents = []
    for name, res in template["Resources"].items():
        p = props(res)
        if res["Type"] == "AWS::IAM::Role":
            documents += [(name, pol["PolicyDocument"]) for pol in p.get("Policies", [])]
        elif res["Type"] in {"AWS::IAM::ManagedPolicy", "AWS::IAM::Policy",
                             "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"}:
            documents.append((name, p["PolicyDocument"]))
    for name, doc in documents:
        for st in as_list(doc["Statement"]):
            if st["Effect"] != "Allow":
                continue  # a Deny with s3:* only ever takes away
            actions = as_list(st["Action"])
            problems += [f"{name}: wildcard action {a}" for a in actions if "*" in a]
            if "*" in as_list(st.get("Resource", [])) and not set(actions) <= STAR_RESOURCE_ACTIONS:
                problems.append(f"{name}: Resource * for {actions}")
            if st.get("Principal") == "*" or st.get("Principal") == {"AWS": "*"}:
                problems.append(f"{name}: Allow to any principal")
    return problems


def bucket_problems(template: dict) -> list[str]:
    problems = []
    policies = {next(iter(referenced(props(p)["Bucket"]))): props(p)["PolicyDocument"]
                for p in of_type(template, "AWS::S3::BucketPolicy").values()}
    for name, bucket in of_type(template, "AWS::S3::Bucket").items():
        p = props(bucket)
        block = p.get("PublicAccessBlockConfiguration", {})
        for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                     "RestrictPublicBuckets"):
            if block.get(flag) is not True:
                problems.append(f"{name}: {flag} not true")
        rules = p.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
        if not any(r.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules):
            problems.append(f"{name}: no default encryption")
        if not p.get("LifecycleConfiguration", {}).get("Rules"):
            problems.append(f"{name}: no lifecycle rules")
        denies = [st for st in as_list(policies.get(name, {}).get("Statement", []))
                  if st["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(st)]
        if not denies:
            problems.append(f"{name}: plain-HTTP access not denied")
    return problems


def event_source_problems(template: dict) -> list[str]:
    problems = []
    queues = of_type(template, "AWS::SQS::Queue")
    for name, fn in functions(template).items():
        for event_name, event in props(fn).get("Events", {}).items():
            ep = event["Properties"]
            if event["Type"] in {"SQS", "DynamoDB"} and (
                    "ReportBatchItemFailures" not in ep.get("FunctionResponseTypes", [])):
                problems.append(f"{name}.{event_name}: no ReportBatchItemFailures")
            if event["Type"] == "SQS":
                (queue,) = referenced(ep["Queue"])
                visibility = props(queues[queue]).get("VisibilityTimeout", 30)
                if visibility < 6 * function_timeout(template, name):
                    problems.append(f"{queue}: visibility {visibility} s < 6 x {name} timeout")
    return problems


def test_cfn_lint_reports_nothing():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    command = str(cfn_lint) if cfn_lint.exists() else shutil.which("cfn-lint")
    assert command, "cfn-lint is not installed (it is a dev dependency)"
    result = subprocess.run([command, "--format", "parseable", str(TEMPLATE)],
                            capture_output=True, text=True, timeout=300)
    # Exit code is a bit mask (2 errors, 4 warnings, 8 informational): the template is clean of
    # all three and stays so.
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not (ROOT / ".venv-tools/bin/sam").exists(),
                    reason="aws-sam-cli not installed (scripts/sam-validate.sh installs it)")
def test_sam_validate_lint_offline(tmp_path):
    # SAM's own transform as well as cfn-lint; it needs a region and, through boto3, some
    # credentials, never a network connection.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SAM_CLI_TELEMETRY": "0",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([str(ROOT / ".venv-tools/bin/sam"), "validate", "--lint",
                             "--template", str(TEMPLATE), "--region", "us-east-1"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_is_a_sam_template_with_the_agreed_parameters(template):
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    params = template["Parameters"]
    assert {"Domains", "StageName", "DeliveryMode", "RetentionDays", "RelayIdentity",
            "ArcKeySecretArn", "AlarmEmail", "Ingress"} <= set(params)
    assert params["DeliveryMode"]["AllowedValues"] == ["mailmanager", "ses", "smtp"]
    assert params["DeliveryMode"]["Default"] == "mailmanager"
    assert params["Ingress"]["AllowedValues"] == ["mailmanager", "receipt-rules"]
    assert params["Ingress"]["Default"] == "mailmanager"
    assert params["Domains"]["Type"] == "CommaDelimitedList"
    assert template["Globals"]["Function"]["Tracing"] == "Active"


def test_every_stage_queue_has_a_dlq(template):
    assert queue_problems(template) == []
    assert {f"{s.capitalize()}Queue" for s in STAGES} <= set(of_type(template, "AWS::SQS::Queue"))


def test_queue_check_catches_a_missing_redrive(template):
    broken = copy.deepcopy(template)
    del broken["Resources"]["ScanQueue"]["Properties"]["RedrivePolicy"]
    assert queue_problems(broken) == ["ScanQueue: no RedrivePolicy",
                                      "ScanDLQ: no queue or stream sends to it"]


def test_no_wildcard_actions_and_no_star_resources(template, receipt_rules_template):
    assert iam_problems(template) == []
    assert iam_problems(receipt_rules_template) == []


def test_every_star_resource_grant_says_why_and_the_creating_ones_are_tag_bound(template, receipt_rules_template):
    """Resource "*" only in statements with a Sid naming the reason; CreateRelay/TagResource
    only with our stack tag on the request (their relays are the only ones we may touch)."""
    for variant in (template, receipt_rules_template):
        for name, res in of_type(variant, "AWS::IAM::Role").items():
            for pol in props(res).get("Policies", []):
                for st in as_list(pol["PolicyDocument"]["Statement"]):
                    if "*" not in as_list(st.get("Resource", [])):
                        continue
                    assert st.get("Sid"), f"{name}: Resource * without a Sid"
                    if "ses:CreateRelay" in as_list(st["Action"]):
                        assert st["Condition"]["StringEquals"]["aws:RequestTag/mailmoat-stack"] == {
                            "Ref": "AWS::StackName"}


def test_iam_check_catches_wildcards(template):
    broken = copy.deepcopy(template)
    statements = broken["Resources"]["ScanRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    statements["Statement"].append({"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    assert iam_problems(broken) == ["ScanRole: wildcard action s3:*",
                                    "ScanRole: Resource * for ['s3:*']"]


def test_buckets_are_private_encrypted_and_expire(template):
    assert bucket_problems(template) == []


def test_bucket_check_catches_a_public_bucket(template):
    broken = copy.deepcopy(template)
    del broken["Resources"]["QuarantineBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert len(bucket_problems(broken)) == 4


def test_raw_bucket_versioned_and_expires_by_retention(template):
    p = props(template["Resources"]["RawMailBucket"])
    assert p["VersioningConfiguration"] == {"Status": "Enabled"}
    raw_rule = next(r for r in p["LifecycleConfiguration"]["Rules"] if r.get("Prefix") == "raw/")
    assert raw_rule["ExpirationInDays"] == {"Ref": "RetentionDays"}
    quarantine = props(template["Resources"]["QuarantineBucket"])["LifecycleConfiguration"]
    assert quarantine["Rules"][0]["ExpirationInDays"] == {"Ref": "RetentionDays"}


def test_only_ses_of_this_account_may_put_raw_mail(receipt_rules_template):
    template = receipt_rules_template
    doc = props(template["Resources"]["RawMailBucketPolicy"])["PolicyDocument"]
    allows_ = [st for st in doc["Statement"] if st["Effect"] == "Allow"]
    assert len(allows_) == 1
    (st,) = allows_
    assert st["Principal"] == {"Service": "ses.amazonaws.com"}
    assert st["Action"] == "s3:PutObject"
    assert st["Resource"] == {"Fn::Sub": "${RawMailBucket.Arn}/raw/*"}
    assert st["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    source_arn = st["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    rule_set = props(template["Resources"]["ReceiptRuleSet"])["RuleSetName"]["Fn::Sub"]
    assert f"receipt-rule-set/{rule_set}:receipt-rule/" in source_arn


def test_receipt_rule_stores_raw_mail_after_the_bucket_policy(receipt_rules_template):
    template = receipt_rules_template
    rule = template["Resources"]["ReceiptRule"]
    assert "RawMailBucketPolicy" in as_list(rule["DependsOn"])
    r = props(rule)["Rule"]
    assert r["Recipients"] == {"Ref": "Domains"}
    assert r["ScanEnabled"] is True
    assert r["TlsPolicy"] == {"Ref": "TlsPolicy"}
    assert template["Parameters"]["TlsPolicy"]["AllowedValues"] == ["Require", "Optional"]
    assert r["Actions"] == [{"S3Action": {"BucketName": {"Ref": "RawMailBucket"},
                                          "ObjectKeyPrefix": "raw/",
                                          "TopicArn": {"Ref": "ReceiptNotificationTopic"}}}]


def test_raw_objects_notify_the_authenticate_queue(template):
    bucket = template["Resources"]["RawMailBucket"]
    (config,) = props(bucket)["NotificationConfiguration"]["QueueConfigurations"]
    assert referenced(config["Queue"]) == {"AuthenticateQueue"}
    assert config["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "raw/"}]
    assert "AuthenticateQueuePolicy" in as_list(bucket["DependsOn"])
    (st,) = props(template["Resources"]["AuthenticateQueuePolicy"])["PolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": "s3.amazonaws.com"}
    # The queue policy names the bucket by the same name the bucket is given.
    bucket_name = props(bucket)["BucketName"]["Fn::Sub"]
    assert st["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"].endswith(f":::{bucket_name}")


def test_every_function_code_exists(template):
    for name, fn in functions(template).items():
        p = props(fn)
        if p.get("PackageType") == "Image":
            meta = fn["Metadata"]
            assert (ROOT / meta.get("DockerContext", ".") / meta["Dockerfile"]).is_file(), name
            continue
        module, _, attr = p["Handler"].rpartition(".")
        source = ROOT / p["CodeUri"] / f"{module.replace('.', '/')}.py"
        assert source.is_file(), f"{name}: {source} missing"
        assert f"def {attr}(" in source.read_text() or f"{attr} =" in source.read_text(), name
        assert p["Runtime"] == "python3.12", name
        assert p["Layers"] == [{"Ref": "CoreLayer"}], name


def test_core_layer_is_built_from_layers_core(template):
    layer = template["Resources"]["CoreLayer"]
    assert props(layer)["ContentUri"] == "layers/core/"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert (ROOT / "layers/core/requirements.txt").is_file()


def test_layer_requirements_match_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {re.split(r"[=<>~!\[ ]", d)[0].lower(): d.replace(" ", "")
                for d in pyproject["project"]["dependencies"]}
    requirements = (ROOT / "layers/core/requirements.txt").read_text()
    lines = [line.strip() for line in requirements.splitlines()]
    layer = {re.split(r"[=<>~!\[ ]", d)[0].lower(): d for d in lines if d and not d.startswith("#")}
    local_only = {"aiosmtpd", "uvicorn", "prometheus_client"}
    hint = ("layers/core/requirements.txt (the Lambda layer and the scan image) must list "
            "pyproject's [project] dependencies, minus aiosmtpd, uvicorn and prometheus_client, "
            "with the same pins")
    assert set(layer) == set(declared) - local_only, hint
    assert {k: declared.get(k) for k in layer} == layer, hint


def image_handler_sources(template: dict) -> dict[str, str]:
    """Image function → the functions/<name>/app.py it runs: its command (ImageConfig, else the
    Dockerfile's CMD) names a module the Dockerfile copies from that file."""
    found = {}
    for name, fn in functions(template).items():
        if props(fn).get("PackageType") != "Image":
            continue
        dockerfile = (ROOT / fn["Metadata"].get("DockerContext", ".") / fn["Metadata"]["Dockerfile"]).read_text()
        copies = dict((m, src) for src, m in re.findall(
            r"^COPY\s+(functions/\S+/app\.py)\s+\$\{LAMBDA_TASK_ROOT\}/(\w+)\.py", dockerfile, re.M))
        command = props(fn).get("ImageConfig", {}).get("Command") or json.loads(
            re.search(r"^CMD\s+(\[.*\])", dockerfile, re.M).group(1))
        module = command[0].rpartition(".")[0]
        assert module in copies, f"{name}: the image has no {module}.py"
        found[name] = copies[module]
    return found


def test_image_functions_run_their_own_handler(template):
    assert image_handler_sources(template) == {
        "ScanFunction": "functions/scan/app.py",
        "SignatureUpdateFunction": "functions/signature_update/app.py",
        "RetrohuntFunction": "functions/retrohunt/app.py",
        "AvScanFunction": "functions/avscan/app.py",
        "ConvertFunction": "functions/convert/app.py"}


def test_every_handler_directory_is_a_function(template):
    code_dirs = {props(fn).get("CodeUri", "").rstrip("/") for fn in functions(template).values()}
    code_dirs |= {str(Path(src).parent) for src in image_handler_sources(template).values()}
    handler_dirs = {f"functions/{p.parent.name}" for p in (ROOT / "functions").glob("*/app.py")}
    assert handler_dirs <= code_dirs
    # five stages, reconcile, two for the directory, signatures, spam digest, the portal's
    # antivirus, the PDF converter, the sandbox poll
    assert len(handler_dirs) == 14


def test_every_event_source_reports_partial_failures_and_outlives_retries(template):
    assert event_source_problems(template) == []


def test_event_source_check_catches_short_visibility(template):
    broken = copy.deepcopy(template)
    broken["Resources"]["ScanQueue"]["Properties"]["VisibilityTimeout"] = 300
    del broken["Resources"]["DeliverFunction"]["Properties"]["Events"]["Queue"]["Properties"][
        "FunctionResponseTypes"]
    assert event_source_problems(broken) == [
        "ScanQueue: visibility 300 s < 6 x ScanFunction timeout",
        "DeliverFunction.Queue: no ReportBatchItemFailures",
    ]


def test_stages_chain_through_their_queues(template):
    """Each stage reads its own queue and may send only to it (the runner's retries) and to the
    next stage's; its environment names exactly those queues."""
    for i, stage in enumerate(STAGES):
        fn_name = f"{stage.capitalize()}Function"
        own = f"{stage.capitalize()}Queue"
        (event,) = props(functions(template)[fn_name])["Events"].values()
        assert event["Type"] == "SQS"
        assert referenced(event["Properties"]["Queue"]) == {own}
        statements = role_statements(template, fn_name)
        sends = set().union(*(referenced(st["Resource"]) for st in statements
                              if "sqs:SendMessage" in as_list(st["Action"])))
        env = function_env(template, fn_name)
        named = env["MAILMOAT_STAGE_QUEUE_URLS"]["Fn::Sub"]
        expected = {own} | ({f"{STAGES[i + 1].capitalize()}Queue"} if i + 1 < len(STAGES) else set())
        assert sends == expected, fn_name
        assert {part.split("=", 1)[1].strip("${}") for part in named.split(",")} == expected
        assert "MAILMOAT_NEXT_QUEUE_URL" not in env


def test_every_function_has_its_own_explicit_role(template):
    roles = [props(fn)["Role"] for fn in functions(template).values()]
    assert all(set(r) == {"Fn::GetAtt"} for r in roles)  # not a SAM-generated role
    assert len({r["Fn::GetAtt"][0] for r in roles}) == len(roles)
    assert not any("Policies" in props(fn) for fn in functions(template).values())


def test_only_the_rewrite_role_reads_the_arc_key(template):
    for name in functions(template):
        reads = allows(role_statements(template, name), "secretsmanager:GetSecretValue",
                       "ArcKeySecretArn")
        assert reads == (name == "RewriteFunction"), name
    assert not any("secretsmanager" in json.dumps(st)
                   for st in role_statements(template, "ScanFunction"))
    assert "MAILMOAT_ARC_KEY_SECRET_ARN" not in function_env(template, "ScanFunction")


def test_quarantine_writers(template):
    writers = {name for name in functions(template)
               if allows(role_statements(template, name), "s3:PutObject", "QuarantineBucket")}
    # ConvertFunction writes only the PDFs under isolated/convert/ (test_convert_template.py).
    assert writers == {"IsolateFunction", "PortalFunction", "ConvertFunction"}
    assert "AuthenticateFunction" not in writers


def test_ses_sending_is_scoped_to_the_relay_identity(template):
    # The digest and a released spam copy go out like any delivery (the tenant's mailer), so
    # they send as the relay too; DSNs go out as postmaster@ the relay identity's domain.
    senders = {"DeliverFunction", "SpamDigestFunction", "PortalFunction", "RetrohuntFunction",
               "SandboxPollFunction"}
    for name in functions(template):
        ses_sends = [st for st in role_statements(template, name)
                     if {"ses:SendRawEmail", "ses:SendEmail"} & set(as_list(st["Action"]))]
        if name not in senders:
            assert ses_sends == [], name
            continue
        (st,) = ses_sends
        assert st["Resource"]["Fn::Sub"].endswith(":identity/${RelayIdentity}")


def test_runtime_environment(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["MAILMOAT_RUNTIME"] == "aws"
    for var, resource in [("MAILMOAT_RAW_BUCKET", "RawMailBucket"),
                          ("MAILMOAT_QUARANTINE_BUCKET", "QuarantineBucket"),
                          ("MAILMOAT_MESSAGE_LOG_TABLE", "MessageLogTable"),
                          ("MAILMOAT_DIRECTORY_TABLE", "DirectoryTable"),
                          ("MAILMOAT_ISOLATED_FILES_TABLE", "IsolatedFilesTable"),
                          ("MAILMOAT_IDEMPOTENCY_TABLE", "IdempotencyTable")]:
        assert env[var] == {"Ref": resource}, var


def test_aws_settings_read_every_variable_the_template_sets(template):
    from mailmoat.settings import AwsSettings

    known = {f"MAILMOAT_{f.upper()}" for f in AwsSettings.model_fields}
    set_vars = set()
    for name in functions(template):
        set_vars |= {v for v in function_env(template, name) if v.startswith("MAILMOAT_")}
    assert set_vars - known == set()


def test_tables(template):
    r = template["Resources"]
    stream = props(r["DirectoryTable"])["StreamSpecification"]
    assert stream == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    for table in ("MessageLogTable", "IsolatedFilesTable", "IdempotencyTable"):
        assert props(r[table])["TimeToLiveSpecification"]["Enabled"] is True, table
    events = props(r["DirectoryPublishFunction"])["Events"]
    assert events["DirectoryStream"]["Type"] == "DynamoDB"
    assert events["DirectoryStream"]["Properties"]["Stream"] == {
        "Fn::GetAtt": ["DirectoryTable", "StreamArn"]}


def test_alarms_watch_every_dlq_and_every_stage_queue_age(template):
    alarms = of_type(template, "AWS::CloudWatch::Alarm").values()
    watched = {(props(a)["MetricName"], target) for a in alarms
               for target in referenced(props(a)["Dimensions"])}
    for dlq in (k for k in of_type(template, "AWS::SQS::Queue") if k.endswith("DLQ")):
        assert ("ApproximateNumberOfMessagesVisible", dlq) in watched, dlq
    for stage in STAGES:
        assert ("ApproximateAgeOfOldestMessage", f"{stage.capitalize()}Queue") in watched
    for alarm in alarms:
        assert props(alarm)["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    with_email = load_template(AlarmEmail="ops@example.com")
    sub = props(with_email["Resources"]["AlarmSubscription"])
    assert sub["Endpoint"] == {"Ref": "AlarmEmail"} and sub["Protocol"] == "email"
    assert "AlarmSubscription" not in template["Resources"]  # no address, no subscription


def handler_files() -> list[Path]:
    return [*sorted((ROOT / "functions").glob("*/app.py")), ROOT / "web/app.py"]


@pytest.mark.parametrize("path", handler_files(), ids=lambda p: p.parent.name)
def test_handlers_are_thin(path):
    code = [line for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]
    assert len(code) <= MAX_HANDLER_LINES, f"{path}: {len(code)} lines of code"


@pytest.mark.parametrize("path", sorted((ROOT / "functions").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_handlers_touch_no_aws_sdk_and_no_environment(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"boto3", "botocore", "os"}, path


def test_samconfig_defaults():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["stack_name"] == "mailmoat-dev"
    assert "CAPABILITY_IAM" in deploy["capabilities"]
    assert deploy["confirm_changeset"] is True
    assert "region" in deploy
    text = (ROOT / "samconfig.toml").read_text().lower()
    assert not re.search(r"(secret_access_key|aws_secret|password|token)\s*=", text)


def schedule_driven(template: dict) -> set[str]:
    return {name for name, fn in functions(template).items()
            if any(e["Type"] == "Schedule" for e in props(fn).get("Events", {}).values())}


def test_every_scheduled_function_has_an_errors_alarm(template):
    """A scheduled run has no queue to keep its failure: its Errors metric is alarmed instead."""
    alarmed = {next(iter(referenced(props(a)["Dimensions"])))
               for a in of_type(template, "AWS::CloudWatch::Alarm").values()
               if props(a)["Namespace"] == "AWS/Lambda" and props(a)["MetricName"] == "Errors"}
    assert schedule_driven(template) == {"ReconcileFunction", "DirectorySyncFunction",
                                         "DirectoryPublishFunction", "SignatureUpdateFunction",
                                         "SpamDigestFunction", "RetrohuntFunction",
                                         "SandboxPollFunction"}
    assert schedule_driven(template) <= alarmed


def test_schedules(template):
    def rates(name):
        return [e["Properties"]["Schedule"] for e in props(functions(template)[name])["Events"].values()
                if e["Type"] == "Schedule"]

    # ClamAV: not more than hourly; at fixed times so that the retro-hunt check follows each.
    assert rates("SignatureUpdateFunction") == ["cron(0 */2 * * ? *)"]
    assert rates("RetrohuntFunction") == ["cron(30 */2 * * ? *)"]
    assert rates("SandboxPollFunction") == ["rate(5 minutes)"]  # analysing files (sandbox)
    assert rates("DirectorySyncFunction") == ["rate(1 hour)"]
    assert rates("DirectoryPublishFunction") == ["rate(1 hour)"]
    assert len(rates("SpamDigestFunction")) == 1 and rates("SpamDigestFunction")[0].startswith("cron(")


def test_directory_publish_is_a_single_writer_of_the_receipt_rules(receipt_rules_template):
    template = receipt_rules_template
    p = props(functions(template)["DirectoryPublishFunction"])
    assert p["ReservedConcurrentExecutions"] == 1
    env = function_env(template, "DirectoryPublishFunction")
    assert env["MAILMOAT_INGRESS"] == {"Ref": "Ingress"}
    assert env["MAILMOAT_RECEIPT_RULE_SET"] == {"Ref": "ReceiptRuleSet"}
    assert env["MAILMOAT_RECEIPT_RULE"] == props(template["Resources"]["ReceiptRule"])["Rule"]["Name"]
    assert env["MAILMOAT_RECEIPT_DOMAINS"] == {"Fn::Join": [",", {"Ref": "Domains"}]}
    stream = p["Events"]["DirectoryStream"]["Properties"]
    assert not stream.get("BisectBatchOnFunctionError")  # a batch is one recompute: nothing to bisect
    ses_actions = {a for st in role_statements(template, "DirectoryPublishFunction")
                   for a in as_list(st["Action"]) if a.startswith("ses:")}
    assert ses_actions == {"ses:DescribeReceiptRuleSet", "ses:DescribeReceiptRule",
                           "ses:CreateReceiptRule", "ses:UpdateReceiptRule", "ses:DeleteReceiptRule",
                           "ses:DescribeActiveReceiptRuleSet"}
    assert "RecipientAddressList" not in template["Resources"]  # no Mail Manager in this variant


def test_recipient_ceiling_alarm_watches_the_metric_the_publisher_emits(template):
    from mailmoat.aws import observability

    alarm = props(template["Resources"]["RecipientCeilingAlarm"])
    assert alarm["Namespace"] == observability.NAMESPACE
    assert alarm["MetricName"] == observability.RECIPIENT_CONDITIONS_OVER_CEILING
    # powertools adds the service dimension to every metric; the alarm must name it to match.
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "mailmoat"}]
    assert template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == "mailmoat"


def test_signature_update_runs_freshclam_in_the_scan_image(template):
    fn = functions(template)["SignatureUpdateFunction"]
    assert props(fn)["PackageType"] == "Image"
    assert fn["Metadata"]["Dockerfile"] == functions(template)["ScanFunction"]["Metadata"]["Dockerfile"]
    dockerfile = (ROOT / "functions/scan/Dockerfile").read_text()
    assert "clamav-update" in dockerfile  # the package with freshclam
    assert "DatabaseDirectory /tmp/clamav" in dockerfile  # what the scan stage fills (signature_dir)
    writes = [st for st in role_statements(template, "SignatureUpdateFunction")
              if "s3:PutObject" in as_list(st["Action"])]
    assert [st["Resource"] for st in writes] == [{"Fn::Sub": "${SignatureBucket.Arn}/clamav/*"}]
    reads = [st for st in role_statements(template, "ScanFunction")
             if "s3:GetObjectVersion" in as_list(st["Action"])]
    assert [st["Resource"] for st in reads] == [{"Fn::Sub": "${SignatureBucket.Arn}/clamav/*"}]


def test_archive_bucket_is_put_only_for_deliver_with_optional_object_lock(template):
    raw = raw_template()  # the Fn::If as written: the lock is a condition of the template
    bucket = props(raw["Resources"]["ArchiveBucket"])
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["ObjectLockEnabled"] == {"Fn::If": ["HasArchiveLock", True, {"Ref": "AWS::NoValue"}]}
    lock = bucket["ObjectLockConfiguration"]["Fn::If"]
    assert "ObjectLockConfiguration" not in props(template["Resources"]["ArchiveBucket"])  # off by default
    assert lock[0] == "HasArchiveLock"
    assert lock[1]["Rule"]["DefaultRetention"]["Days"] == {"Ref": "ArchiveRetentionDays"}
    assert template["Parameters"]["ArchiveRetentionDays"]["Default"] == 0  # off unless asked for
    assert template["Conditions"]["HasArchiveLock"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ArchiveRetentionDays"}, "0"]}]}
    touching = {name: [a for st in role_statements(template, name) if "ArchiveBucket" in referenced(st["Resource"])
                       for a in as_list(st["Action"])] for name in functions(template)}
    assert {k: v for k, v in touching.items() if v} == {"DeliverFunction": ["s3:PutObject"]}
    assert function_env(template, "DeliverFunction")["MAILMOAT_ARCHIVE_BUCKET"] == {"Ref": "ArchiveBucket"}


def test_the_console_signs_in_through_the_cognito_managed_login(template):
    r = template["Resources"]
    # No API Gateway authorizer: a browser never sends the Authorization header it reads. One
    # $default route to the portal function; the app checks sessions itself (admin/oidc.py).
    assert r["PortalApi"]["Type"] == "AWS::ApiGatewayV2::Api"
    assert "JWT" not in json.dumps(template) and not of_type(template, "AWS::ApiGatewayV2::Authorizer")
    routes = of_type(template, "AWS::ApiGatewayV2::Route")
    assert [props(x)["RouteKey"] for x in routes.values()] == ["$default"]
    assert not any(props(x).get("AuthorizationType", "NONE") != "NONE" for x in routes.values())
    integration = props(r["PortalIntegration"])
    assert integration["IntegrationUri"] == {"Fn::GetAtt": ["PortalFunction", "Arn"]}
    assert integration["PayloadFormatVersion"] == "2.0"
    assert "Events" not in props(functions(template)["PortalFunction"])
    permission = props(r["PortalInvokePermission"])
    assert permission["Principal"] == "apigateway.amazonaws.com" and "PortalApi" in referenced(permission["SourceArn"])

    pool = props(r["AdminUserPool"])
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["MfaConfiguration"] == "ON"
    assert {"Name": "tenant", "AttributeDataType": "String", "Mutable": True} in pool["Schema"]
    client = props(r["AdminUserPoolClient"])
    assert client["GenerateSecret"] is False
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert client["AllowedOAuthFlows"] == ["code"]
    assert set(client["AllowedOAuthScopes"]) == {"openid", "email"}
    assert client["SupportedIdentityProviders"] == ["COGNITO"]
    (callback,) = client["CallbackURLs"]
    (logout,) = client["LogoutURLs"]
    assert callback["Fn::Sub"].endswith("/admin/oauth2/callback") and "PortalApi" in referenced(callback)
    assert logout["Fn::Sub"].endswith("/admin/") and "PortalApi" in referenced(logout)
    assert "custom:tenant" in client["ReadAttributes"]
    assert client["WriteAttributes"] == ["email"]  # nobody sets their own tenant
    group = props(r["AdminOperatorsGroup"])
    assert group["GroupName"] == "mailmoat-operators" and group["UserPoolId"] == {"Ref": "AdminUserPool"}
    assert "AdminUserPool" in referenced(props(r["AdminUserPoolDomain"]))

    from mailmoat.settings import AwsSettings
    from mailmoat_web.admin.console import COGNITO_OPERATOR_GROUP

    assert group["GroupName"] == COGNITO_OPERATOR_GROUP
    env = function_env(template, "PortalFunction")
    assert env["MAILMOAT_COGNITO_USER_POOL_ID"] == {"Ref": "AdminUserPool"}
    assert env["MAILMOAT_COGNITO_CLIENT_ID"] == {"Ref": "AdminUserPoolClient"}
    assert "AdminUserPoolDomain" in referenced(env["MAILMOAT_COGNITO_DOMAIN"])
    assert env["MAILMOAT_ADMIN_SESSION_SECRET_ARN"] == {"Ref": "AdminSessionSecret"}
    assert {"cognito_domain", "admin_session_secret_arn"} <= set(AwsSettings.model_fields)
    readers = {name for name in functions(template)
               if allows(role_statements(template, name), "secretsmanager:GetSecretValue", "AdminSessionSecret")}
    assert readers == {"PortalFunction"}


def actions_on(template: dict, target: str) -> dict[str, set[str]]:
    """Per function, the actions its role allows on resources that mention `target`."""
    found = {name: {a for st in role_statements(template, name) if st["Effect"] == "Allow"
                    and (target in referenced(st["Resource"]) or target in json.dumps(st["Resource"]))
                    for a in as_list(st["Action"])} for name in functions(template)}
    return {name: acts for name, acts in found.items() if acts}


def test_spam_quarantine_table_secret_and_who_touches_them(template):
    r = template["Resources"]
    table = props(r["SpamQuarantineTable"])
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]  # aws_dynamodb_spam.py
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    generated = props(r["SpamLinkSecret"])["GenerateSecretString"]
    assert generated["PasswordLength"] >= 48 and generated["ExcludePunctuation"] is True
    # What each function's code calls (spam/detect, quarantine.hold/release, digest).
    assert actions_on(template, "SpamQuarantineTable") == {
        "AuthenticateFunction": {"dynamodb:GetItem"},  # personal allowed senders
        "DeliverFunction": {"dynamodb:PutItem"},  # hold
        "PortalFunction": {"dynamodb:GetItem", "dynamodb:UpdateItem"},  # release, allow sender
        "SpamDigestFunction": {"dynamodb:Scan", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}}
    spamq = {name: acts for name, acts in actions_on(template, "/spamq/*").items()}
    assert spamq == {"DeliverFunction": {"s3:PutObject"}, "PortalFunction": {"s3:GetObject"},
                     "SpamDigestFunction": {"s3:DeleteObject"}}
    readers = {name for name in functions(template)
               if allows(role_statements(template, name), "secretsmanager:GetSecretValue", "SpamLinkSecret")}
    assert readers == {"PortalFunction", "SpamDigestFunction"}
    for name in ("AuthenticateFunction", "DeliverFunction", "PortalFunction", "SpamDigestFunction"):
        assert function_env(template, name)["MAILMOAT_SPAM_TABLE"] == {"Ref": "SpamQuarantineTable"}, name
    for name in ("PortalFunction", "SpamDigestFunction"):
        assert function_env(template, name)["MAILMOAT_SPAM_LINK_SECRET_ARN"] == {"Ref": "SpamLinkSecret"}
    rules = props(r["RawMailBucket"])["LifecycleConfiguration"]["Rules"]
    assert {"Id": "expire-held-spam", "Status": "Enabled", "Prefix": "spamq/",
            "ExpirationInDays": {"Ref": "RetentionDays"}} in rules


def test_portal_role_covers_what_the_console_calls(template):
    portal = actions_on(template, "MessageLogTable")["PortalFunction"]
    assert {"dynamodb:Scan", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:GetItem"} <= portal
    assert {"dynamodb:Scan", "dynamodb:UpdateItem"} <= actions_on(template, "IsolatedFilesTable")["PortalFunction"]
    # Audit rows and policy (PutItem), trail (Query), CSV import (boto3's batch_writer).
    assert {"dynamodb:PutItem", "dynamodb:Query", "dynamodb:BatchWriteItem"} <= \
        actions_on(template, "DirectoryTable")["PortalFunction"]
    assert "s3:GetObject" in actions_on(template, "/raw/*")["PortalFunction"]


def test_keepmail_table_and_who_touches_it(template):
    table = props(template["Resources"]["KeepMailTable"])
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]  # aws_dynamodb_keepmail.py
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    # keepmail.retain + its sweep (deliver); the /k/ pages and their sign-in (portal).
    assert actions_on(template, "KeepMailTable") == {
        "DeliverFunction": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:DeleteItem"},
        "PortalFunction": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                           "dynamodb:DeleteItem", "dynamodb:Query"}}
    assert actions_on(template, "/keep/*") == {"DeliverFunction": {"s3:PutObject", "s3:DeleteObject"},
                                               "PortalFunction": {"s3:GetObject"}}
    for name in ("DeliverFunction", "PortalFunction"):
        assert function_env(template, name)["MAILMOAT_KEEPMAIL_TABLE"] == {"Ref": "KeepMailTable"}


def test_stage_roles_see_a_missing_object_as_missing(template):
    """The runner rebuilds a lost stage state and holds a message whose raw object is gone: both
    need S3's 404. Without s3:ListBucket on the bucket S3 answers 403 AccessDenied for a missing
    key (GetObject API reference), which moto never does; and a prefix condition would not
    match (a GET carries no s3:prefix)."""
    for stage in STAGES:
        statements = role_statements(template, f"{stage.capitalize()}Function")
        listing = [st for st in statements if "s3:ListBucket" in as_list(st["Action"])]
        assert any(referenced(st["Resource"]) == {"RawMailBucket"} and "Condition" not in st
                   for st in listing), stage
    # The portal reads raw copies (admin's .eml, spam release) and isolated files, both expire.
    portal = [st for st in role_statements(template, "PortalFunction")
              if "s3:ListBucket" in as_list(st["Action"])]
    assert {b for st in portal for b in referenced(st["Resource"])} == {"RawMailBucket", "QuarantineBucket"}


def test_a_message_held_after_its_retries_raises_an_alarm_per_stage(template):
    """The runner acknowledges a record it holds (the DLQ stays empty), so each stage's held
    count — the runner's metric, with the dimensions powertools emits — has its own alarm."""
    from mailmoat.runner import HELD_AFTER_RETRIES

    alarms = of_type(template, "AWS::CloudWatch::Alarm").values()
    watched = {d["Value"] for a in alarms if props(a).get("MetricName") == HELD_AFTER_RETRIES
               and props(a).get("Namespace") == "mailmoat"
               for d in props(a)["Dimensions"] if d["Name"] == "stage"}
    assert watched == set(STAGES)


def test_the_inactive_rule_set_alarm_watches_what_the_publisher_emits(template, receipt_rules_template):
    from mailmoat.aws import observability

    alarm = props(receipt_rules_template["Resources"]["ReceiptRuleSetInactiveAlarm"])
    assert alarm["Namespace"] == observability.NAMESPACE
    assert alarm["MetricName"] == observability.RECEIPT_RULE_SET_INACTIVE
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "mailmoat"}]
    assert "ReceiptRuleSetInactiveAlarm" not in template["Resources"]  # Mail Manager: no such rule


def test_mail_manager_inbound_refuses_unknown_recipients_and_stores_raw_mail(template):
    r = template["Resources"]
    ingress = props(r["InboundIngressPoint"])
    assert (ingress["Type"], ingress["TlsPolicy"]) == ("OPEN", "REQUIRED")
    policy = props(r["InboundTrafficPolicy"])
    assert policy["DefaultAction"] == "DENY"
    [statement] = policy["PolicyStatements"]
    assert statement["Action"] == "ALLOW"
    check = statement["Conditions"][0]["BooleanExpression"]
    assert check["Evaluate"]["IsInAddressList"] == {
        "Attribute": "RECIPIENT", "AddressLists": [{"Fn::GetAtt": ["RecipientAddressList", "AddressListArn"]}]}
    [rule] = props(r["InboundRuleSet"])["Rules"]
    [write] = rule["Actions"]  # no archive unless MailManagerArchiveRetention asks for one
    assert write["WriteToS3"]["S3Bucket"] == {"Ref": "RawMailBucket"}
    assert write["WriteToS3"]["S3Prefix"] == "raw"
    assert write["WriteToS3"]["ActionFailurePolicy"] == "DROP"
    role = props(r["MailManagerWriteRole"])
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ses.amazonaws.com"}
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    put, listing = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert (put["Action"], put["Resource"]) == ("s3:PutObject", {"Fn::Sub": "${RawMailBucket.Arn}/raw/*"})
    assert (listing["Action"], listing["Resource"]) == ("s3:ListBucket", {"Fn::GetAtt": ["RawMailBucket", "Arn"]})
    archived = load_template(MailManagerArchiveRetention="ONE_YEAR")
    actions = props(archived["Resources"]["InboundRuleSet"])["Rules"][0]["Actions"]
    assert actions[1] == {"Archive": {"TargetArchive": {"Fn::GetAtt": ["MailManagerArchive", "ArchiveArn"]},
                                      "ActionFailurePolicy": "CONTINUE"}}


def test_mail_manager_submission_is_authenticated_and_only_mail_senders_read_its_password(template):
    r = template["Resources"]
    ingress = props(r["SubmissionIngressPoint"])
    assert (ingress["Type"], ingress["TlsPolicy"]) == ("AUTH", "REQUIRED")
    assert "SubmissionSecret" in ingress["IngressPointConfiguration"]["SmtpPassword"]["Fn::Sub"]
    assert props(r["SubmissionTrafficPolicy"])["DefaultAction"] == "DENY"
    env = function_env(template, "DeliverFunction")
    assert env["MAILMOAT_SUBMISSION_HOST"] == {"Fn::GetAtt": ["SubmissionIngressPoint", "ARecord"]}
    assert env["MAILMOAT_SUBMISSION_USERNAME"] == {"Ref": "SubmissionIngressPoint"}
    readers = {name for name in functions(template) for st in role_statements(template, name)
               if "SubmissionSecret" in referenced(st.get("Resource"))}
    # Whoever sends a tenant's mail: delivery, the portal's spam release, the spam digest.
    assert readers == {"DeliverFunction", "PortalFunction", "SpamDigestFunction", "RetrohuntFunction",
                       "SandboxPollFunction"}
    scaling = props(functions(template)["DeliverFunction"])["Events"]["Queue"]["Properties"]["ScalingConfig"]
    assert scaling == {"MaximumConcurrency": {"Ref": "DeliverConcurrency"}}
    assert template["Parameters"]["DeliverConcurrency"]["MinValue"] == 2
    publish = function_env(template, "DirectoryPublishFunction")
    assert publish["MAILMOAT_ADDRESS_LIST_ID"] == {"Ref": "RecipientAddressList"}
    assert publish["MAILMOAT_SUBMISSION_RULE_SET_ID"] == {"Ref": "SubmissionRuleSet"}


def test_directory_publish_may_tag_only_untagged_or_its_own_relays(template):
    [tagging] = [st for st in role_statements(template, "DirectoryPublishFunction")
                 if "ses:TagResource" in as_list(st["Action"])]
    assert tagging["Resource"]["Fn::Sub"].endswith(":mailmanager-smtp-relay/*")
    ours = {"Ref": "AWS::StackName"}
    assert tagging["Condition"]["StringEquals"] == {"aws:RequestTag/mailmoat-stack": ours}
    # Another stack's relay carries its own mailmoat-stack tag: this one may not re-tag it.
    assert tagging["Condition"]["StringEqualsIfExists"] == {"aws:ResourceTag/mailmoat-stack": ours}


def test_receipt_rules_start_the_pipeline_from_ses_notification_which_names_every_recipient(
        template, receipt_rules_template):
    """The stored object has no envelope; SES's receipt notification (SNS, on the S3 action) has
    receipt.recipients. With receipt rules the notification starts the pipeline and the bucket
    notifies nothing (both would race: the first to arrive decides the recipients)."""
    r = receipt_rules_template["Resources"]
    [action] = props(r["ReceiptRule"])["Rule"]["Actions"]
    assert action["S3Action"]["TopicArn"] == {"Ref": "ReceiptNotificationTopic"}
    sub = props(r["ReceiptNotificationSubscription"])
    assert (sub["Protocol"], sub["Endpoint"]) == ("sqs", {"Fn::GetAtt": ["AuthenticateQueue", "Arn"]})
    assert sub["RawMessageDelivery"] is False  # MessageRef.from_body unwraps the SNS envelope
    assert "NotificationConfiguration" not in props(r["RawMailBucket"])
    [publish] = props(r["ReceiptNotificationTopicPolicy"])["PolicyDocument"]["Statement"]
    assert publish["Principal"] == {"Service": "ses.amazonaws.com"}
    assert publish["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    queue = props(r["AuthenticateQueuePolicy"])["PolicyDocument"]["Statement"]
    assert {st["Principal"]["Service"] for st in queue} == {"s3.amazonaws.com", "sns.amazonaws.com"}
    # Mail Manager: the object's creation starts it, and there is no topic.
    d = template["Resources"]
    assert "ReceiptNotificationTopic" not in d
    assert props(d["RawMailBucket"])["NotificationConfiguration"]["QueueConfigurations"]


def test_sign_in_counters_table_and_only_the_portal_touches_it(template):
    """The portal's sign-in limits (issue 19, item 3): the table the DynamoDB adapter expects, and
    its reserve/settle actions (conditional PutItem, GetItem, DeleteItem) for the portal only."""
    table = props(template["Resources"]["SignInAttemptsTable"])
    assert table["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]  # aws_dynamodb_attempts.py
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    assert actions_on(template, "SignInAttemptsTable") == {
        "PortalFunction": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}}
    assert function_env(template, "PortalFunction")["MAILMOAT_ATTEMPTS_TABLE"] == {"Ref": "SignInAttemptsTable"}
