"""AvScanFunction and its queue in template.yaml (issue 14): the scan image with another command,
exactly the grants its work needs, a queue with a DLQ and alarms, requested bytes that expire,
and the portal allowed to ask."""

import json

import pytest
from tests.template.test_template import (
    as_list,
    function_env,
    function_timeout,
    functions,
    load_template,
    of_type,
    props,
    referenced,
    role_statements,
)


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


def grants(statements: list[dict]) -> set[tuple[str, str]]:
    """(action, resource) pairs of the Allow statements, resources as compact JSON."""
    return {(action, json.dumps(resource, sort_keys=True))
            for st in statements if st["Effect"] == "Allow"
            for action in as_list(st["Action"]) for resource in as_list(st["Resource"])}


def sub(text: str) -> str:
    return json.dumps({"Fn::Sub": text}, sort_keys=True)


def att(logical: str, name: str = "Arn") -> str:
    return json.dumps({"Fn::GetAtt": [logical, name]}, sort_keys=True)


def test_avscan_runs_the_scan_image_from_its_queue(template):
    fn = functions(template)["AvScanFunction"]
    scan = functions(template)["ScanFunction"]
    assert props(fn)["PackageType"] == "Image"
    assert props(fn)["ImageConfig"]["Command"] == ["avscan.handler"]
    assert fn["Metadata"] == scan["Metadata"]  # the same Dockerfile, context and tag
    (event,) = props(fn)["Events"].values()
    assert event["Type"] == "SQS" and referenced(event["Properties"]["Queue"]) == {"AvScanQueue"}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MAILMOAT_CLAMD_SOCKET" in function_env(template, "AvScanFunction")


def test_avscan_role_grants_exactly_what_the_scan_job_uses(template):
    assert grants(role_statements(template, "AvScanFunction")) == {
        ("s3:ListBucket", att("QuarantineBucket")),
        ("logs:CreateLogStream", att("AvScanLogGroup")),
        ("logs:PutLogEvents", att("AvScanLogGroup")),
        ("sqs:ReceiveMessage", att("AvScanQueue")),
        ("sqs:DeleteMessage", att("AvScanQueue")),
        ("sqs:GetQueueAttributes", att("AvScanQueue")),
        ("s3:GetObject", sub("${QuarantineBucket.Arn}/isolated/avscan/*")),
        ("s3:DeleteObject", sub("${QuarantineBucket.Arn}/isolated/avscan/*")),
        ("s3:GetObject", sub("${SignatureBucket.Arn}/clamav/*")),
        ("s3:GetObjectVersion", sub("${SignatureBucket.Arn}/clamav/*")),
        ("dynamodb:PutItem", att("IsolatedFilesTable")),
        ("xray:PutTraceSegments", '"*"'),
        ("xray:PutTelemetryRecords", '"*"'),
    }


def test_avscan_queue_has_a_dlq_alarms_sse_and_outlives_retries(template):
    r = template["Resources"]
    queue = props(r["AvScanQueue"])
    assert referenced(queue["RedrivePolicy"]["deadLetterTargetArn"]) == {"AvScanDLQ"}
    assert queue["SqsManagedSseEnabled"] is True and props(r["AvScanDLQ"])["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] == 6 * function_timeout(template, "AvScanFunction")
    watched = {(props(a)["MetricName"], target)
               for a in of_type(template, "AWS::CloudWatch::Alarm").values()
               for target in referenced(props(a)["Dimensions"])}
    assert ("ApproximateNumberOfMessagesVisible", "AvScanDLQ") in watched
    assert ("ApproximateAgeOfOldestMessage", "AvScanQueue") in watched


def test_requested_bytes_expire_after_a_day(template):
    rules = props(template["Resources"]["QuarantineBucket"])["LifecycleConfiguration"]["Rules"]
    [rule] = [r for r in rules if r.get("Prefix") == "isolated/avscan/"]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == 1


def test_the_portal_may_request_scans_and_read_verdicts(template):
    portal = grants(role_statements(template, "PortalFunction"))
    assert ("sqs:SendMessage", att("AvScanQueue")) in portal
    assert ("s3:PutObject", sub("${QuarantineBucket.Arn}/*")) in portal  # covers isolated/avscan/
    assert ("dynamodb:GetItem", att("IsolatedFilesTable")) in portal
    assert function_env(template, "PortalFunction")["MAILMOAT_AVSCAN_QUEUE_URL"] == {"Ref": "AvScanQueue"}
    # Only the portal asks, only AvScanFunction receives.
    senders = {name for name in functions(template)
               if ("sqs:SendMessage", att("AvScanQueue")) in grants(role_statements(template, name))}
    receivers = {name for name in functions(template)
                 if ("sqs:ReceiveMessage", att("AvScanQueue")) in grants(role_statements(template, name))}
    assert (senders, receivers) == ({"PortalFunction"}, {"AvScanFunction"})
