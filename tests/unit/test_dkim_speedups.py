"""The faster dkimpy passes return exactly what dkimpy's own would."""

from __future__ import annotations

import dkim
import dkim.canonicalization as canon
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat import dkim_speedups

pieces = st.lists(st.sampled_from([b"a", b"B", b" ", b"\t", b"\r", b"\n", b"\r\n", b"H: v",
                                   b"X-Y: z", b"  ", b" \r\n", b"\t\r\n", b"\n\n", b"\r\n\r\n",
                                   b"From x", b"=", b"-"]), max_size=40).map(b"".join)


def _outcome(func, data):
    try:
        return func(data)
    except Exception as exc:  # dkimpy's own parser raises IndexError on a leading space, too
        return ("error", type(exc).__name__, str(exc))


@settings(max_examples=800, deadline=None)
@given(pieces)
def test_rfc822_parse_is_identical(message: bytes) -> None:
    assert _outcome(dkim_speedups.rfc822_parse, message) == \
        _outcome(dkim_speedups._original_parse, message)


@settings(max_examples=800, deadline=None)
@given(pieces)
def test_body_canonicalisation_is_identical(body: bytes) -> None:
    assert dkim_speedups.strip_trailing_whitespace(body) == dkim_speedups._original_strip(body)
    assert dkim_speedups.compress_whitespace(body) == dkim_speedups._original_compress(body)


@pytest.mark.parametrize("message", [b"H: v\n\r\nX\n\nY", b"H: v\r\n\nbody", b"\r\nbody",
                                     b"H: v\r\n\r\nbody  with\t\tspace \r\n", b"H: v"])
def test_known_edges(message: bytes) -> None:
    assert _outcome(dkim_speedups.rfc822_parse, message) == \
        _outcome(dkim_speedups._original_parse, message)


def test_install_patches_the_names_dkimpy_calls() -> None:
    dkim_speedups.install()
    assert canon.strip_trailing_whitespace is dkim_speedups.strip_trailing_whitespace
    assert dkim.rfc822_parse is dkim_speedups.rfc822_parse


@settings(max_examples=800, deadline=None)
@given(pieces, st.integers(min_value=0, max_value=8))
def test_body_passes_on_a_view_equal_those_on_bytes(body: bytes, cut: int) -> None:
    """The seal hands dkimpy a view of the message's body (no copy); every body pass gives
    the same bytes for it as dkimpy's own pass for the bytes."""
    dkim_speedups.install()
    view = memoryview(b"H: v\r\n\r\n" + body)[min(cut, 8):]
    as_bytes = view.tobytes()
    for fast, original in ((dkim_speedups.strip_trailing_whitespace, dkim_speedups._original_strip),
                           (dkim_speedups.compress_whitespace, dkim_speedups._original_compress),
                           (dkim_speedups.strip_trailing_lines,
                            dkim_speedups._original_strip_lines)):
        assert bytes(fast(view)) == original(as_bytes)
    for policy in (canon.Relaxed, canon.Simple):
        assert bytes(policy.canonicalize_body(view)) == policy.canonicalize_body(as_bytes)


def test_a_canonical_view_is_not_copied() -> None:
    dkim_speedups.install()
    view = memoryview(b"H: v\r\n\r\nline one\r\nline two\r\n")[8:]
    assert canon.Relaxed.canonicalize_body(view) is view


header_pieces = st.lists(st.sampled_from([b"a", b"B", b" ", b"\t", b"\r", b"\n", b"\r\n",
                                          b"\r\n ", b"\r\n\t", b"  ", b"\x0b", b"\x0c", b";",
                                          b"\r\r\n\n"]), max_size=30).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"Subject", b"FROM ", b"x-Y\t", b"To"]),
                          header_pieces), max_size=6))
def test_relaxed_header_canonicalisation_is_identical(headers: list[tuple[bytes, bytes]]) -> None:
    assert dkim_speedups.relaxed_headers(headers) == \
        dkim_speedups._original_relaxed_headers(headers)


def test_install_patches_relaxed_header_canonicalisation() -> None:
    dkim_speedups.install()
    assert canon.Relaxed.canonicalize_headers([(b"Subject ", b" a \t b\r\n")]) == \
        [(b"subject", b"a b\r\n")]
    assert canon.Relaxed.canonicalize_headers is dkim_speedups.relaxed_headers
