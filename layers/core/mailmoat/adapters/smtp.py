"""SmtpMailer: delivery to a smarthost or the tenant's inbound host over SMTP (STARTTLS when offered)."""

from __future__ import annotations

import smtplib
import ssl

from mailmoat.ports import DeliveryError
from mailmoat.smtp_text import crlf_normalised, has_control


class SmtpMailer:
    def __init__(self, host: str, port: int = 25, *, require_tls: bool = False,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 60.0, local_hostname: str | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.require_tls = require_tls
        self.username, self.password = username, password
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.tls_context = tls_context or ssl.create_default_context()

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        if has_control(mail_from or "") or has_control(recipient):
            raise DeliveryError("control character in the envelope; not sent", permanent=True)
        # No bare CR or LF on the wire: with CRLF throughout, smtplib's dot-stuffing covers every
        # line, and no "<CR>.<CR>" can end DATA early at a lax host (SMTP smuggling).
        data = crlf_normalised(data)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                              local_hostname=self.local_hostname) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self.tls_context)
                    smtp.ehlo()
                elif self.require_tls:
                    raise DeliveryError(f"{self.host} does not offer STARTTLS", permanent=False)
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                code, reply = smtp.mail(mail_from or "")
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, reply, mail_from or "")
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
                try:
                    code, reply = smtp.data(data)
                except (smtplib.SMTPServerDisconnected, OSError) as exc:
                    # The data went out and no answer came back: the host may have it.
                    raise DeliveryError(f"connection lost after DATA: {exc}", permanent=False,
                                        maybe_delivered=True) from exc
                if code != 250:  # smtplib.data() returns the final reply without checking it
                    raise smtplib.SMTPDataError(code, reply)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise DeliveryError(f"{code} {text!r}", permanent=500 <= code < 600, code=code) from exc
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
            raise DeliveryError(f"{code} {exc.smtp_error!r}", permanent=500 <= code < 600,
                                code=code) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False) from exc
        return f"smtp://{self.host}:{self.port}"
