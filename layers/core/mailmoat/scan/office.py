"""Office: encryption, VelvetSweatshop, VBA/XLM macros, DDE and remote templates."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mailmoat.scan import dde
from mailmoat.scan import filetype as ft
from mailmoat.scan.result import FileResult

# Excel opens a file encrypted with this password without asking; malware uses it to
# hide from scanners that skip encrypted files (DESIGN §4: danger).
VELVETSWEATSHOP = "VelvetSweatshop"

# Agile encryption declares its own hash rounds per password try; Office writes 100,000. A
# hostile file asking for more than this is not tried (each try would take minutes).
MAX_SPIN_COUNT = 10_000_000
MAX_DECRYPT_BYTES = 64 * 1024 * 1024
MAX_XML_PART = 16 * 1024 * 1024  # bytes of one OOXML part read for the DDE pre-check
MAX_RELS = 500
MAX_IOCS = 10  # olevba IOCs (URLs, IPs, executable names) named in a SANDBOX_VBA_IOC detail
MAX_IOC_DETAIL = 800

_DDE = re.compile(rb"DDE(AUTO)?\b", re.IGNORECASE)
# Relationship types that fetch content from elsewhere when the document opens.
_REMOTE_REL_TYPES = ("/attachedTemplate", "/oleObject", "/frame", "/subDocument")

InnerAnalyser = Callable[[bytes], FileResult]


def is_office(detected: str) -> bool:
    return detected in ft.OOXML_TYPES or detected in ft.OLE_OFFICE_TYPES or \
        detected.startswith("application/vnd.oasis.opendocument")


def analyse_office(data: bytes, detected: str, result: FileResult,
                   analyse_decrypted: InnerAnalyser | None = None) -> None:
    """Add the Office findings for one document to `result`."""
    if detected in ft.OOXML_TYPES:
        _ooxml(data, detected, result)
    elif detected.startswith("application/vnd.oasis.opendocument"):
        _odf(data, result)
    else:
        encrypted = _ole_encryption(data, detected, result, analyse_decrypted)
        if not encrypted:
            _macros(data, result)
            dde.analyse_legacy(data, detected, result)


# --- encryption -------------------------------------------------------------------------------

# Agile encryption's password hash is spinCount (100,000) SHA-512 rounds, and msoffcrypto
# derives it twice per password check (verifier input and value) and again to decrypt. It is a
# pure function of (password, salt, hash, spin count), and the salt is the file's own, so a
# bounded LRU keyed by those four gives the same bytes from one derivation per file and password
# (the VelvetSweatshop probe, then a portal unlock or a re-scan of the same file).
DERIVATION_CACHE_ENTRIES = 256
_derivations: OrderedDict[tuple[bytes, str, int], Any] = OrderedDict()
_derivations_lock = threading.Lock()
_derivation_installed = False


_agile_derive: Callable[[str, bytes, str, int], Any] | None = None  # msoffcrypto's own


def _install_derivation_cache() -> None:
    global _derivation_installed, _agile_derive
    if _derivation_installed:
        return
    from msoffcrypto.method.ecma376_agile import ECMA376Agile

    _agile_derive = ECMA376Agile._derive_iterated_hash_from_password
    ECMA376Agile._derive_iterated_hash_from_password = staticmethod(_cached_derivation)
    _derivation_installed = True


def _cached_derivation(password: str, salt_value: bytes, hash_algorithm: str,
                       spin_value: int) -> Any:
    # Salt and password come from outside: the key holds a fixed-size digest of them
    # (length-prefixed, so no two pairs share one), never the values.
    salt, secret = bytes(salt_value), password.encode("utf-16-le", "surrogatepass")
    key = (hashlib.sha256(len(salt).to_bytes(8, "big") + salt + secret).digest(),
           hash_algorithm, spin_value)
    with _derivations_lock:
        hit = _derivations.get(key)
        if hit is not None:
            _derivations.move_to_end(key)
            return hit.copy()  # callers only take .digest(); a copy keeps the entry intact
    assert _agile_derive is not None
    value = _agile_derive(password, salt_value, hash_algorithm, spin_value)
    with _derivations_lock:
        _derivations[key] = value.copy()
        while len(_derivations) > DERIVATION_CACHE_ENTRIES:
            _derivations.popitem(last=False)
    return value


def _ole_encryption(data: bytes, detected: str, result: FileResult,
                    analyse_decrypted: InnerAnalyser | None) -> bool:
    import msoffcrypto

    _install_derivation_cache()

    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        encrypted = bool(office.is_encrypted())
    except Exception as exc:
        if detected != ft.OOXML_ENCRYPTED:
            # Not a format msoffcrypto knows (msg, msi, plain OLE): nothing encrypted to report.
            return False
        # An encrypted package whose header msoffcrypto refuses is still encrypted, never safe.
        result.add("ENCRYPTED_OFFICE", "OOXML encrypted package")
        if "spincount" in str(exc).lower():
            result.add("ENCRYPTION_SPIN_LIMIT", str(exc)[:200])
        else:
            result.add("SCAN_FAILED", f"msoffcrypto: {type(exc).__name__}: {exc}"[:200])
        return True
    if not encrypted:
        return False
    kind = type(office).__name__  # OOXMLFile | Xls97File | Doc97File | Ppt97File
    try:
        info = office.type if hasattr(office, "type") else ""
    except Exception:
        info = ""
    spins = _spin_count(office)
    if spins > MAX_SPIN_COUNT:
        # Each password try would cost that many hash rounds (minutes): not tried, and not
        # offered for unlocking either (DESIGN §4 unsupported).
        result.add("ENCRYPTED_OFFICE", f"{kind} {info}".strip())
        result.add("ENCRYPTION_SPIN_LIMIT", f"spin count {spins} over {MAX_SPIN_COUNT}")
        return True
    decrypted = _decrypt_with(office, VELVETSWEATSHOP, len(data))
    if decrypted is not None:
        result.add("VELVETSWEATSHOP", f"{kind} opens with the built-in Excel password")
        if analyse_decrypted is not None and decrypted:
            # What it hides still counts (macros, DDE under the VelvetSweatshop layer).
            inner = analyse_decrypted(decrypted)
            for hit in inner.hits:
                result.add(hit.symbol, f"inside the encryption: {hit.detail}", hit.member)
        return True
    if detected == ft.OOXML_ENCRYPTED or kind == "OOXMLFile":
        result.add("ENCRYPTED_OFFICE", f"OOXML {info or 'encrypted'} package".strip())
    else:
        # 97–2003 with a read password: DESIGN §4 says unsupported (no download).
        result.add("ENCRYPTED_OFFICE", f"{kind} {info}".strip())
        result.add("ENCRYPTED_OFFICE_LEGACY", "Office 97–2003 with a read password")
    return True


def _spin_count(office: Any) -> int:
    """The hash rounds one password try costs, as the file declares them (agile only; the
    other schemes have fixed costs)."""
    try:
        info = office.info if getattr(office, "type", "") == "agile" else {}
        return int(info.get("spinValue", 0))
    except Exception:
        return 0


def _decrypt_with(office: Any, password: str, size: int) -> bytes | None:
    """The decrypted file when `password` opens it, else None (b"" when it opens but the
    contents are not readable here).

    Decided by decrypting, not by the password verifier: msoffcrypto's agile verifier check
    compares the whole decrypted block with the hash, so files whose writer padded the verifier
    (or used SHA-1) are rejected although they decrypt. The result must be a real package."""
    if size > MAX_DECRYPT_BYTES:
        return None
    try:
        office.load_key(password=password)  # 97–2003 formats verify inside load_key
    except Exception:  # wrong password shows as one of several msoffcrypto errors
        return None
    out = io.BytesIO()
    try:
        office.decrypt(out)
    except Exception:
        if type(office).__name__ == "OOXMLFile":
            return None  # the key did not give a package: not this password
        return b""  # 97–2003 verified the password; contents unknown, the verdict stands
    plain = out.getvalue()
    if type(office).__name__ == "OOXMLFile" and not _is_package(plain):
        return None
    return plain


decrypt_with_password = _decrypt_with  # the portal's unlock decides the same way


def _is_package(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "[Content_Types].xml" in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


# --- OOXML -------------------------------------------------------------------------------------

def _ooxml(data: bytes, detected: str, result: FileResult) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        result.add("SCAN_FAILED", f"office: {exc}")
        return
    with zf:
        names = zf.namelist()
        lower = [n.lower() for n in names]
        if any(n.endswith("vbaproject.bin") for n in lower):
            _macros(data, result)
            if not any(h.symbol == "MACRO" for h in result.hits):
                # A VBA project olevba cannot parse is still a VBA project (fail towards caution).
                result.add("MACRO", "vbaProject.bin present (not parseable by olevba)")
        if any(n.startswith("xl/macrosheets/") for n in lower):
            result.add("MACRO", "Excel 4.0 (XLM) macro sheet")
            result.add("XLM_MACRO", "xl/macrosheets/")
        _remote_relationships(zf, names, result)
        _ooxml_dde(data, zf, names, lower, result)


def _remote_relationships(zf: zipfile.ZipFile, names: list[str], result: FileResult) -> None:
    rels = [n for n in names if n.lower().endswith(".rels")][:MAX_RELS]
    for name in rels:
        info = zf.getinfo(name)
        if info.file_size > MAX_XML_PART or info.flag_bits & 0x1:
            continue
        try:
            root = ft.parse_xml(zf.read(info))
        except (zipfile.BadZipFile, OSError, ValueError):
            continue
        if root is None:
            continue
        for rel in root:
            if rel.get("TargetMode", "").lower() != "external":
                continue
            rtype = rel.get("Type", "")
            target = rel.get("Target", "")
            if rtype.endswith(_REMOTE_REL_TYPES):
                result.add("REMOTE_TEMPLATE", f"{rtype.rsplit('/', 1)[-1]} → {target[:200]}")


def _ooxml_dde(data: bytes, zf: zipfile.ZipFile, names: list[str], lower: list[str],
               result: FileResult) -> None:
    from oletools import msodde

    if any(n.startswith("xl/externallinks/") for n in lower):
        try:
            links = msodde.process_xlsx(io.BytesIO(data))
        except Exception as exc:
            result.add("SCAN_FAILED", f"msodde: {type(exc).__name__}: {exc}"[:200])
            return
        if links.strip():
            result.add("DDE", links.strip()[:200])
        return
    # msodde parses every XML part; a byte search on the Word parts first keeps clean
    # documents fast, and msodde then decides.
    candidates = [n for n, lo in zip(names, lower, strict=True)
                  if lo.startswith("word/") and lo.endswith(".xml")]
    hit = False
    for name in candidates:
        info = zf.getinfo(name)
        if info.file_size > MAX_XML_PART or info.flag_bits & 0x1:
            continue
        if _DDE.search(zf.read(info)):
            hit = True
            break
    if not hit:
        return
    try:
        fields = msodde.process_docx(io.BytesIO(data))
    except Exception as exc:
        result.add("SCAN_FAILED", f"msodde: {type(exc).__name__}: {exc}"[:200])
        return
    if fields.strip():
        result.add("DDE", fields.strip()[:200])


def _odf(data: bytes, result: FileResult) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            manifest = "META-INF/manifest.xml"
            if manifest in names and zf.getinfo(manifest).file_size <= MAX_XML_PART \
                    and b"encryption-data" in zf.read(manifest):
                result.add("ENCRYPTED_OFFICE", "OpenDocument with a password")
                return
            if any(n.lower().startswith("basic/") and n.lower().endswith(".xml")
                   and not n.lower().endswith(("script-lc.xml", "script-lb.xml")) for n in names):
                result.add("MACRO", "OpenDocument Basic macros")
    except zipfile.BadZipFile as exc:
        result.add("SCAN_FAILED", f"office: {exc}")


# --- macros ------------------------------------------------------------------------------------

# What olevba's plain analysis reports when the code builds its strings at run time: then the
# expression deobfuscation is worth its cost. Hex, Base64 and Dridex strings are not here:
# show_decoded_strings decodes those without it (and every module's GUIDs are "Hex Strings").
_OBFUSCATION_KEYWORDS = frozenset({"chr", "chrw", "chrb", "chr$", "chrw$", "chrb$", "strreverse",
                                   "xor", "callbyname", "asc", "ascw", "strconv"})


def _obfuscated(analysis: list[tuple[str, str, str]]) -> bool:
    return any(kind in ("Suspicious", "IOC") and str(keyword).lower() in _OBFUSCATION_KEYWORDS
               for kind, keyword, _ in analysis)

def _macros(data: bytes, result: FileResult) -> None:
    from oletools.olevba import VBA_Parser

    try:
        parser = VBA_Parser("document", data=data)
    except Exception:  # olevba refuses files that are not Office at all: no macros to report
        return
    try:
        vba = bool(parser.detect_vba_macros())
        xlm = bool(parser.detect_xlm_macros())
        if vba:
            result.add("MACRO", "VBA project")
        if xlm:
            result.add("MACRO", "Excel 4.0 (XLM) macros")
            result.add("XLM_MACRO", "")
        if vba or xlm:
            iocs: list[str] = []
            # Decoded strings (hex, Base64, Dridex, VBA expressions) are appended to the code
            # before olevba looks for IOCs, so an obfuscated URL shows as "URL (obfuscation: …)".
            # olevba's VBA-expression deobfuscation (pyparsing) costs ~240 ms even on a 1 KB
            # macro, ten times the rest: it runs when the plain analysis saw obfuscation.
            analysis = parser.analyze_macros(show_decoded_strings=True, deobfuscate=False) or []
            if vba and _obfuscated(analysis):
                parser.analysis_results = None  # olevba caches the first analysis
                analysis = parser.analyze_macros(show_decoded_strings=True, deobfuscate=True) or []
            for kind, keyword, description in analysis:
                if kind == "AutoExec":
                    result.add("MACRO_AUTOEXEC", str(keyword)[:100])
                elif kind == "Suspicious":
                    result.add("MACRO_SUSPICIOUS", str(keyword)[:100])
                elif kind == "IOC" and len(iocs) < MAX_IOCS:
                    ioc = f"{description}: {' '.join(str(keyword).split())[:200]}"
                    if ioc not in iocs:
                        iocs.append(ioc)
            if iocs:
                result.add("SANDBOX_VBA_IOC", "; ".join(iocs)[:MAX_IOC_DETAIL])
        if parser.detect_vba_stomping():
            result.add("VBA_STOMPING", "compiled p-code differs from the source")
    except Exception as exc:
        result.add("SCAN_FAILED", f"olevba: {type(exc).__name__}: {exc}"[:200])
    finally:
        parser.close()
