"""JSON GETs against a directory API: throttling (429 + Retry-After, 503) retried a bounded
number of times with an injected sleep, every other failure a DirectorySyncError."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from mailmoat.directory.model import DirectorySyncError, ResyncRequired

log = logging.getLogger("mailmoat.directory")

Sleep = Callable[[float], None]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRIES = 6
MAX_WAIT_SECONDS = 300.0  # a longer Retry-After fails the run; the next scheduled run tries again
REQUEST_TIMEOUT = (10.0, 60.0)
# Google answers some quota limits with 403 and one of these reasons: those are throttling too.
_GOOGLE_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_RESYNC_CODES = frozenset({"syncStateNotFound", "syncStateInvalid", "resyncRequired"})


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_detail(response: requests.Response) -> tuple[str, set[str]]:
    """The API's own error code/message (Graph and Google both use {"error": {...}})."""
    try:
        body = response.json()
    except ValueError:
        return response.reason or "", set()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        codes = {str(error.get("code", ""))}
        codes |= {str(e.get("reason", "")) for e in error.get("errors", []) if isinstance(e, dict)}
        inner = error.get("innerError") or error.get("innererror")
        if isinstance(inner, dict) and inner.get("code"):
            codes.add(str(inner["code"]))
        return f"{error.get('code', '')}: {error.get('message', '')}"[:300], codes - {""}
    if isinstance(error, str):  # OAuth token endpoints
        return f"{error}: {body.get('error_description', '')}"[:300], {error}
    return response.reason or "", set()


Headers = Mapping[str, str] | Callable[[], Mapping[str, str]]


def get_json(session: requests.Session, url: str, *, headers: Headers, sleep: Sleep,
             params: Mapping[str, str] | None = None, max_retries: int = MAX_RETRIES) -> dict[str, Any]:
    """GET a JSON object. `headers` may be a callable so a token refreshed during a long
    throttling wait is picked up. Never logs the query (delta tokens) or the headers."""
    where = urlsplit(url).path
    for attempt in range(max_retries + 1):
        request_headers = dict(headers() if callable(headers) else headers)  # token errors are not retried
        try:
            response = session.get(url, params=params, timeout=REQUEST_TIMEOUT, headers=request_headers)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == max_retries:
                raise DirectorySyncError(f"GET {where}: {type(exc).__name__}") from exc
            wait = float(2 ** attempt)
        else:
            if response.status_code == 200:
                try:
                    data = response.json()
                except ValueError as exc:
                    raise DirectorySyncError(f"GET {where}: the answer is not JSON") from exc
                if not isinstance(data, dict):
                    raise DirectorySyncError(f"GET {where}: the answer is not a JSON object")
                return data
            detail, codes = _error_detail(response)
            if response.status_code == 410 or codes & _RESYNC_CODES:
                raise ResyncRequired(f"GET {where}: {response.status_code} {detail}",
                                     status=response.status_code)
            throttled = response.status_code in RETRY_STATUSES or (
                response.status_code == 403 and bool(codes & _GOOGLE_RATE_REASONS))
            if not throttled or attempt == max_retries:
                raise DirectorySyncError(f"GET {where}: HTTP {response.status_code} {detail}".strip(),
                                         status=response.status_code)
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            wait = asked if asked is not None else float(2 ** attempt)
            if wait > MAX_WAIT_SECONDS:
                raise DirectorySyncError(f"GET {where}: throttled, asked to wait {wait:.0f} s")
            log.warning("directory API throttled (HTTP %s), retrying in %.1f s", response.status_code, wait)
        sleep(wait)
    raise DirectorySyncError(f"GET {where}: retries exhausted")  # not reached: the loop returns or raises
