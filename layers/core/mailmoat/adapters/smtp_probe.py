"""SMTP probes that never send mail: SmtplibRcptProbe goes up to RCPT (the bypass check),
SmtplibTlsProbe up to a verified STARTTLS (the doctor's delivery check)."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime

from mailmoat.bypass import ProbeResult, ProbeStep
from mailmoat.doctor import TlsReport


class SmtplibRcptProbe:
    """EHLO, STARTTLS when offered, then per sender MAIL FROM / RCPT TO / RSET, and QUIT.
    DATA is never sent: the probe asks whether the host would take the mail, it sends none.
    Every socket operation is bounded by `timeout`."""

    def __init__(self, *, helo: str, timeout: float = 10.0, source_address: str | None = None) -> None:
        self.helo = helo
        self.timeout = timeout
        # Speak from this local address: on a gateway host with a second address the mailbox
        # host does not trust, the probe is a real outside sender.
        self.source = (source_address, 0) if source_address else None

    def probe(self, address: str, port: int, senders: Sequence[str], recipient: str) -> ProbeResult:
        steps: list[ProbeStep] = []
        local: str | None = None
        smtp = smtplib.SMTP(timeout=self.timeout, local_hostname=self.helo, source_address=self.source)
        try:
            code, banner = smtp.connect(address, port)
            sock = smtp.sock
            local = str(sock.getsockname()[0]) if sock is not None else None
            if code != 220:
                return ProbeResult(address, port, connected=True, error=f"banner {code} {_text(banner)}",
                                   local_address=local)
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                # No certificate check: nothing is sent that needs protecting, and a host that
                # a real sender could reach without TLS is open all the same.
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                smtp.starttls(context=context)
                smtp.ehlo()
            for sender in senders:
                mail = smtp.mail(sender)
                rcpt = smtp.rcpt(recipient) if mail[0] == 250 else None
                steps.append(ProbeStep(sender, (mail[0], _text(mail[1])),
                                       None if rcpt is None else (rcpt[0], _text(rcpt[1]))))
                smtp.rset()
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
        except (smtplib.SMTPException, OSError) as exc:
            smtp.close()
            return ProbeResult(address, port, connected=local is not None,
                               error=f"{type(exc).__name__}: {exc}", steps=tuple(steps),
                               local_address=local)
        return ProbeResult(address, port, connected=True, steps=tuple(steps), local_address=local)


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:300]


class SmtplibTlsProbe:
    """The doctor's delivery check: connect, EHLO, STARTTLS with the chain and the host name
    verified against `context` (the system's trust store by default), then QUIT. Nothing is
    sent beyond EHLO; every socket operation is bounded by `timeout`."""

    def __init__(self, *, helo: str, timeout: float = 10.0,
                 context: ssl.SSLContext | None = None) -> None:
        self.helo = helo
        self.timeout = timeout
        self.context = context or ssl.create_default_context()

    def probe(self, host: str, port: int) -> TlsReport:
        try:
            # The host given here is the name STARTTLS verifies the certificate against.
            smtp = smtplib.SMTP(host, port, local_hostname=self.helo, timeout=self.timeout)
        except smtplib.SMTPConnectError as exc:
            return TlsReport(connected=True, error=f"banner {exc.smtp_code} {_text(exc.smtp_error)}")
        except (smtplib.SMTPException, OSError) as exc:
            return TlsReport(connected=False, error=f"{type(exc).__name__}: {_text(str(exc))}")
        try:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                return TlsReport(connected=True)
            try:
                smtp.starttls(context=self.context)
            except ssl.SSLCertVerificationError as exc:
                return TlsReport(connected=True, starttls=True,
                                 verify_error=_text(exc.verify_message or str(exc)))
            sock = smtp.sock
            version = (sock.version() or "") if isinstance(sock, ssl.SSLSocket) else ""
            cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
            smtp.ehlo()
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            return TlsReport(connected=True, starttls=True, verified=True, tls_version=version,
                             not_after=_not_after(cert))
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            return TlsReport(connected=True, starttls=smtp.has_extn("starttls"),
                             error=f"{type(exc).__name__}: {_text(str(exc))}")
        finally:
            smtp.close()


def _not_after(cert: object) -> datetime | None:
    """notAfter of a verified peer certificate (ssl's dict form), as UTC."""
    text = cert.get("notAfter") if isinstance(cert, dict) else None
    if not isinstance(text, str):
        return None
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), tz=UTC)
