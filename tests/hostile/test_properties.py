"""Properties of the MIME walk and of filename decoding over generated (often broken) input."""

from __future__ import annotations

from email.message import Message

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmoat.message import WalkLimits, parse, sanitize_filename

LIMITS = WalkLimits(max_parts=200, max_depth=8)

header_names = st.sampled_from([b"Content-Type", b"Content-Disposition", b"Content-Transfer-Encoding",
                                b"MIME-Version", b"Subject", b"From", b"Content-ID"])
header_values = st.one_of(
    st.sampled_from([b"multipart/mixed; boundary=A", b"multipart/alternative; boundary=\"B\"",
                     b"message/rfc822", b"text/plain; charset=iso-2022-jp", b"base64",
                     b"quoted-printable", b"attachment; filename=\"a.exe\"",
                     b"attachment; filename*=utf-8''%E8%AB%8B.zip", b"multipart/mixed",
                     b"text/html; charset=x-nope", b"application/zip; name=\"\x95\\.zip\""]),
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ")),
)
lines = st.one_of(
    st.tuples(header_names, header_values).map(lambda t: t[0] + b": " + t[1]),
    st.sampled_from([b"", b"--A", b"--A--", b"--B", b"--B--", b"--", b" folded", b"\tfolded",
                     b"QUJD", b"=E3=81=82=", b"\x00\x1b$B$\"\x1b(B"]),
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
)
messages = st.lists(lines, max_size=120).map(lambda ls: b"\r\n".join(ls))


def _nested(depth: int, boundary_reuse: bool) -> bytes:
    out = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, depth):
        b = b"b0" if boundary_reuse else b"b%d" % (i - 1)
        out += b"--" + b + b"\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % i
    return out + b"--b%d\r\nContent-Type: text/plain\r\n\r\nx\r\n" % (depth - 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_parse_never_raises_paths_are_unique_and_bounded(raw: bytes) -> None:
    parsed = parse(raw, LIMITS)
    paths = [p.path for p in parsed.parts]
    assert len(paths) == len(set(paths))
    assert len(parsed.parts) <= LIMITS.max_parts
    assert all(p.depth <= LIMITS.max_depth for p in parsed.parts)
    assert all(p.path.count(".") + 1 == p.depth or p.node is not None for p in parsed.parts)
    for part in parsed.parts:
        part.payload()  # decoding is part of the walk's contract: never raises
        part.text()
        if part.filename is not None:
            assert part.filename and len(part.filename) <= 255
            assert "/" not in part.filename and "\\" not in part.filename


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.booleans())
def test_nesting_is_cut_at_the_depth_bound_with_a_finding(depth: int, reuse: bool) -> None:
    parsed = parse(_nested(depth, reuse), LIMITS)
    assert all(p.depth <= LIMITS.max_depth for p in parsed.parts)
    if depth > LIMITS.max_depth and not reuse:
        assert {s for s, _, _ in parsed.findings} & {"MIME_LIMIT", "MIME_PARSE_FAILED"}


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=600))
def test_sanitized_filename_is_a_single_bounded_printable_component(name: str) -> None:
    out = sanitize_filename(name)
    assert out
    assert len(out) <= 255
    assert "/" not in out and "\\" not in out
    assert all(ch >= " " and ch != "\x7f" for ch in out)
    assert sanitize_filename(out) == out  # idempotent


# Filenames as mail clients send them: RFC 2231 (with charset), encoded words, raw 8-bit.
_encodings = st.sampled_from(["utf-8", "cp932", "euc-jp", "iso-2022-jp", "latin-1"])


def _header_with(name: str, codec: str, style: int) -> Message:
    from email.header import Header
    from urllib.parse import quote_from_bytes

    msg = Message()
    data = name.encode(codec, "replace")
    if style == 0:
        value = "attachment; filename*=" + codec + "''" + quote_from_bytes(data, safe="")
        msg["Content-Disposition"] = value
    elif style == 1:
        msg["Content-Disposition"] = 'attachment; filename="' + Header(name, "utf-8").encode() + '"'
    else:
        msg["Content-Disposition"] = 'attachment; filename="' + data.decode("ascii", "surrogateescape") + '"'
    msg.set_payload("x")
    return msg


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80),
       _encodings, st.integers(min_value=0, max_value=2))
def test_filename_decoding_never_raises_and_round_trips_rfc2231_utf8(name: str, codec: str, style: int) -> None:
    from mailmoat.message import _make_part

    part = _make_part(_header_with(name, codec, style), "1", 1)
    assert part.filename is None or (0 < len(part.filename) <= 255 and "/" not in part.filename)
    plain = "".join(ch for ch in name if ch >= " " and ch != "\x7f" and ch not in "/\\\"'%;")
    if style == 0 and codec == "utf-8" and plain == name and name.strip() == name and len(name) < 200:
        assert part.filename == name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("表ソ十能予噂構申貼ab.-_ ")), min_size=1, max_size=30))
def test_cp932_names_with_0x5c_trail_bytes_decode_whole(chars: list[str]) -> None:
    from mailmoat.message import _make_part

    name = "".join(chars).strip() + ".exe"
    if not name.strip(". ") or name.startswith("."):
        return
    msg = Message()
    raw = name.encode("cp932").decode("ascii", "surrogateescape")
    msg["Content-Disposition"] = 'attachment; filename="' + raw + '"'
    msg.set_payload("x")
    part = _make_part(msg, "1", 1)
    # Runs of white space collapse as in any header value; every character survives whole.
    assert part.filename == sanitize_filename(" ".join(name.split()))
