"""What importing each Lambda handler module (and the portal's) must leave unloaded: what the
first invocation builds, or what the request it serves never needs. Structural, so that a heavy
module-level import added back fails here; how long the import takes is bench/run.py's
import_ms (issue 15: ≤ 300 ms a handler, the scan handler ≤ 800, the portal ≤ 500), never timed
in a test. tests/handlers/test_handler_imports.py checks the same with the stack's environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))

# Never at a Lambda handler's import: settings and the pipeline load when the first invocation
# builds the runtime; powertools' batch utility (every event data class) with the first batch.
LAMBDA_NEVER = [
    "pydantic_settings", "pydantic", "mailmoat.settings", "mailmoat.pipeline", "mailmoat.runner",
    "mailmoat.runtime", "mailmoat.message", "mailmoat.config", "mailmoat.adapters",
    "mailmoat.stages", "mailmoat.rewrite", "email.policy", "boto3", "botocore.session",
    "aws_lambda_powertools.utilities.batch", "aws_lambda_powertools.utilities.data_classes",
    # the portal's
    "fastapi", "starlette", "jinja2", "mangum", "mailmoat_web",
]
# The scan engine and its parsers: the scan function's, and even there loaded by the first scan.
SCAN_ENGINE = ["mailmoat.scan", "oletools", "pikepdf", "msoffcrypto", "yara", "XLMMacroDeobfuscator"]
# The portal's first page (/m/{token}) needs none of these: each loads with the first request
# for its paths (mailmoat_web.app.LAZY_ROUTERS).
PORTAL_NEVER = [
    "pydantic_settings", "boto3", "botocore.session", "mailmoat.adapters", "mailmoat.stages",
    "mailmoat.pipeline", "mailmoat.runner", "mailmoat_web.admin", "mailmoat_web.keepmail",
    "mailmoat_web.spam", "mailmoat_web.portal_files", "mailmoat.keepmail", "mailmoat.spam",
    "argon2", "nh3", "oletools", "pikepdf", "msoffcrypto", "yara",
]
# What the first request loads, not the import (issue 15: the portal's import ≤ 500 ms): the
# settings (pydantic) and every port with the runtime it builds, jinja2 with the first page.
PORTAL_FIRST_REQUEST = ["mailmoat.settings", "mailmoat.ports", "jinja2"]


def loaded_by_import(folder: Path) -> set[str]:
    code = (f"import json, sys; sys.path.insert(0, {str(folder)!r}); import app; "
            "print(json.dumps(sorted(sys.modules)))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILMOAT_", "AWS_"))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**env, "AWS_DEFAULT_REGION": "us-east-1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def present(modules: set[str], names: list[str]) -> list[str]:
    return sorted(name for name in names
                  if any(m == name or m.startswith(name + ".") for m in modules))


@pytest.mark.parametrize("name", HANDLERS)
def test_a_lambda_handler_imports_neither_settings_nor_pipeline_nor_engines(name):
    modules = loaded_by_import(ROOT / "functions" / name)
    assert present(modules, LAMBDA_NEVER + SCAN_ENGINE) == []


def test_the_portal_imports_only_what_its_first_page_needs():
    modules = loaded_by_import(ROOT / "web")
    assert present(modules, PORTAL_NEVER) == []
    assert present(modules, PORTAL_FIRST_REQUEST) == []
    assert "fastapi" in modules and "mailmoat_web.portal" in modules  # the message page's


def test_the_raw_prefix_the_events_module_keeps_is_the_runners():
    from mailmoat.aws import events
    from mailmoat.runner import RAW_PREFIX

    assert events.RAW_PREFIX == RAW_PREFIX
