"""SandboxPollFunction in template.yaml: its handler, the 5-minute schedule, the errors alarm,
and a role that grants exactly the DynamoDB and S3 operations a poll makes, recorded from
botocore while the real handler decides a clean and a malicious file on moto
(tests/e2e/test_aws_sandbox_poll.py), on the resources it touches and nothing broader."""

from __future__ import annotations

from tests.e2e.test_aws_pipeline import stack  # noqa: F401  (fixtures)
from tests.e2e.test_aws_sandbox_poll import cape, recorded_calls  # noqa: F401
from tests.template.test_template import (
    as_list,
    function_timeout,
    functions,
    load_template,
    of_type,
    props,
    referenced,
    role_statements,
)

NAME = "SandboxPollFunction"


def granted(statements: list[dict], services: tuple[str, ...]) -> set[tuple[str, str]]:
    """(action, resource) for each Allow of these services; the resource as the logical id it
    names, with the key pattern of an S3 object ARN (…/isolated/*)."""
    found: set[tuple[str, str]] = set()
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        for action in as_list(st["Action"]):
            if not action.startswith(tuple(f"{s}:" for s in services)):
                continue
            for resource in as_list(st["Resource"]):
                if resource == "*":
                    found.add((action, "*"))
                    continue
                sub = resource.get("Fn::Sub", "") if isinstance(resource, dict) else ""
                path = sub.partition("}")[2] if isinstance(sub, str) else ""
                for target in referenced(resource):
                    found.add((action, target + path))
    return found


def test_the_poller_is_scheduled_every_five_minutes_and_alarmed() -> None:
    template = load_template()
    fn = functions(template)[NAME]
    assert props(fn)["CodeUri"] == "functions/sandbox_poll/" and props(fn)["Handler"] == "app.handler"
    assert props(fn)["Layers"] == [{"Ref": "CoreLayer"}] and props(fn)["Runtime"] == "python3.12"
    # A run ends before the next one starts: two would send a file's notice twice.
    assert function_timeout(template, NAME) == 300  # docs/aws-limits.md
    [event] = props(fn)["Events"].values()
    assert event == {"Type": "Schedule", "Properties": {"Schedule": "rate(5 minutes)"}}
    alarms = [props(a) for a in of_type(template, "AWS::CloudWatch::Alarm").values()
              if props(a).get("Namespace") == "AWS/Lambda" and props(a)["MetricName"] == "Errors"
              and referenced(props(a)["Dimensions"]) == {NAME}]
    assert len(alarms) == 1 and alarms[0]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    log_group = template["Resources"][props(fn)["LoggingConfig"]["LogGroup"]["Ref"]]
    assert props(log_group)["RetentionInDays"] == 30


def test_the_role_grants_what_a_poll_does_and_nothing_broader(recorded_calls: list[str]) -> None:  # noqa: F811
    # Nothing but the tables, the bucket and SES (no secret: the stack has no CAPE token).
    assert {c.split(":")[0] for c in recorded_calls} == {"dynamodb", "s3", "sesv2"}
    used = {c for c in recorded_calls if c.split(":")[0] in ("dynamodb", "s3")}
    # The table a Scan lists the analysing files from, the tenant configs, the held bytes.
    expected = {("dynamodb:Scan", "IsolatedFilesTable"), ("dynamodb:GetItem", "IsolatedFilesTable"),
                ("dynamodb:UpdateItem", "IsolatedFilesTable"), ("dynamodb:Query", "DirectoryTable"),
                ("s3:GetObject", "QuarantineBucket/isolated/*"),
                ("s3:DeleteObject", "QuarantineBucket/isolated/*")}
    assert used == {action for action, _ in expected}, sorted(used)
    template = load_template()
    statements = role_statements(template, NAME)
    assert granted(statements, ("dynamodb", "s3")) == expected
    # The notices: SES as the relay identity only; nothing on "*" but X-Ray's tracing.
    ses = [st for st in statements if "ses:SendRawEmail" in as_list(st["Action"])]
    assert [st["Resource"]["Fn::Sub"] for st in ses] == [
        "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${RelayIdentity}"]
    assert "sesv2:SendEmail" in recorded_calls  # SesMailer's call, granted as the relay's above
    wide = [st for st in statements if "*" in as_list(st.get("Resource"))]
    assert all(all(a.startswith("xray:") for a in as_list(st["Action"])) for st in wide), wide
