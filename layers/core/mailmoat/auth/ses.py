"""What Amazon SES concluded (Authentication-Results, Received-SPF, X-SES-*), kept beside ours.

Only the topmost instance of each header is read: SES adds its headers on top of the
message, so anything below was written before SES saw it and may be forged. These values
are recorded, never used to decide — our own checks decide (DESIGN §5).
"""

from __future__ import annotations

import email.message
import re

SES_AUTHSERV_ID = "amazonses.com"
_METHOD = re.compile(r"(?:^|;)\s*(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)
_WORD = re.compile(r"^\s*([a-z]+)", re.IGNORECASE)


def _first(msg: email.message.Message, name: str) -> str | None:
    for key, value in msg.raw_items():
        if key.lower() == name:
            return " ".join(str(value).split())[:4000]
    return None


def _ses_authentication_results(msg: email.message.Message) -> str | None:
    for key, value in msg.raw_items():
        if key.lower() == "authentication-results":
            text = " ".join(str(value).split())[:4000]
            words = text.split(";", 1)[0].split()
            authserv = words[0] if words else ""
            if authserv.lower() == SES_AUTHSERV_ID:
                return text
            return None  # the topmost one is not SES's: nothing below it can be trusted
    return None


def _methods(text: str) -> dict[str, str]:
    """method → result of an Authentication-Results value (RFC 8601); first one per method."""
    out: dict[str, str] = {}
    try:
        import authres

        header = authres.AuthenticationResultsHeader.parse_value(text)
        for result in header.results:
            out.setdefault(str(result.method).lower(), str(result.result).lower())
        return out
    except Exception:  # authres is strict; SES's own "client-ip=…; helo=…;" trips it
        out.clear()
    for method, result in _METHOD.findall(text):
        out.setdefault(method.lower(), result.lower())
    return out


def upstream_verdicts(msg: email.message.Message) -> dict[str, str]:
    """{"spf", "dkim", "dmarc", "received_spf", "spam", "virus"} as SES reported them."""
    out: dict[str, str] = {}
    results = _ses_authentication_results(msg)
    if results:
        for method, result in _methods(results).items():
            if method in ("spf", "dkim", "dmarc"):
                out[method] = result
    received_spf = _first(msg, "received-spf")
    if received_spf and (word := _WORD.match(received_spf)):
        out["received_spf"] = word.group(1).lower()
    for header, key in (("x-ses-spam-verdict", "spam"), ("x-ses-virus-verdict", "virus")):
        value = _first(msg, header)
        if value:
            out[key] = value.strip().split()[0].lower()[:40]
    return out
