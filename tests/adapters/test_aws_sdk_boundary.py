"""boto3 / botocore appear only in the AWS adapters (layers/core/mailmoat/adapters/aws_*.py)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ROOT / "layers/core/mailmoat/adapters"


def sdk_importers() -> list[str]:
    found = []
    for base in ("layers/core", "web", "functions"):
        for path in sorted((ROOT / base).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n.split(".")[0] in ("boto3", "botocore") for n in names):
                    found.append(str(path.relative_to(ROOT)))
                    break
    return found


def test_only_aws_adapters_import_the_sdk():
    outside = [p for p in sdk_importers()
               if not (p.startswith("layers/core/mailmoat/adapters/aws_") and p.endswith(".py"))]
    assert outside == []


def test_the_check_sees_the_adapters():
    assert "layers/core/mailmoat/adapters/aws_s3.py" in sdk_importers()
