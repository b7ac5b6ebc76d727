"""The CSRF token a page's form carries: HMAC(cookie, session), read from the page as a browser
would submit it (the cookie alone is no longer the token: issue 19, item 9)."""

from __future__ import annotations

import re

_FIELD = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def form_csrf(html: str) -> str:
    match = _FIELD.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)
