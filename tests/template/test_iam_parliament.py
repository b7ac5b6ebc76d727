"""Every IAM policy in template.yaml through parliament, offline: actions, ARNs and resource types.

The template's intrinsics are resolved to plausible concrete ARNs of the type each named resource
has, so parliament can tell whether an action accepts the ARN it is granted on (RESOURCE_MISMATCH:
the call is denied on a real account however the ARN is spelled). parliament's community
auditors (privilege escalation, credentials exposure, permissions management, sensitive access)
run too.
"""

import importlib.resources
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

# parliament 1.6.4 finds its bundled data through pkg_resources, which setuptools 82 dropped and
# which this venv (no setuptools) lacks; resource_filename is the only function it calls.
# The stand-in lives only while parliament imports (its two calls are at import time): left in
# sys.modules it would make pytest's monkeypatch.syspath_prepend, which calls
# pkg_resources.fixup_namespace_packages when pkg_resources imports, fail in other tests.
_SHIMMED = importlib.util.find_spec("pkg_resources") is None
if _SHIMMED:
    _shim = types.ModuleType("pkg_resources")
    _shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = _shim

import parliament  # noqa: E402 - after the stand-in above

if _SHIMMED:
    del sys.modules["pkg_resources"]

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"

PARTITION, REGION, ACCOUNT, STACK = "aws", "us-east-1", "123456789012", "mailmoat"
PSEUDO = {
    "AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
    "AWS::StackName": STACK, "AWS::URLSuffix": "amazonaws.com",
}
# Parameters without a Default, given a value of the shape the parameter asks for.
SAMPLE_PARAMETERS = {
    "Domains": ["example.com"],
    "RelayIdentity": "relay.example.com",
    "ArcKeySecretArn": f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}/arc-key-AbCdEf",
}
NO_VALUE = object()
# Policy elements that may be a list, so both branches of an Fn::If in them can be checked.
LISTS = {"Statement", "Action", "NotAction", "Resource", "NotResource"}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


# Findings accepted, keyed by (policy, action, parliament issue); each value says why. This is the
# one place to suppress: anything parliament reports that is not here fails the test.
# An entry reads ("DeliverRole/deliver", "ses:SendRawEmail", "RESOURCE_MISMATCH"): "why", and
# test_every_suppression_still_matches_a_finding removes it once the finding is gone.
SUPPRESSED: dict[tuple[str, str, str], str] = {
}


# --- intrinsics -> concrete values ------------------------------------------------------------

def _name(resource: dict, logical_id: str, key: str, resolve) -> str:
    value = resource.get("Properties", {}).get(key)
    return resolve(value) if value is not None else f"{STACK}-{logical_id}-1A2B3C4D5E6F"


def _short_id(logical_id: str, prefix: str) -> str:
    # Mail Manager resources are addressed by generated ids, not names.
    return f"{prefix}-{re.sub(r'[^a-z0-9]', '', logical_id.lower())[:20]}"


def ref_value(template: dict, logical_id: str, resolve):
    """What `!Ref logical_id` returns, per the CloudFormation return values of its type."""
    if logical_id in PSEUDO:
        return PSEUDO[logical_id]
    if logical_id == "AWS::NoValue":
        return NO_VALUE
    if logical_id in template.get("Parameters", {}):
        param = template["Parameters"][logical_id]
        if "Default" in param:
            return str(param["Default"])
        return SAMPLE_PARAMETERS[logical_id]
    resource = template["Resources"][logical_id]
    kind = resource["Type"]
    by_name = {
        "AWS::S3::Bucket": "BucketName", "AWS::DynamoDB::Table": "TableName",
        "AWS::Logs::LogGroup": "LogGroupName", "AWS::SES::ReceiptRuleSet": "RuleSetName",
    }
    if kind in by_name:
        return _name(resource, logical_id, by_name[kind], resolve)
    if kind == "AWS::SQS::Queue":
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{_name(resource, logical_id, 'QueueName', resolve)}"
    if kind == "AWS::SecretsManager::Secret":
        return getatt_value(template, logical_id, "Id", resolve)
    if kind == "AWS::IAM::ManagedPolicy":
        return f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{_name(resource, logical_id, 'ManagedPolicyName', resolve)}"
    raise KeyError(f"resolver: no Ref value for {logical_id} ({kind}); teach ref_value its type")


def getatt_value(template: dict, logical_id: str, attribute: str, resolve) -> str:
    """What `!GetAtt logical_id.attribute` returns: an ARN of the type the resource has."""
    resource = template["Resources"][logical_id]
    kind = resource["Type"]
    arn = f"arn:{PARTITION}"
    if kind == "AWS::S3::Bucket" and attribute == "Arn":
        return f"{arn}:s3:::{ref_value(template, logical_id, resolve).lower()}"
    if kind == "AWS::SQS::Queue" and attribute == "Arn":
        return f"{arn}:sqs:{REGION}:{ACCOUNT}:{_name(resource, logical_id, 'QueueName', resolve)}"
    if kind == "AWS::DynamoDB::Table":
        table = f"{arn}:dynamodb:{REGION}:{ACCOUNT}:table/{ref_value(template, logical_id, resolve)}"
        if attribute == "Arn":
            return table
        if attribute == "StreamArn":
            # A real label is a timestamp with colons (…/stream/2026-01-01T00:00:00.000), which
            # parliament takes for an extra ARN field and so for the wrong resource type.
            return f"{table}/stream/2026-01-01T00-00-00.000"
    if kind == "AWS::Logs::LogGroup" and attribute == "Arn":
        # GetAtt LogGroup.Arn ends in ":*" (it covers the group's streams).
        return f"{arn}:logs:{REGION}:{ACCOUNT}:log-group:{ref_value(template, logical_id, resolve)}:*"
    if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function") and attribute == "Arn":
        return f"{arn}:lambda:{REGION}:{ACCOUNT}:function:{_name(resource, logical_id, 'FunctionName', resolve)}"
    if kind == "AWS::SecretsManager::Secret" and attribute == "Id":
        return f"{arn}:secretsmanager:{REGION}:{ACCOUNT}:secret:{_name(resource, logical_id, 'Name', resolve)}-AbCdEf"
    mail_manager = {
        ("AWS::SES::MailManagerAddressList", "AddressListArn"): ("mailmanager-address-list", "a"),
        ("AWS::SES::MailManagerRuleSet", "RuleSetArn"): ("mailmanager-rule-set", "rs"),
        ("AWS::SES::MailManagerTrafficPolicy", "TrafficPolicyArn"): ("mailmanager-traffic-policy", "tp"),
        ("AWS::SES::MailManagerIngressPoint", "IngressPointArn"): ("mailmanager-ingress-point", "inp"),
        ("AWS::SES::MailManagerArchive", "ArchiveArn"): ("mailmanager-archive", "a"),
    }
    if (kind, attribute) in mail_manager:
        type_, prefix = mail_manager[(kind, attribute)]
        return f"{arn}:ses:{REGION}:{ACCOUNT}:{type_}/{_short_id(logical_id, prefix)}"
    raise KeyError(f"resolver: no ARN for {logical_id}.{attribute} ({kind}); teach getatt_value its type")


def resolver(template: dict):
    """A function turning a template value with intrinsics into plain JSON (NO_VALUE dropped).

    Every branch of an Fn::If is checked where a list may hold both (a statement, an action, a
    resource): both become items of the list. Elsewhere the branch for a true condition is
    taken, unless it is AWS::NoValue.
    """

    def items_of(value) -> list:
        if isinstance(value, dict) and set(value) == {"Fn::If"}:
            _, when_true, when_false = value["Fn::If"]
            return items_of(when_true) + items_of(when_false)
        return [value]

    def resolve(value):
        if isinstance(value, list):
            items = [resolve(v) for item in value for v in items_of(item)]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1 or not next(iter(value)).startswith(("Fn::", "Ref")):
            items = {k: resolve(items_of(v)) if k in LISTS and len(items_of(v)) > 1 else resolve(v)
                     for k, v in value.items()}
            return {k: v for k, v in items.items() if v is not NO_VALUE}
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return ref_value(template, arg, resolve)
        if fn == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return getatt_value(template, logical_id, attribute, resolve)
        if fn == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1]))
            return re.sub(r"\$\{([^}!]+)\}", lambda m: sub_value(m.group(1), local), text)
        if fn == "Fn::If":
            _, when_true, when_false = arg
            taken = resolve(when_true)
            return taken if taken is not NO_VALUE else resolve(when_false)
        if fn == "Fn::Join":
            separator, parts = arg
            return separator.join(str(p) for p in as_list(resolve(parts)))
        if fn == "Fn::Select":
            index, items = arg
            return as_list(resolve(items))[int(resolve(index))]
        raise KeyError(f"resolver: intrinsic {fn} not handled")

    def sub_value(name: str, local: dict) -> str:
        if name in local:
            return str(local[name])
        if "." in name and not name.startswith("AWS::"):
            logical_id, attribute = name.split(".", 1)
            return getatt_value(template, logical_id, attribute, resolve)
        value = ref_value(template, name, resolve)
        return ",".join(value) if isinstance(value, list) else str(value)

    return resolve


# --- the policies -----------------------------------------------------------------------------

def policy_documents(template: dict) -> dict[str, dict]:
    """Every permissions policy: roles' inline policies, managed policies, bucket and queue policies.

    Trust policies (AssumeRolePolicyDocument) are left out: they have no Resource, which
    parliament would report as MALFORMED.
    """
    documents = {}
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                documents[f"{name}/{policy['PolicyName']}"] = policy["PolicyDocument"]
        elif resource["Type"] in {"AWS::IAM::ManagedPolicy", "AWS::IAM::Policy",
                                  "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"}:
            documents[name] = properties["PolicyDocument"]
        elif resource["Type"] == "AWS::Serverless::Function":
            # Roles are explicit (template header): a SAM Policies: list would escape this test.
            assert "Policies" not in properties, f"{name}: SAM Policies instead of a Role"
    return documents


def finding_rows(policy_name: str, document: dict) -> list[tuple[tuple[str, str, str], str]]:
    """parliament's findings as ((policy, action, issue), detail), one row per action."""
    policy = parliament.analyze_policy_string(
        json.dumps(document), ignore_private_auditors=True, include_community_auditors=True)
    statements = as_list(document["Statement"])
    rows = []
    findings = [(None, f) for f in policy._findings]
    findings += [(i, f) for i, st in enumerate(policy.statements) for f in st.findings]
    for index, finding in findings:
        statement = statements[index] if index is not None else {}
        where = f"statement {statement.get('Sid', index)}" if index is not None else "policy"
        resources = as_list(statement.get("Resource", []))
        if finding.issue == "RESOURCE_MISMATCH":
            for item in finding.detail:
                rows.append(((policy_name, item["action"], finding.issue),
                             f"{where}: {resources} is not of the type it needs ({item['required_format']})"))
        elif finding.issue == "RESOURCE_STAR":
            # Its detail: the actions that have a resource type of their own.
            for action in finding.detail:
                rows.append(((policy_name, action, finding.issue), f"{where}: Resource *"))
        else:
            # Community auditors name their actions (lower-cased) in location["actions"].
            location = finding.location if isinstance(finding.location, dict) else {}
            for action in location.get("actions") or [location.get("string", "")]:
                rows.append(((policy_name, str(action), finding.issue),
                             f"{where}: {finding.detail or finding.location}"))
    return rows


def load_template() -> dict:
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))


def template_findings(template: dict) -> list[tuple[tuple[str, str, str], str]]:
    resolve = resolver(template)
    return [row for name, doc in policy_documents(template).items()
            for row in finding_rows(name, resolve(doc))]


@pytest.fixture(scope="module")
def resolved() -> dict[str, dict]:
    template = load_template()
    resolve = resolver(template)
    return {name: resolve(doc) for name, doc in policy_documents(template).items()}


def test_every_policy_resolves_to_concrete_arns(resolved):
    assert len(resolved) >= 10
    for name, document in resolved.items():
        for statement in as_list(document["Statement"]):
            for arn in as_list(statement.get("Resource", [])):
                assert arn == "*" or re.fullmatch(r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:(\d{12})?:\S+", arn), (name, arn)


def test_parliament_finds_nothing_unsuppressed(resolved):
    rows = [row for name, doc in resolved.items() for row in finding_rows(name, doc)]
    unexpected = [f"{key[0]}: {key[1]} {key[2]} - {detail}" for key, detail in rows if key not in SUPPRESSED]
    assert not unexpected, "parliament findings:\n" + "\n".join(unexpected)


def test_every_suppression_still_matches_a_finding(resolved):
    seen = {key for name, doc in resolved.items() for key, _ in finding_rows(name, doc)}
    assert not set(SUPPRESSED) - seen, f"stale suppressions: {sorted(set(SUPPRESSED) - seen)}"


def test_a_receipt_rule_grant_on_our_rule_set_is_caught():
    """The grant as it was before parliament: rule-set ARNs for calls that take no resource type."""
    template = load_template()
    role = template["Resources"]["DirectoryPublishRole"]["Properties"]
    role["Policies"][0]["PolicyDocument"]["Statement"].append({
        "Effect": "Allow", "Action": ["ses:DescribeReceiptRule", "ses:UpdateReceiptRule"],
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}"
                                ":receipt-rule-set/${AWS::StackName}-inbound:receipt-rule/*"}})
    found = {key for key, _ in template_findings(template)}
    for action in ("ses:DescribeReceiptRule", "ses:UpdateReceiptRule"):
        assert ("DirectoryPublishRole/directory-publish", action, "RESOURCE_MISMATCH") in found


@pytest.mark.parametrize(("action", "resource", "issue"), [
    # The failure this test exists for: receipt-rule calls take no resource type.
    ("ses:CreateReceiptRule",
     f"arn:aws:ses:{REGION}:{ACCOUNT}:receipt-rule-set/{STACK}-inbound:receipt-rule/*", "RESOURCE_MISMATCH"),
    ("ses:UpdateRuleSet", f"arn:aws:s3:::{STACK}-raw", "RESOURCE_MISMATCH"),
    ("ses:RegisterMemberToAddressLists", "*", "UNKNOWN_ACTION"),
    ("sqs:SendMessage", "*", "RESOURCE_STAR"),
    ("iam:CreateAccessKey", f"arn:aws:iam::{ACCOUNT}:user/*", "PRIVILEGE_ESCALATION"),  # community auditor
])
def test_parliament_catches_what_it_is_here_for(action, resource, issue):
    document = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}
    assert issue in {key[2] for key, _ in finding_rows("probe", document)}


@pytest.mark.parametrize("action", [
    "ses:RegisterMemberToAddressList", "ses:DeregisterMemberFromAddressList",
    "ses:ListMembersOfAddressList", "ses:GetRuleSet", "ses:UpdateRuleSet",
    "ses:CreateRelay", "ses:GetRelay", "ses:ListRelays",
])
def test_parliament_data_knows_mail_manager(action):
    """The bundled Service Authorization data postdates Mail Manager (else UNKNOWN_ACTION above)."""
    assert parliament.expand_action(action, raise_exceptions=False)
