"""What one send-test run sent, kept as JSON under the data directory so `--report` can find it."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailmoat.sendtest.battery import valid_run_id


@dataclass(slots=True)
class SentMessage:
    name: str
    message_id: str
    subject: str
    mail_from: str
    accepted: bool  # the server answered 250 to DATA
    reply: str  # the last SMTP reply (or the connection error), for the report


@dataclass(slots=True)
class RunRecord:
    run_id: str
    sent_at: str  # ISO 8601, UTC
    server: str  # host:port
    starttls: bool
    to: str
    mail_from: str
    spf_fail_from: str
    messages: list[SentMessage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        messages = [SentMessage(**m) for m in data.get("messages", [])]
        return cls(**{**data, "messages": messages})


class RunNotFound(Exception):
    pass


def runs_dir(data_dir: Path) -> Path:
    return data_dir / "send-test"


def save_run(data_dir: Path, run: RunRecord) -> Path:
    """Written whole or not at all (temporary file, then rename)."""
    target_dir = runs_dir(data_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{run.run_id}.json"
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".run-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(run.to_dict(), out, ensure_ascii=False, indent=2)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_run(data_dir: Path, run_id: str | None = None) -> RunRecord:
    """The named run, or the latest one (run ids sort by the time they were made)."""
    directory = runs_dir(data_dir)
    if run_id is not None:
        if not valid_run_id(run_id):
            raise RunNotFound(f"not a run id: {run_id!r}")
        path = directory / f"{run_id}.json"
        if not path.is_file():
            raise RunNotFound(f"no run {run_id} in {directory}")
    else:
        candidates = sorted(p for p in directory.glob("*.json") if valid_run_id(p.stem)) \
            if directory.is_dir() else []
        if not candidates:
            raise RunNotFound(f"no send-test run recorded in {directory}; send one first")
        path = candidates[-1]
    try:
        return RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise RunNotFound(f"cannot read {path}: {exc}") from exc
