"""The rspamd connector: POST /checkv2 with the raw message and the SMTP envelope, read the action.

rspamd's protocol (https://rspamd.com/doc/developers/protocol.html): the envelope goes in
request headers (`IP`, `Helo`, `From`, one `Rcpt` per recipient, `Queue-Id`), the answer is
JSON with `action`, `score`, `required_score` and the symbols that fired. The actions
`reject`, `add header` and `rewrite subject` mean spam; `soft reject` (greylisting, rate
limits) is rspamd asking the sender to come back later, which says nothing about the
message, so it is unknown here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})
HAM_ACTIONS = frozenset({"no action", "greylist"})
MAX_SYMBOLS = 50  # symbols kept in the report, highest scores first


class RspamdError(Exception):
    """rspamd could not be asked, or did not answer with a verdict."""


@dataclass(frozen=True, slots=True)
class RspamdVerdict:
    action: str
    score: float | None
    required_score: float | None
    symbols: tuple[str, ...] = field(default=())

    @property
    def verdict(self) -> str:
        if self.action in SPAM_ACTIONS:
            return "spam"
        if self.action in HAM_ACTIONS:
            return "ham"
        return "unknown"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(float(value), 2)


def parse_reply(data: Any) -> RspamdVerdict:
    """The checkv2 JSON → a verdict; anything unexpected is an RspamdError, never a crash."""
    if not isinstance(data, dict):
        raise RspamdError("reply is not a JSON object")
    action = data.get("action")
    if not isinstance(action, str) or not action:
        detail = data.get("error") if isinstance(data.get("error"), str) else "no action in reply"
        raise RspamdError(str(detail)[:200])
    symbols = data.get("symbols")
    names: list[tuple[float, str]] = []
    if isinstance(symbols, dict):
        for name, info in symbols.items():
            score = _number(info.get("score")) if isinstance(info, dict) else None
            names.append((score or 0.0, str(name)[:64]))
    names.sort(key=lambda item: (-item[0], item[1]))
    return RspamdVerdict(action=action.strip().lower(), score=_number(data.get("score")),
                         required_score=_number(data.get("required_score")),
                         symbols=tuple(n for _s, n in names[:MAX_SYMBOLS]))


class RspamdClient:
    """One HTTP client (a connection pool, no message data) per rspamd URL."""

    def __init__(self, url: str, timeout: float = 15.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout, transport=transport,
                                    headers={"User-Agent": "mailmoat"})

    def check(self, raw: bytes, *, client_ip: str | None, helo: str | None,
              mail_from: str | None, rcpts: list[str], queue_id: str) -> RspamdVerdict:
        values: list[tuple[str, str]] = [("Queue-Id", queue_id)]
        if client_ip:
            values.append(("IP", client_ip))
        if helo:
            values.append(("Helo", helo))
        # An empty reverse path (a bounce) is "<>"; rspamd reads it as the null sender.
        values.append(("From", mail_from or "<>"))
        values.extend(("Rcpt", r) for r in rcpts[:100])
        # One Rcpt header per recipient (so a list of pairs, not a dict); SMTPUTF8 addresses
        # go as UTF-8 bytes.
        headers = [(name.encode("ascii"), _header_safe(value).encode("utf-8"))
                   for name, value in values]
        try:
            response = self._client.post(f"{self.url}/checkv2", content=raw, headers=headers)
        except httpx.HTTPError as exc:
            raise RspamdError(f"{type(exc).__name__}: {exc}"[:200]) from exc
        if response.status_code != 200:
            raise RspamdError(f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError as exc:
            raise RspamdError("reply is not JSON") from exc
        return parse_reply(data)

    def close(self) -> None:
        self._client.close()


def _header_safe(value: str) -> str:
    """Envelope values come from the SMTP session: no line breaks into our request headers."""
    return "".join(ch for ch in value if ch.isprintable() and ch not in "\r\n")[:512]


_CLIENTS: dict[tuple[str, float], RspamdClient] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(url: str, timeout: float) -> RspamdClient:
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((url, timeout))
        if client is None:
            client = _CLIENTS[(url, timeout)] = RspamdClient(url, timeout)
        return client
