"""SmtplibRcptProbe: an SMTP dialogue up to RCPT and never further (the bypass check's probe)."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Sequence

from mailmoat.bypass import ProbeResult, ProbeStep


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
