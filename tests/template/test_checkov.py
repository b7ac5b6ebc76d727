"""The checkov skips in .checkov.yaml give their reasons, and the narrower promises that stand in
for checks skipped for every resource. checkov itself runs in `make template-lint`
(scripts/checkov.sh), once per `make test`."""

import json
import re
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".checkov.yaml"


@pytest.fixture(scope="module")
def resources() -> dict:
    return json.loads(json.dumps(cfn_yaml.load(str(ROOT / "template.yaml"))))["Resources"]


def unexplained_skips(config: str) -> list[str]:
    """Checks under skip-check: with no comment above them (checks under one comment share it)."""
    lines = config.splitlines()
    unexplained, reason = [], False
    for line in lines[lines.index("skip-check:") + 1:]:
        if not line.startswith("  "):
            break
        if line.strip().startswith("#"):
            reason = True
        elif re.fullmatch(r"  - CKV2?_[A-Z]+_\d+", line):
            if not reason:
                unexplained.append(line.strip("- "))
        else:
            reason = False  # a blank line ends the comment's reach
    return unexplained


def test_every_checkov_skip_gives_its_reason():
    assert unexplained_skips(CONFIG.read_text()) == []


def test_skip_check_catches_a_skip_without_reason():
    config = CONFIG.read_text().replace("skip-check:\n", "skip-check:\n  - CKV_AWS_999\n\n", 1)
    assert unexplained_skips(config) == ["CKV_AWS_999"]


def test_every_queue_is_encrypted_at_rest(resources):
    """For CKV_AWS_27, which only knows KmsMasterKeyId."""
    for name, res in resources.items():
        if res["Type"] == "AWS::SQS::Queue":
            p = res.get("Properties", {})
            assert p.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in p, name


def test_every_retained_table_has_point_in_time_recovery(resources):
    """For CKV_AWS_28, skipped because the short-lived tables go with the stack."""
    for name, res in resources.items():
        if res["Type"] == "AWS::DynamoDB::Table" and res.get("DeletionPolicy") == "Retain":
            assert res["Properties"].get("PointInTimeRecoverySpecification") == {
                "PointInTimeRecoveryEnabled": True}, name
