"""What the portal does to a file: decrypt with a password (in memory), strip macros, name downloads."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mailmoat.scan.macros import (
    Budget,
    MacroRemovalError,
    has_vba_project,
    macro_free_name,
    parse_xml,
    read_bounded,
    remove_macros,
    vba_present,
)
from mailmoat.settings import Limits

__all__ = ["MacroRemovalError", "has_vba_project", "macro_free_name", "remove_macros", "vba_present"]

OOXML_MACRO_TYPES = frozenset({
    "application/vnd.ms-word.document.macroEnabled.12",
    "application/vnd.ms-excel.sheet.macroEnabled.12",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
})
ZIP = "application/zip"
SEVEN_ZIP = "application/x-7z-compressed"
PDF = "application/pdf"
OFFICE_ENCRYPTED = frozenset({"application/x-ooxml-encrypted", "application/encrypted",
                              "application/x-ole-storage", "application/msword",
                              "application/vnd.ms-excel", "application/vnd.ms-powerpoint"})


class WrongPassword(Exception):
    """The format is one we can open, and this password does not open it."""


class Unsupported(Exception):
    """This file cannot be decrypted here, whatever the password."""


@dataclass(slots=True)
class Decrypted:
    """Plain content: an archive's members, or one decrypted document (`members` = [(name, data)])."""

    archive: bool
    members: list[tuple[str, bytes]] = field(default_factory=list)


def decrypt(data: bytes, detected_type: str | None, password: str, limits: Limits) -> Decrypted:
    """Open an encrypted file with the recipient's password. Nothing is written anywhere."""
    if not password:
        raise WrongPassword("empty password")
    kind = detected_type or ""
    if kind == ZIP or data[:4] == b"PK\x03\x04":
        return _zip(data, password, Budget(limits, Unsupported))
    if kind == SEVEN_ZIP or data[:6] == b"7z\xbc\xaf\x27\x1c":
        return _7z(data, password, Budget(limits, Unsupported))
    if kind == PDF or data[:5] == b"%PDF-":
        return _pdf(data, password)
    if kind in OFFICE_ENCRYPTED or data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return _office(data, password)
    raise Unsupported(f"no decryption for {kind or 'this type'}")


def _zip(data: bytes, password: str, budget: Budget) -> Decrypted:
    import pyzipper

    out = Decrypted(archive=True)
    try:
        zf = pyzipper.AESZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Unsupported(f"zip: {exc}") from exc
    with zf:
        zf.setpassword(password.encode("utf-8"))
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for info in infos:
            budget.member()
            if info.file_size > budget.limits.archive_max_expanded_bytes:
                raise Unsupported("member larger than the expansion limit")
        for info in infos:
            try:
                with zf.open(info) as fh:
                    content = read_bounded(fh, budget)
            except RuntimeError as exc:  # "Bad password for file"
                raise WrongPassword(str(exc)) from exc
            except (zipfile.BadZipFile, zlib.error) as exc:
                # ZipCrypto's one-byte check lets 1 in 256 wrong passwords through; the CRC
                # (or inflate) then fails, which is still a wrong password.
                raise WrongPassword(str(exc)) from exc
            except NotImplementedError as exc:  # compression method we cannot read
                raise Unsupported(str(exc)) from exc
            out.members.append((_member_name(info.filename), content))
    return out


def _7z(data: bytes, password: str, budget: Budget) -> Decrypted:
    import lzma

    import py7zr
    from py7zr.exceptions import Bad7zFile, CrcError, PasswordRequired, UnsupportedCompressionMethodError

    from mailmoat.scan.archives import memory_factory  # the scanner's bounded in-memory sink

    try:
        archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r", password=password)
        with archive:
            infos = [i for i in archive.list() if not i.is_directory]
            for _ in infos:
                budget.member()
            factory = memory_factory(budget.add)
            archive.extract(factory=factory)
    except UnsupportedCompressionMethodError as exc:
        raise Unsupported(str(exc)) from exc
    except (PasswordRequired, CrcError, lzma.LZMAError, Bad7zFile, EOFError, ValueError) as exc:
        # py7zr has no password check of its own: a wrong key shows as broken data.
        raise WrongPassword(f"{type(exc).__name__}") from exc
    except Unsupported:
        raise
    except Exception as exc:  # other decoder errors on a wrong key (zlib, bz2 …)
        raise WrongPassword(type(exc).__name__) from exc
    out = Decrypted(archive=True)
    for info in infos:
        sink = factory.files.get(info.filename)
        out.members.append((_member_name(info.filename), bytes(sink.buf) if sink else b""))
    return out


def _pdf(data: bytes, password: str) -> Decrypted:
    import pikepdf

    try:
        pdf = pikepdf.open(io.BytesIO(data), password=password)
    except pikepdf.PasswordError as exc:
        raise WrongPassword("pdf password") from exc
    except pikepdf.PdfError as exc:
        raise Unsupported(f"pdf: {exc}") from exc
    with pdf:
        buf = io.BytesIO()
        pdf.save(buf, encryption=False)
    return Decrypted(archive=False, members=[("", buf.getvalue())])


def _office(data: bytes, password: str) -> Decrypted:
    import msoffcrypto
    from msoffcrypto import exceptions as office_errors

    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        if not office.is_encrypted():
            raise Unsupported("not encrypted")
    except Unsupported:
        raise
    except Exception as exc:
        raise Unsupported(f"office: {type(exc).__name__}") from exc
    try:
        try:
            office.load_key(password=password, verify_password=True)
        except TypeError:  # 97–2003 formats verify inside load_key
            office.load_key(password=password)
        buf = io.BytesIO()
        office.decrypt(buf)
    except office_errors.InvalidKeyError as exc:
        raise WrongPassword("office password") from exc
    except (office_errors.DecryptionError, office_errors.FileFormatError, NotImplementedError) as exc:
        if "password" in str(exc).lower() or "key" in str(exc).lower():
            raise WrongPassword("office password") from exc
        raise Unsupported(f"office: {exc}") from exc
    return Decrypted(archive=False, members=[("", buf.getvalue())])


def _member_name(name: str) -> str:
    # Archive names are hostile: shown and offered as plain names, never as paths.
    cleaned = "".join(ch for ch in name if ch >= " " and ch != "\x7f").replace("\\", "/")
    return cleaned.strip("/")[:500] or "unnamed"


# --- macro removal lives in the core package (the isolate stage uses it too) ---------------

def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the exact name in RFC 5987 `filename*`:
    quotes, semicolons, CR/LF and non-ASCII can never break out of the header."""
    name = "".join(ch for ch in filename if ch >= " " and ch != "\x7f").replace("\\", "/")
    name = name.rsplit("/", 1)[-1].strip() or "download"
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\;%' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


# --- preview -----------------------------------------------------------------------------------

PREVIEW_PAGES = 3
PREVIEW_TEXT_BYTES = 200_000
PREVIEW_MAX_SIDE = 1400
PREVIEW_MAX_PIXELS = 40_000_000  # decompression-bomb guard for images
_TEXT_TYPES = frozenset({"text/plain", "text/csv", "application/json", "application/xml", "text/xml"})
_OOXML_TEXT_PARTS = re.compile(r"^(word/document\.xml|xl/sharedStrings\.xml|ppt/slides/slide\d+\.xml)$")


@dataclass(slots=True)
class Preview:
    """What the recipient sees before downloading: rendered pages / a re-encoded image as PNG
    data URIs, or plain text. Nothing of the original file reaches the browser as is."""

    images: list[str] = field(default_factory=list)
    text: str | None = None
    truncated: bool = False


def previewable(detected_type: str | None) -> bool:
    kind = detected_type or ""
    return (kind == PDF or kind.startswith("image/") or kind in _TEXT_TYPES
            or kind.startswith("text/") or kind in OOXML_MACRO_TYPES)


def preview(data: bytes, detected_type: str | None, limits: Limits) -> Preview:
    kind = detected_type or ""
    if kind == PDF:
        return _pdf_preview(data)
    if kind.startswith("image/"):
        return _image_preview(data)
    if kind in OOXML_MACRO_TYPES:
        return _office_text(data, limits)
    from mailmoat.charsets import decode_bytes

    head = data[:PREVIEW_TEXT_BYTES]
    return Preview(text=decode_bytes(head, None), truncated=len(data) > len(head))


def _png_uri(image: Any) -> str:
    import base64

    image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pdf_preview(data: bytes) -> Preview:
    import pypdfium2

    doc = pypdfium2.PdfDocument(data)
    try:
        count = len(doc)
        out = Preview(truncated=count > PREVIEW_PAGES)
        for index in range(min(count, PREVIEW_PAGES)):
            page = doc[index]
            try:
                width, height = page.get_size()
                scale = min(1.5, PREVIEW_MAX_SIDE / max(width, height, 1.0))
                out.images.append(_png_uri(page.render(scale=scale).to_pil()))
            finally:
                page.close()
        return out
    finally:
        doc.close()


def _image_preview(data: bytes) -> Preview:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = PREVIEW_MAX_PIXELS
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)  # first frame of an animation is enough
        return Preview(images=[_png_uri(image.copy())])


def _office_text(data: bytes, limits: Limits) -> Preview:
    budget = Budget(limits, Unsupported)
    texts: list[str] = []
    size = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted((n for n in zf.namelist() if _OOXML_TEXT_PARTS.match(n)),
                       key=lambda n: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", n)])
        for name in names[:200]:
            with zf.open(name) as fh:
                root = parse_xml(read_bounded(fh, budget))
            for el in root.iter():
                tag = el.tag if isinstance(el.tag, str) else ""
                if tag.endswith("}t") and el.text:
                    texts.append(el.text)
                    size += len(el.text)
                elif tag.endswith("}p") and texts and texts[-1] != "\n":
                    texts.append("\n")
            if size > PREVIEW_TEXT_BYTES:
                return Preview(text="".join(texts)[:PREVIEW_TEXT_BYTES], truncated=True)
    return Preview(text="".join(texts))


# --- safe copies -------------------------------------------------------------------------------

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
