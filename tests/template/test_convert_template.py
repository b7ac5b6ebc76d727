"""ConvertFunction in template.yaml (issue 16): the LibreOffice image, a role with exactly the
exchange prefix it reads and writes, and the isolate and portal functions allowed to invoke it."""

import pytest
from tests.template.test_avscan_template import att, grants, sub
from tests.template.test_template import (
    function_env,
    functions,
    load_template,
    props,
    role_statements,
)

EXCHANGE = sub("${QuarantineBucket.Arn}/isolated/convert/*")


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


def test_convert_runs_its_own_libreoffice_image(template):
    fn = functions(template)["ConvertFunction"]
    assert props(fn)["PackageType"] == "Image"
    assert props(fn)["ImageConfig"]["Command"] == ["convert.handler"]
    assert fn["Metadata"]["Dockerfile"] == "functions/convert/Dockerfile"
    assert "Events" not in props(fn)  # invoked synchronously, by name, never from a queue
    assert props(fn)["Timeout"] >= 90  # one 60 s conversion plus soffice's cold start


def test_convert_role_grants_exactly_the_exchange_prefix(template):
    assert grants(role_statements(template, "ConvertFunction")) == {
        ("logs:CreateLogStream", att("ConvertLogGroup")),
        ("logs:PutLogEvents", att("ConvertLogGroup")),
        ("s3:GetObject", EXCHANGE), ("s3:PutObject", EXCHANGE), ("s3:DeleteObject", EXCHANGE),
        ("xray:PutTraceSegments", '"*"'), ("xray:PutTelemetryRecords", '"*"')}  # TracingPolicy


def test_only_isolate_and_portal_invoke_it_and_clean_the_exchange(template):
    invokers = {name for name in functions(template)
                if ("lambda:InvokeFunction", att("ConvertFunction"))
                in grants(role_statements(template, name))}
    assert invokers == {"IsolateFunction", "PortalFunction"}
    for name in invokers:
        granted = grants(role_statements(template, name))
        assert ("s3:DeleteObject", EXCHANGE) in granted, name
        assert ("s3:PutObject", sub("${QuarantineBucket.Arn}/*")) in granted, name  # the input
        assert function_env(template, name)["MAILMOAT_CONVERT_FUNCTION"] == {"Ref": "ConvertFunction"}


def test_exchange_leftovers_expire_after_a_day(template):
    rules = props(template["Resources"]["QuarantineBucket"])["LifecycleConfiguration"]["Rules"]
    [rule] = [r for r in rules if r.get("Prefix") == "isolated/convert/"]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == 1


def test_the_image_has_libreoffice_uno_and_poppler():
    from tests.template.test_template import ROOT

    dockerfile = (ROOT / "functions/convert/Dockerfile").read_text()
    for package in ("libreoffice-writer-nogui", "libreoffice-calc-nogui", "libreoffice-impress-nogui",
                    "python3-uno", "poppler-utils"):
        assert package in dockerfile, package
