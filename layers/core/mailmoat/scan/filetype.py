"""Real file type from content (libmagic, refined for OOXML/ODF/OLE) and the name checks."""

from __future__ import annotations

import io
import logging
import unicodedata
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from mailmoat.scan.lists import Lists

log = logging.getLogger("mailmoat.scan")

MAGIC_PREFIX = 1024 * 1024  # libmagic needs the start of a file, not all of 25 MB
MAX_REFINE_ENTRIES = 20_000

ZIP = "application/zip"
OLE = "application/x-ole-storage"
OOXML_ENCRYPTED = "application/x-ooxml-encrypted"  # an OOXML package inside an OLE EncryptedPackage

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
DOCM = "application/vnd.ms-word.document.macroEnabled.12"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSM = "application/vnd.ms-excel.sheet.macroEnabled.12"
XLSB = "application/vnd.ms-excel.sheet.binary.macroEnabled.12"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
PPTM = "application/vnd.ms-powerpoint.presentation.macroEnabled.12"
DOC = "application/msword"
XLS = "application/vnd.ms-excel"
PPT = "application/vnd.ms-powerpoint"
MSG = "application/vnd.ms-outlook"
SYLK = "application/x-sylk"

OOXML_TYPES = frozenset({DOCX, DOCM, XLSX, XLSM, XLSB, PPTX, PPTM})
OLE_OFFICE_TYPES = frozenset({DOC, XLS, PPT, OLE, "application/CDFV2", "application/vnd.ms-office",
                              OOXML_ENCRYPTED, "application/encrypted"})
EXECUTABLE_TYPES = frozenset({
    "application/x-dosexec", "application/x-msdownload", "application/vnd.microsoft.portable-executable",
    "application/x-executable", "application/x-sharedlib", "application/x-pie-executable",
    "application/x-mach-binary", "application/x-msi",
})

_EXECUTABLE_MAGIC = (b"MZ", b"ZM", b"\x7fELF", b"\xfe\xed\xfa", b"\xce\xfa\xed\xfe",
                     b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"\xd0\xcf\x11\xe0")

# What the main part's content type says, most specific first.
_OOXML_MAIN: tuple[tuple[str, str], ...] = (
    ("ms-word.document.macroenabled", DOCM),
    ("ms-word.template.macroenabled", DOCM),
    ("wordprocessingml", DOCX),
    ("ms-excel.sheet.binary", XLSB),
    ("ms-excel.sheet.macroenabled", XLSM),
    ("ms-excel.template.macroenabled", XLSM),
    ("ms-excel.addin.macroenabled", XLSM),
    ("spreadsheetml", XLSX),
    ("ms-powerpoint.presentation.macroenabled", PPTM),
    ("ms-powerpoint.slideshow.macroenabled", PPTM),
    ("ms-powerpoint.template.macroenabled", PPTM),
    ("presentationml", PPTX),
)

_WORD = frozenset({DOCX, DOCM, OOXML_ENCRYPTED, "application/encrypted"})
_EXCEL = frozenset({XLSX, XLSM, XLSB, OOXML_ENCRYPTED, "application/encrypted"})
_POWERPOINT = frozenset({PPTX, PPTM, OOXML_ENCRYPTED, "application/encrypted"})
_OLE = frozenset({OLE, "application/CDFV2", "application/vnd.ms-office"})
_TEXT = frozenset({"text/"})  # a trailing "/" accepts the whole top-level type

# Extension → real types accepted under it. An extension not listed is not checked
# (we cannot say what it should be); an executable is a mismatch under any name
# that is not an executable's.
ACCEPTED_TYPES: dict[str, frozenset[str]] = {
    "pdf": frozenset({"application/pdf"}),
    "doc": frozenset({DOC, "text/rtf", "application/rtf"}) | _OLE,
    "dot": frozenset({DOC}) | _OLE,
    "xls": frozenset({XLS}) | _OLE,
    "xlt": frozenset({XLS}) | _OLE,
    "ppt": frozenset({PPT}) | _OLE,
    "pps": frozenset({PPT}) | _OLE,
    "msg": frozenset({MSG}) | _OLE,
    "docx": _WORD, "docm": _WORD, "dotx": _WORD, "dotm": _WORD,
    "xlsx": _EXCEL, "xlsm": _EXCEL, "xltx": _EXCEL, "xltm": _EXCEL, "xlsb": _EXCEL, "xlam": _EXCEL,
    "pptx": _POWERPOINT, "pptm": _POWERPOINT, "ppsx": _POWERPOINT, "ppsm": _POWERPOINT,
    "potx": _POWERPOINT,
    "odt": frozenset({"application/vnd.oasis.opendocument.text"}),
    "ods": frozenset({"application/vnd.oasis.opendocument.spreadsheet"}),
    "odp": frozenset({"application/vnd.oasis.opendocument.presentation"}),
    "rtf": frozenset({"text/rtf", "application/rtf"}),
    "zip": frozenset({ZIP, "application/java-archive"}) | _WORD | _EXCEL | _POWERPOINT,
    "7z": frozenset({"application/x-7z-compressed"}),
    "rar": frozenset({"application/x-rar", "application/vnd.rar", "application/x-rar-compressed"}),
    "gz": frozenset({"application/gzip", "application/x-gzip"}),
    "tgz": frozenset({"application/gzip", "application/x-gzip"}),
    "bz2": frozenset({"application/x-bzip2"}),
    "xz": frozenset({"application/x-xz"}),
    "tar": frozenset({"application/x-tar", "application/x-gtar"}),
    "lzh": frozenset({"application/x-lzh-compressed", "application/x-lha"}),
    "jpg": frozenset({"image/jpeg"}), "jpeg": frozenset({"image/jpeg"}),
    "png": frozenset({"image/png"}), "gif": frozenset({"image/gif"}),
    "bmp": frozenset({"image/bmp", "image/x-ms-bmp"}),
    "tif": frozenset({"image/tiff"}), "tiff": frozenset({"image/tiff"}),
    "webp": frozenset({"image/webp"}), "heic": frozenset({"image/heic", "image/heif"}),
    "svg": frozenset({"image/svg+xml", "text/"}),
    "txt": _TEXT, "csv": _TEXT | {"application/csv"}, "log": _TEXT, "md": _TEXT,
    "htm": _TEXT, "html": _TEXT, "xml": _TEXT | {"application/xml"},
    "json": _TEXT | {"application/json"}, "ics": _TEXT, "vcf": _TEXT,
    "eml": _TEXT | {"message/rfc822"},
    "exe": EXECUTABLE_TYPES, "dll": EXECUTABLE_TYPES, "scr": EXECUTABLE_TYPES,
    "sys": EXECUTABLE_TYPES, "cpl": EXECUTABLE_TYPES, "com": EXECUTABLE_TYPES | {"application/octet-stream"},
    "msi": EXECUTABLE_TYPES | _OLE,
}

# Types libmagic gives when it cannot tell; they are not evidence of a mismatch.
_UNKNOWN = frozenset({"application/octet-stream", "application/x-empty", "inode/x-empty",
                      "application/unknown"})

# Characters that change how a name is displayed: bidi overrides and embeddings
# (RLO U+202E makes "invoice‮fdp.exe" look like "invoiceexe.pdf").
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")

# Extensions that make a decoy first half of a double extension ("report.pdf.exe").
DECOY_EXTENSIONS = frozenset({
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "rtf", "jpg", "jpeg", "png", "gif",
    "zip", "csv", "htm", "html", "mp3", "mp4", "avi", "odt", "ods",
})


# Samples libmagic must name before it is trusted: without its database (or with a broken one)
# it calls everything application/octet-stream, and an .exe named invoice.pdf would pass.
MAGIC_SAMPLES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
    (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48
     + b"This program cannot be run in DOS mode.\r\r\n$", "application/x-dosexec"),
)


class MagicUnavailable(Exception):
    """libmagic cannot be loaded, or it cannot name the known samples (no usable database)."""


_PACKAGE = Path(__file__).resolve().parents[1]  # .../mailmoat


def layer_magic(package: Path = _PACKAGE) -> tuple[Path, Path] | None:
    """libmagic and its database as the CoreLayer carries them (layers/core/Makefile), or None
    outside a layer. Found from this package's place, <layer>/python/mailmoat: /opt on Lambda,
    wherever a test unpacked the build. The python3.12 runtime has neither of its own."""
    if package.parent.name != "python":
        return None
    layer = package.parent.parent
    library, database = layer / "lib" / "libmagic.so.1", layer / "share" / "misc" / "magic.mgc"
    return (library, database) if library.is_file() or database.is_file() else None


@lru_cache(maxsize=1)
def _load_magic() -> Any:
    """The checker, or why there is none (remembered too: finding libmagic again for every
    file would run ldconfig each time)."""
    bundled = layer_magic()
    try:
        options: dict[str, Any] = {}
        if bundled is not None:
            import ctypes

            # Loaded by its path first: python-magic's own dlopen("libmagic.so.1") then gets this
            # one by its soname, whatever LD_LIBRARY_PATH says, and never a system copy. A layer
            # whose copy does not load is a layer without libmagic (no fallback to elsewhere).
            ctypes.CDLL(str(bundled[0]))
            options["magic_file"] = str(bundled[1])  # its built-in path is the wheel builder's
        import magic

        checker = magic.Magic(mime=True, **options)
        named = [(str(checker.from_buffer(sample)), expected) for sample, expected in MAGIC_SAMPLES]
    except Exception as exc:  # ImportError without libmagic1, MagicException without its database
        problem = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    else:
        wrong = [f"{expected} sample named {got}" for got, expected in named if got != expected]
        if not wrong:
            return checker
        problem = "; ".join(wrong)
    # Once per process: every file scanned from now on gets SCAN_FAILED and is isolated.
    log.error("libmagic unavailable: file types unknown, every file fails closed (SCAN_FAILED)",
              extra={"symbol": "SCAN_FAILED", "detail": problem,
                     "library": str(bundled[0]) if bundled else "system"})
    return problem


def _magic() -> Any:
    loaded = _load_magic()
    if isinstance(loaded, str):
        raise MagicUnavailable(loaded)
    return loaded


def magic_problem() -> str | None:
    """Why libmagic cannot be trusted to name file types here, or None when it can."""
    loaded = _load_magic()
    return loaded if isinstance(loaded, str) else None


def detect_type(data: bytes) -> str:
    """The MIME type the content really has (application/octet-stream when libmagic failed)."""
    return detect(data)[0]


def detect(data: bytes) -> tuple[str, str | None]:
    """The content's MIME type, and why libmagic gave no answer (None when it did). A file whose
    type is unknown is not safe: the engine records the reason as SCAN_FAILED (fail closed)."""
    if not data:
        return "application/x-empty", None
    unknown: str | None = None
    try:
        mime = str(_magic().from_buffer(data[:MAGIC_PREFIX]))
    except MagicUnavailable as exc:
        mime, unknown = "application/octet-stream", f"libmagic unavailable ({exc})"
    except Exception as exc:  # libmagic refusing this buffer: the rest of the scan still runs
        mime = "application/octet-stream"
        unknown = " ".join(f"libmagic failed ({type(exc).__name__}: {exc})".split())[:200]
    return _refine(data, mime), unknown


def _refine(data: bytes, mime: str) -> str:
    if data[:4] == b"PK\x03\x04" or mime in {ZIP, "application/java-archive"} or mime in OOXML_TYPES:
        return _refine_zip(data, mime)
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return _refine_ole(data, mime)
    if data[:4] == b"ID;P":  # SYLK: Excel opens it and runs its Excel 4.0 formulas
        return SYLK
    if data[:5] == b"{\\rtf":
        return "text/rtf"
    if mime in EXECUTABLE_TYPES and not data.startswith(_EXECUTABLE_MAGIC):
        # libmagic's DOS COM heuristics match about one random megabyte in forty; without a
        # real executable header that is no evidence for EXT_MISMATCH.
        return "application/octet-stream"
    return mime


def _refine_zip(data: bytes, mime: str) -> str:
    """OOXML, ODF, jar and apk are zips; which one is told by the members, not the magic bytes."""
    from mailmoat.scan.archives import zip_directory_entries

    entries = zip_directory_entries(data)
    if entries is not None and entries > MAX_REFINE_ENTRIES:
        return ZIP  # no Office package has that many parts; the archive walker bounds it
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if "[Content_Types].xml" in names:
                info = zf.getinfo("[Content_Types].xml")
                if info.file_size <= 1024 * 1024 and not info.flag_bits & 0x1:
                    main = _ooxml_main_type(zf.read(info), names)
                    for needle, ooxml in _OOXML_MAIN:
                        if needle in main:
                            return ooxml
            if "mimetype" in names:
                info = zf.getinfo("mimetype")
                if info.file_size <= 200 and not info.flag_bits & 0x1:
                    value = zf.read(info).decode("ascii", "replace").strip()
                    if value.startswith("application/"):
                        return value
            if "AndroidManifest.xml" in names and "classes.dex" in names:
                return "application/vnd.android.package-archive"
            if "META-INF/MANIFEST.MF" in names:
                return "application/java-archive"
    except Exception:  # a broken zip is still a zip; the archive reader reports the damage
        return ZIP
    return ZIP if mime not in OOXML_TYPES else mime


_MAIN_PARTS = ("/word/document.xml", "/xl/workbook.xml", "/xl/workbook.bin",
               "/ppt/presentation.xml")


def parse_xml(data: bytes) -> Any | None:
    """An untrusted XML part, parsed with entities, DTDs and network off; None if broken."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        return None


def _ooxml_main_type(content_types: bytes, names: set[str]) -> str:
    """The content type of the package's main part (an embedded xlsx must not make a docx
    an xlsx): its Override, else the Default for its extension (Excel names an xlsb's
    workbook.bin through <Default Extension="bin">, with no Override)."""
    root = parse_xml(content_types)
    if root is None:
        return ""
    for el in root:
        if str(el.tag).endswith("Override") and el.get("PartName", "").lower() in _MAIN_PARTS:
            return str(el.get("ContentType", "")).lower()
    present = {"/" + n.lower() for n in names} & set(_MAIN_PARTS)
    extensions = {part.rsplit(".", 1)[1] for part in present}
    for el in root:
        if str(el.tag).endswith("Default") and el.get("Extension", "").lower() in extensions:
            return str(el.get("ContentType", "")).lower()
    return ""


def _refine_ole(data: bytes, mime: str) -> str:
    try:
        import olefile

        with olefile.OleFileIO(data) as ole:
            streams = {"/".join(p) for p in ole.listdir(streams=True, storages=True)}
    except Exception:
        return mime if mime != "application/octet-stream" else OLE
    if "EncryptedPackage" in streams and "EncryptionInfo" in streams:
        return OOXML_ENCRYPTED
    if "WordDocument" in streams:
        return DOC
    if "Workbook" in streams or "Book" in streams:
        return XLS
    if "PowerPoint Document" in streams:
        return PPT
    if any(s.startswith("__substg1.0_") for s in streams):
        return MSG
    return mime if mime not in {"application/octet-stream", "application/CDFV2"} else OLE


def is_zip_type(mime: str) -> bool:
    return mime == ZIP or mime in OOXML_TYPES or mime.startswith("application/vnd.oasis") or mime in {
        "application/java-archive", "application/vnd.android.package-archive", "application/epub+zip"}


def extension(name: str | None) -> str | None:
    """The extension Windows would act on: the last one, after trailing dots and spaces go."""
    if not name:
        return None
    visible = "".join(ch for ch in name if ch not in _BIDI)
    stem = visible.rstrip(". \u3000")
    if "." not in stem:
        return None
    ext = stem.rsplit(".", 1)[1].strip().lower()
    return unicodedata.normalize("NFKC", ext) or None


def name_findings(name: str | None, detected: str, lists: Lists) -> list[tuple[str, str]]:
    """DESIGN §4 rules 2 and 3 on one name: (symbol, detail) pairs."""
    hits: list[tuple[str, str]] = []
    ext = extension(name)
    if name is None or ext is None:
        hits.append(("NO_EXTENSION", name or ""))
    if name:
        if any(ch in _BIDI for ch in name):
            hits.append(("FILENAME_RLO", "bidirectional control characters hide the real extension"))
        if name != name.rstrip(". \u3000"):
            hits.append(("FILENAME_TRAILING_DOT", "trailing dots or spaces hide the real extension"))
        visible = "".join(ch for ch in name if ch not in _BIDI).rstrip(". \u3000")
        parts = visible.split(".")
        if len(parts) >= 3 and ext and lists.is_dangerous(ext):
            decoy = unicodedata.normalize("NFKC", parts[-2]).strip().lower()
            if decoy in DECOY_EXTENSIONS:
                hits.append(("DOUBLE_EXTENSION", f".{decoy}.{ext}"))
    if ext and lists.is_dangerous(ext):
        hits.append(("DANGEROUS_EXTENSION", f".{ext}"))
    archive = lists.archive_type(ext, detected)
    if archive:
        hits.append(("ARCHIVE_TYPE", archive))
    if mismatch(ext, detected):
        hits.append(("EXT_MISMATCH", f".{ext} is {detected}"))
    return hits


def mismatch(ext: str | None, detected: str) -> bool:
    if ext is None or detected in _UNKNOWN:
        return False
    accepted = ACCEPTED_TYPES.get(ext)
    if accepted is None:
        # Unknown extension: only an executable hiding under it is a clear mismatch.
        return detected in EXECUTABLE_TYPES
    return not any(detected == a or (a.endswith("/") and detected.startswith(a)) for a in accepted)
