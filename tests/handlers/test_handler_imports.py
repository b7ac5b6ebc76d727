"""What importing a Lambda handler loads, with the environment the stack gives it: never
pydantic-settings (the AWS settings read the environment themselves), never a boto3 client or
anything else the first invocation builds. (How long the import takes is the benchmark's
import_ms, never a timed test.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
# Template Globals plus what every function names; nothing here is reachable.
ENVIRONMENT = {
    "MAILMOAT_RUNTIME": "aws", "MAILMOAT_MODE": "production", "MAILMOAT_RAW_BUCKET": "raw",
    "MAILMOAT_QUARANTINE_BUCKET": "quarantine", "MAILMOAT_SIGNATURE_BUCKET": "signatures",
    "MAILMOAT_MESSAGE_LOG_TABLE": "messages", "MAILMOAT_DIRECTORY_TABLE": "directory",
    "MAILMOAT_ISOLATED_FILES_TABLE": "isolated", "MAILMOAT_IDEMPOTENCY_TABLE": "idempotency",
    "MAILMOAT_SPAM_TABLE": "spam", "MAILMOAT_KEEPMAIL_TABLE": "keepmail",
    "MAILMOAT_ARCHIVE_BUCKET": "archive", "MAILMOAT_RELAY_IDENTITY": "relay.example.net",
    "MAILMOAT_STAGE_QUEUE_URLS": "scan=https://sqs.invalid/scan",
    "MAILMOAT_AVSCAN_QUEUE_URL": "https://sqs.invalid/avscan",
    "MAILMOAT_ARC_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:arc",
    "MAILMOAT_SPAM_LINK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:link",
    "MAILMOAT_ADMIN_SESSION_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:admin",
    "MAILMOAT_CLAMD_SOCKET": "/tmp/clamd.sock", "MAILMOAT_CLAMD_CONFIG": "/etc/clamd.d/mailmoat.conf",
    "POWERTOOLS_SERVICE_NAME": "mailmoat", "AWS_DEFAULT_REGION": "us-east-1",
    # Any AWS call would go here and fail at once: the import must make none.
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1",
}
NEVER_AT_IMPORT = ["pydantic_settings", "boto3", "botocore.session", "mailmoat.adapters",
                   "mailmoat.stages", "mailmoat_web.admin"]


def loaded_by_import(folder: Path) -> list[str]:
    code = (f"import json, sys; sys.path.insert(0, {str(folder)!r}); import app; "
            "print(json.dumps(sorted(sys.modules)))")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAILMOAT_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**env, **ENVIRONMENT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("folder", [ROOT / "functions" / name for name in HANDLERS] + [ROOT / "web"],
                         ids=[*HANDLERS, "portal"])
def test_importing_a_handler_loads_no_settings_library_and_builds_nothing(folder):
    modules = loaded_by_import(folder)
    loaded = {prefix for prefix in NEVER_AT_IMPORT
              for name in modules if name == prefix or name.startswith(prefix + ".")}
    assert not loaded
