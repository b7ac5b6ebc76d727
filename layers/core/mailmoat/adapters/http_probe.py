"""HttpClientProbe: one bounded GET through http.client (the doctor's portal check)."""

from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

from mailmoat.adapters.smtp_probe import _not_after
from mailmoat.doctor import HttpReport


class HttpClientProbe:
    """GET `url` without following redirects; https is verified against `context` (the system's
    trust store by default) and its certificate's expiry reported. Bounded by `timeout`."""

    def __init__(self, *, timeout: float = 10.0, context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.context = context or ssl.create_default_context()

    def get(self, url: str) -> HttpReport:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return HttpReport(None, f"not an http(s) URL: {url[:200]}")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.timeout,
                                               context=self.context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            conn.connect()
            # Read before the request: a response that closes the connection drops the socket.
            sock = conn.sock
            cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         headers={"User-Agent": "mailmoat-doctor"})
            response = conn.getresponse()
            response.read(64 * 1024)
            return HttpReport(response.status, not_after=_not_after(cert))
        except ssl.SSLCertVerificationError as exc:
            return HttpReport(None, f"the certificate does not verify: {exc.verify_message or exc}")
        except (OSError, http.client.HTTPException) as exc:
            return HttpReport(None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        finally:
            conn.close()
