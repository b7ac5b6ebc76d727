"""The line-end checks counted at memchr speed answer as the regular expressions would."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.smtp_text import crlf_normalised, has_bare_lf, has_bare_line_end

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
text = st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b" ", b"\r\r\n"]),
                max_size=30).map(b"".join)


@settings(max_examples=600, deadline=None)
@given(text, st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=30))
def test_counted_checks_agree_with_the_patterns(data: bytes, start: int, stop: int) -> None:
    # Views of a larger buffer too: a bare line end outside the view must not count.
    for value in (data, memoryview(data)[start:], memoryview(data)[start:max(start, stop)]):
        assert has_bare_line_end(value) == (_BARE.search(value) is not None)
        assert has_bare_lf(value) == (_BARE_LF.search(value) is not None)


def test_normalising_a_clean_view_returns_the_view() -> None:
    view = memoryview(b"a\nb\r\nc\r\n")[3:]
    assert crlf_normalised(view) is view
    assert crlf_normalised(b"x\ny") == b"x\r\ny"
