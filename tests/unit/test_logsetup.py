"""Logs are JSON lines when stderr is not a terminal, text lines when it is (issue 18, item 4)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from mailmoat.logsetup import TEXT_FORMAT, JsonFormatter, wants_json


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_chooser_text_on_a_terminal_json_otherwise() -> None:
    assert wants_json(io.StringIO()) is True
    assert wants_json(_Tty()) is False
    assert TEXT_FORMAT.startswith("%(asctime)s")


def test_json_line_has_the_fields_and_the_extras() -> None:
    record = logging.LogRecord("mailmoat.runner", logging.WARNING, __file__, 1, "stage %s retried",
                               ("scan",), None)
    record.message_id = "m-1"
    record.stage = "scan"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == "mailmoat.runner"
    assert line["message"] == "stage scan retried"
    assert line["message_id"] == "m-1" and line["stage"] == "scan"
    assert line["time"].endswith("+00:00")


def test_cli_with_stderr_piped_writes_json_lines(tmp_path: Path) -> None:
    # main() sets logging up; a line logged afterwards in the same process shows the format.
    code = ("import logging, sys\n"
            "from mailmoat.local.cli import main\n"
            "main(['--data-dir', sys.argv[1], '-v', 'log'])\n"
            "logging.getLogger('mailmoat.test').warning('held \\u2028 \"x\"',"
            " extra={'message_id': 'm-2', 'stage': 'deliver'})\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMOAT_")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=env, check=True)
    lines = [json.loads(line) for line in done.stderr.split("\n") if line.strip()]
    ours = [line for line in lines if line["logger"] == "mailmoat.test"]
    assert len(ours) == 1
    assert ours[0]["message_id"] == "m-2" and ours[0]["stage"] == "deliver"
    assert ours[0]["level"] == "WARNING"
