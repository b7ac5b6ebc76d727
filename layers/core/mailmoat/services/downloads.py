"""What a file's verdict allows in the portal (DESIGN §6), and the bytes and name of each download."""

from __future__ import annotations

import io
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from mailmoat.context import Verdict
from mailmoat.isolation import DownloadRecord, IsolatedFile, PortalAccess
from mailmoat.scan.macros import MacroRemovalError, macro_free_name, remove_macros
from mailmoat.services.preview import OOXML_MACRO_TYPES, PDF, PREVIEW_MAX_PIXELS, previewable
from mailmoat.settings import Limits

if TYPE_CHECKING:
    from datetime import datetime

    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services
    from mailmoat.ports import IsolationStore

log = logging.getLogger("mailmoat.portal")

DOWNLOADS = ("safe", "original", "macro-removed")  # the kinds the download form may ask for
PRESIGN_ABOVE_BYTES = 5_000_000  # larger originals are served by presigned URL when the store can
PRESIGN_SECONDS = 300
_DOWNLOADABLE = frozenset({Verdict.SAFE, Verdict.RISKY})


# --- what a verdict allows -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Offer:
    """What the portal offers for one file, in the order the page shows it."""

    actions: tuple[str, ...] = ()  # of "safe", "original", "macro-removed", "unlock", "preview"
    needs_confirm: bool = False  # risky: the original only after the warning page
    lists_members: bool = True  # an encrypted archive shows the password form, not its names

    def allows(self, action: str) -> bool:
        return action in self.actions


def offer(verdict: Verdict | str, detected_type: str | None = None, symbols: Collection[str] = (),
          *, stored: bool = True) -> Offer:
    """The one place a verdict becomes portal actions. Safe and risky files may be downloaded
    (risky after a warning), previewed, and copied safely or without macros when their type
    allows; encrypted files may be unlocked; danger and unsupported get nothing. A file whose
    bytes were not kept (deleted, expired) gets nothing either."""
    lists_members = verdict != Verdict.ENCRYPTED
    if not stored:
        return Offer(lists_members=lists_members)
    actions: list[str] = []
    if verdict in _DOWNLOADABLE:
        if safe_copy_kind(detected_type):
            actions.append("safe")
        actions.append("original")
        if macro_removable(detected_type, symbols):
            actions.append("macro-removed")
    if verdict == Verdict.ENCRYPTED:
        actions.append("unlock")
    if verdict in _DOWNLOADABLE and previewable(detected_type):
        actions.append("preview")
    return Offer(tuple(actions), needs_confirm=verdict == Verdict.RISKY, lists_members=lists_members)


def offer_for(record: IsolatedFile) -> Offer:
    return offer(record.verdict, record.detected_type, record.symbols, stored=record.stored)


def macro_removable(detected_type: str | None, symbols: Collection[str]) -> bool:
    """OOXML with VBA we can take out; Excel 4 (XLM) macros live in the sheets themselves."""
    return (detected_type in OOXML_MACRO_TYPES
            and any(s.startswith("MACRO") or s == "VBA_STOMPING" for s in symbols)
            and "XLM_MACRO" not in symbols)


# --- the downloads ---------------------------------------------------------------------------------

class NoDownload(Exception):
    """Not this download of this file: not allowed, or no copy that passes the checks."""


@dataclass(frozen=True, slots=True)
class Download:
    kind: str  # as the download log records it: original, original:presigned, safe, member:…
    filename: str
    data: bytes = b""
    url: str | None = None  # presigned: the bytes go straight from the blob store


def prepare(services: Services, tenant: TenantConfig, record: IsolatedFile, kind: str) -> Download:
    """One download the offer allows. The caller has asked for the recipient's confirmation of
    a risky original (`Offer.needs_confirm`) first."""
    if kind not in DOWNLOADS or not offer_for(record).allows(kind) or record.blob_key is None:
        raise NoDownload(kind)
    key = record.blob_key
    if kind == "original":
        presign = getattr(services.blobs, "presigned_get", None)
        if presign is not None and record.size > PRESIGN_ABOVE_BYTES:
            # On AWS a large file goes straight from S3 (Lambda responses are capped at 6 MB).
            url = presign(key, expires_in=PRESIGN_SECONDS, filename=record.filename)
            return Download("original:presigned", record.filename, url=url)
        return Download("original", record.filename, services.blobs.get(key))
    if kind == "safe":
        return _safe(services, tenant, record, key)
    try:
        data = remove_macros(services.blobs.get(key), services.settings.limits)
    except MacroRemovalError as exc:
        log.warning("macro removal failed", extra={"message_id": record.message_id,
                                                   "detail": str(exc)[:200]})
        raise NoDownload(kind) from exc
    return Download("macro-removed", macro_free_name(record.filename), data)


def _safe(services: Services, tenant: TenantConfig, record: IsolatedFile, key: str) -> Download:
    from mailmoat.services.rescan import rescanner

    try:
        data, name = safe_copy(services.blobs.get(key), record.detected_type, record.filename,
                               services.settings.limits)
        verdict = rescanner(services, tenant)(data, name).verdict
    except Exception as exc:  # hostile input the renderer refuses: no copy, no 500
        log.warning("safe copy failed", extra={"message_id": record.message_id,
                                               "detail": type(exc).__name__})
        raise NoDownload("safe") from exc
    if verdict != Verdict.SAFE:  # the copy must pass the same checks, or it is no copy
        log.warning("safe copy not safe", extra={"message_id": record.message_id,
                                                 "detail": str(verdict)})
        raise NoDownload("safe")
    return Download("safe", name, data)


def record_download(store: IsolationStore, at: datetime, access: PortalAccess, record: IsolatedFile,
                    kind: str, client_ip: str | None) -> None:
    """Every file handed out is on record: who (the token's recipient), what, from where."""
    store.record_download(DownloadRecord(at=at, message_id=record.message_id, path=record.path,
                                         kind=kind[:300], client_ip=client_ip,
                                         recipient=access.recipient))
    log.info("portal download", extra={"message_id": record.message_id, "path": record.path,
                                       "action": kind.split(":")[0], "client_ip": client_ip})


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the exact name in RFC 5987 `filename*`:
    quotes, semicolons, CR/LF and non-ASCII can never break out of the header."""
    name = "".join(ch for ch in filename if ch >= " " and ch != "\x7f").replace("\\", "/")
    name = name.rsplit("/", 1)[-1].strip() or "download"
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\;%' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


# --- safe copies -----------------------------------------------------------------------------------

SAFE_PDF_MAX_PAGES = 100
SAFE_PDF_DPI = 150
_SAFE_IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "PNG",
                       "image/bmp": "PNG", "image/webp": "PNG", "image/tiff": "PNG"}
_SAFE_IMAGE_EXT = {"PNG": "png", "JPEG": "jpg"}


class SanitiseError(Exception):
    """No safe copy can be made of this file here."""


def safe_copy_kind(detected_type: str | None) -> str | None:
    kind = detected_type or ""
    if kind == PDF:
        return "pdf"
    if kind in OOXML_MACRO_TYPES:
        return "office"
    if kind in _SAFE_IMAGE_FORMATS:
        return "image"
    return None


def safe_copy(data: bytes, detected_type: str | None, filename: str,
              limits: Limits | None = None) -> tuple[bytes, str]:
    """A copy with nothing active left: a PDF rebuilt from its rendered pages (no scripts,
    actions, forms or embedded files survive a raster), an image decoded and encoded again
    (no metadata, no trailing payload), an OOXML document without macros, remote
    relationships and DDE fields. Returns the bytes and the download name. The caller
    scans the copy again before handing it out."""
    kind = safe_copy_kind(detected_type)
    if kind == "pdf":
        return _pdf_from_pages(data), _renamed(filename, "pdf")
    if kind == "image":
        return _reencoded(data, _SAFE_IMAGE_FORMATS[detected_type or ""], filename)
    if kind == "office":
        try:
            return (remove_macros(data, limits or Limits(), active_content=True),
                    macro_free_name(filename))
        except MacroRemovalError as exc:
            raise SanitiseError(str(exc)) from exc
    raise SanitiseError(f"no safe copy for {detected_type}")


def _renamed(filename: str, ext: str) -> str:
    stem, dot, _ = filename.rpartition(".")
    return f"{stem if dot else filename}.{ext}"


def _pdf_from_pages(data: bytes) -> bytes:
    import pypdfium2

    doc = pypdfium2.PdfDocument(data)
    try:
        if len(doc) > SAFE_PDF_MAX_PAGES:
            raise SanitiseError(f"more than {SAFE_PDF_MAX_PAGES} pages")
        images = []
        for index in range(len(doc)):
            page = doc[index]
            try:
                images.append(page.render(scale=SAFE_PDF_DPI / 72).to_pil().convert("RGB"))
            finally:
                page.close()
    finally:
        doc.close()
    if not images:
        raise SanitiseError("no pages")
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:],
                   resolution=float(SAFE_PDF_DPI))
    return buf.getvalue()


def _reencoded(data: bytes, fmt: str, filename: str) -> tuple[bytes, str]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = PREVIEW_MAX_PIXELS
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        frame = image.convert("RGB") if fmt == "JPEG" else image.convert("RGBA")
    buf = io.BytesIO()
    frame.save(buf, format=fmt)
    return buf.getvalue(), _renamed(filename, _SAFE_IMAGE_EXT[fmt])
