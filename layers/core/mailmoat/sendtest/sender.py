"""Send the battery over SMTP, one session per message, and keep every server reply."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass

from mailmoat.sendtest.battery import BatteryMessage
from mailmoat.sendtest.runs import SentMessage


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    starttls: bool = False
    verify_certificate: bool = True  # False only with --insecure (a self-signed test gateway)
    timeout: float = 60.0
    local_hostname: str | None = None

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(value: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT or [IPv6]:PORT."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if not host:
        raise ValueError(f"no host in {value!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {value!r}")
    return host, int(port) if port else None


def tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    # The server's words end up on the admin's terminal: no control characters.
    printable = "".join(c if c.isprintable() else " " for c in words)
    return f"{code} {' '.join(printable.split())}"


def send_one(target: SmtpTarget, message: BatteryMessage, to: str) -> SentMessage:
    """MAIL, RCPT and DATA by hand so that every reply, DATA's included, is checked and kept."""

    def outcome(accepted: bool, reply: str) -> SentMessage:
        return SentMessage(name=message.name, message_id=message.message_id, subject=message.subject,
                           mail_from=message.mail_from, accepted=accepted, reply=reply[:300])

    try:
        with smtplib.SMTP(target.host, target.port, timeout=target.timeout,
                          local_hostname=target.local_hostname) as smtp:
            smtp.ehlo()
            if target.starttls:
                if not smtp.has_extn("starttls"):
                    return outcome(False, "the server does not offer STARTTLS")
                smtp.starttls(context=tls_context(target.verify_certificate))
                smtp.ehlo()
            code, text = smtp.mail(message.mail_from)
            if code != 250:
                return outcome(False, f"MAIL FROM refused: {_reply(code, text)}")
            code, text = smtp.rcpt(to)
            if code not in (250, 251):
                return outcome(False, f"RCPT TO refused: {_reply(code, text)}")
            code, text = smtp.data(message.raw)
            if code != 250:
                return outcome(False, f"DATA refused: {_reply(code, text)}")
            return outcome(True, _reply(code, text))
    except smtplib.SMTPDataError as exc:  # smtplib raises for a refused DATA command itself
        return outcome(False, f"DATA refused: {_reply(exc.smtp_code, exc.smtp_error)}")
    except ssl.SSLError as exc:
        return outcome(False, f"TLS failed: {exc} (a self-signed certificate needs --insecure)")
    except (OSError, smtplib.SMTPException) as exc:
        return outcome(False, f"cannot send to {target.label}: {type(exc).__name__}: {exc}")
