"""PDF: user-password encryption and active content (JavaScript, actions, embedded files)."""

from __future__ import annotations

import io
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from mailmoat.scan.pdf_tokens import token_findings
from mailmoat.scan.result import FileResult, LimitReached

MAX_OBJECTS = 500_000
MAX_EMBEDDED = 100

# (name, decoded chunks, compressed size) of an embedded file → read bounded, analysed like an
# archive member
EmbeddedSink = Callable[[str, Iterator[bytes], int], None]
CHUNK = 64 * 1024


def analyse_pdf(data: bytes, result: FileResult, deadline: float,
                embedded: EmbeddedSink | None = None) -> None:
    import pikepdf

    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError:
        result.add("ENCRYPTED_PDF", "a user password is needed to open it")
        return
    except pikepdf.PdfError as exc:
        result.add("PDF_UNREADABLE", str(exc)[:200])
        # Readers that repair broken files still run what is in them: name it from the tokens.
        for symbol, detail in token_findings(data):
            result.add("PDF_ACTIVE_CONTENT", symbol.removeprefix("PDF_").lower())
            result.add(symbol, detail)
        return
    with pdf:
        if pdf.is_encrypted:
            # Owner password only: restrictions on printing or editing, readable by anyone.
            result.add("PDF_OWNER_PASSWORD", "restrictions only, content readable")
        found: dict[str, str] = {}
        root = pdf.Root
        if "/OpenAction" in root and not _is_destination(root.get("/OpenAction")):
            found.setdefault("PDF_OPENACTION", "document opens with an action")
        if "/AA" in root:
            found.setdefault("PDF_AA", "document-level additional actions")
        names = root.get("/Names")
        if isinstance(names, pikepdf.Dictionary):
            if "/JavaScript" in names:
                found.setdefault("PDF_JAVASCRIPT", "document-level JavaScript")
            if "/EmbeddedFiles" in names:
                found.setdefault("PDF_EMBEDDED_FILE", "embedded files")
        acroform = root.get("/AcroForm")
        if isinstance(acroform, pikepdf.Dictionary) and "/XFA" in acroform:
            found.setdefault("PDF_XFA", "XFA form (may carry scripts)")
        _scan_objects(pdf, found, deadline, result)
        for symbol, detail in found.items():
            result.add("PDF_ACTIVE_CONTENT", symbol.removeprefix("PDF_").lower())
            result.add(symbol, detail)
        if embedded is not None and "PDF_EMBEDDED_FILE" in found:
            _embedded_files(pdf, embedded, result)


def _is_destination(value: Any) -> bool:
    """An OpenAction that only opens a page: a destination ([3 0 R /Fit], a named one) or a
    GoTo action to one. The action's own JavaScript or Launch is still found by the walk."""
    import pikepdf

    if isinstance(value, pikepdf.Array | pikepdf.String | pikepdf.Name):
        return True
    if isinstance(value, pikepdf.Dictionary):
        return value.get("/S") == "/GoTo" and "/Next" not in value
    return False


def _scan_objects(pdf: Any, found: dict[str, str], deadline: float, result: FileResult) -> None:
    """Actions can sit on any page, annotation or form field, as indirect objects or as
    dictionaries nested inside them; walk all of it (bounded by count and time)."""
    import pikepdf

    seen = 0
    for obj in pdf.objects:
        stack = [obj]
        while stack:
            node = stack.pop()
            seen += 1
            if seen > MAX_OBJECTS or ((seen & 0x3FF) == 0 and time.monotonic() > deadline):
                result.add("SCAN_FAILED", "pdf: object walk stopped at a bound")
                return
            if isinstance(node, pikepdf.Array):
                stack.extend(v for v in node if isinstance(v, pikepdf.Dictionary | pikepdf.Array)
                             and not v.is_indirect)
                continue
            if not isinstance(node, pikepdf.Dictionary | pikepdf.Stream):
                continue
            try:
                items = list(node.items())
            except Exception:  # noqa: S112 - a broken object is skipped, the rest still counts
                continue
            _check_dict(dict(items), found)
            stack.extend(v for _k, v in items if isinstance(v, pikepdf.Dictionary | pikepdf.Array)
                         and not v.is_indirect)


def _check_dict(d: dict[str, Any], found: dict[str, str]) -> None:
    if "/JS" in d:
        found.setdefault("PDF_JAVASCRIPT", "JavaScript action")
    if "/AA" in d:
        found.setdefault("PDF_AA", "additional actions on a page or field")
    if "/EF" in d or d.get("/Type") == "/EmbeddedFile":
        found.setdefault("PDF_EMBEDDED_FILE", "embedded file")
    action = d.get("/S")
    if action is None:
        return
    if action == "/JavaScript":
        found.setdefault("PDF_JAVASCRIPT", "JavaScript action")
    elif action == "/Launch":
        found.setdefault("PDF_LAUNCH", "Launch action (runs a program)")
    elif action == "/URI":
        uri = str(d.get("/URI", ""))
        if uri.lower().startswith("file:"):
            found.setdefault("PDF_FILE_URI", uri[:200])
    elif action in {"/GoToE", "/ImportData", "/SubmitForm"}:
        found.setdefault("PDF_ACTION", str(action))


def _embedded_files(pdf: Any, embedded: EmbeddedSink, result: FileResult) -> None:
    try:
        for n, (name, spec) in enumerate(pdf.attachments.items()):
            if n >= MAX_EMBEDDED:
                result.add("ARCHIVE_LIMIT", f"more than {MAX_EMBEDDED} embedded files")
                return
            stream = spec.get_file().obj
            raw = stream.read_raw_bytes()
            embedded(str(spec.filename or name), _decoded_chunks(stream, raw), len(raw))
    except LimitReached as exc:
        result.add("ARCHIVE_LIMIT", f"embedded file: {exc}")
    except Exception as exc:
        result.add("SCAN_FAILED", f"pdf embedded files: {type(exc).__name__}: {exc}"[:200])


def _decoded_chunks(stream: Any, raw: bytes) -> Iterator[bytes]:
    """Flate (by far the usual filter) is inflated in chunks so a PDF-borne bomb stops at the
    archive bounds; other filters are left to qpdf."""
    import pikepdf

    filters = stream.get("/Filter")
    if filters is None:
        names: list[str] = []
    elif isinstance(filters, pikepdf.Array):
        names = [str(f) for f in filters]
    else:
        names = [str(filters)]
    if not names:
        yield raw
        return
    if names == ["/FlateDecode"] and stream.get("/DecodeParms") is None:
        inflater = zlib.decompressobj()
        data = raw
        while data:
            out = inflater.decompress(data, CHUNK)
            data = inflater.unconsumed_tail
            if out:
                yield out
            elif not data:
                break
        tail = inflater.flush()
        if tail:
            yield tail
        return
    yield stream.read_bytes()
