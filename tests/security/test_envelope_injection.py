"""Header injection through the envelope (issue 19, item 1). aiosmtpd ends a command only at
CRLF, so a bare CR inside MAIL FROM used to be accepted, and MaildirMailer wrote it into
Return-Path: a parser then read the attacker's Authentication-Results and X-Spam-Flag as headers
above ours. Now MAIL and RCPT refuse control characters (501 5.1.7 / 5.1.3), and no envelope
value reaches a header line unescaped."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.adapters.maildir import MaildirMailer
from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Gateway
from tests.conftest import free_port, make_settings

INJECTED = ('"x\rAuthentication-Results: mailmoat; spf=pass dmarc=pass\rX-Spam-Flag: NO\r"'
            "@attacker.example")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(bootstrap(make_settings(tmp_path, smtp_port=free_port())))
    gw.start()
    yield gw
    gw.stop()


def _dialogue(port: int, commands: list[bytes]) -> list[bytes]:
    """Raw SMTP lines (smtplib would refuse to send a CR itself); one reply per command."""
    replies: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # 220
        for command in commands:
            sock.sendall(command + b"\r\n")
            line = stream.readline()
            while line[3:4] == b"-":  # multi-line reply (EHLO)
                line = stream.readline()
            replies.append(line)
    return replies


@pytest.mark.timeout(60)
# (A bare LF ends the command line in aiosmtpd, so it can never sit inside an address.)
@pytest.mark.parametrize("bad", ["\r", "\x00", "\x0b", "\x1b", "\x7f", "\x85", "\u2028"])
def test_mail_from_with_a_control_character_is_refused(gateway: Gateway, bad: str) -> None:
    address = INJECTED.replace("\r", bad)
    replies = _dialogue(gateway.runtime.settings.smtp_port,
                        [b"EHLO client.example", f"MAIL FROM:<{address}>".encode()])
    assert replies[1].startswith(b"501 5.1.7"), replies


@pytest.mark.timeout(60)
def test_rcpt_with_a_control_character_is_refused(gateway: Gateway) -> None:
    replies = _dialogue(gateway.runtime.settings.smtp_port,
                        [b"EHLO client.example", b"MAIL FROM:<a@sender.example>",
                         b"RCPT TO:<alice@example.test\rX-Spam-Flag: NO>", b"RCPT TO:<alice@example.test>"])
    assert replies[1].startswith(b"250")
    assert replies[2].startswith(b"501"), replies  # 5.1.3 from us, or aiosmtpd's own syntax 501
    assert replies[3].startswith(b"250")  # the session goes on for a clean recipient


def test_maildir_never_writes_an_envelope_value_into_a_header_unescaped(tmp_path: Path) -> None:
    mailer = MaildirMailer(tmp_path / "maildir")
    body = b"From: a@sender.example\r\nSubject: hi\r\n\r\nhello\r\n"
    path = Path(mailer.deliver("m1", "alice@example.test", INJECTED, body))
    data = path.read_bytes()
    assert b"\r" not in data
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_all("Authentication-Results") is None
    assert msg.get_all("X-Spam-Flag") is None
    assert msg["Subject"] == "hi"
