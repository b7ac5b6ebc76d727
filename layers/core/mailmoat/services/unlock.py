"""A recipient's password opens an encrypted file (zip, 7z, Office, PDF) in memory; what comes
out is scanned again with the scan stage's engine before anything is offered for download, and
stays isolated until an antivirus has passed it: AV_PENDING while one elsewhere is asked to
(the portal on AWS has none), AV_UNCHECKED when none can answer."""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mailmoat.attempts import UNLOCK_FILE, UNLOCK_NETWORK, attempt_limiter, source_network
from mailmoat.context import Verdict
from mailmoat.isolation import IsolatedFile
from mailmoat.scan.macros import Budget, read_bounded
from mailmoat.services.downloads import Download, Offer, offer, offer_for
from mailmoat.services.preview import PDF
from mailmoat.settings import Limits

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services
    from mailmoat.services.rescan import AntivirusLater

log = logging.getLogger("mailmoat.portal")


ZIP = "application/zip"
SEVEN_ZIP = "application/x-7z-compressed"
OFFICE_ENCRYPTED = frozenset({"application/x-ooxml-encrypted", "application/encrypted",
                              "application/x-ole-storage", "application/msword",
                              "application/vnd.ms-excel", "application/vnd.ms-powerpoint"})


@dataclass(frozen=True, slots=True)
class UnlockedFile:
    """One file of the decrypted content, with the verdict its second scan gave it."""

    index: int
    name: str  # as shown: the member's path in the archive, or the encrypted file's own name
    size: int
    verdict: Verdict
    symbols: list[str]
    offer: Offer
    download: Download
    pending: bool = False  # an antivirus scan is on its way: "being checked", reload later


@dataclass(slots=True)
class Unlocked:
    outcome: Literal["ok", "limited", "wrong", "unsupported"]
    archive: bool = True
    files: list[UnlockedFile] = field(default_factory=list)


def unlock(services: Services, tenant: TenantConfig, record: IsolatedFile, password: str,
           later: AntivirusLater | None = None, client_ip: str | None = None) -> Unlocked:
    """Decrypt in memory and analyse the plain content again. The password is neither stored
    nor logged; attempts are limited per file and per source network (mailmoat.attempts).
    `later`: verdicts and scan requests of an antivirus elsewhere, for a runtime without one
    (services/rescan.py)."""
    if record.blob_key is None or not offer_for(record).allows("unlock"):
        return Unlocked("unsupported")
    # Reserved before the (deliberately slow) decryption: per file whoever asks, per network.
    reservation = attempt_limiter(services).reserve([
        (UNLOCK_FILE, f"{record.message_id}|{record.path}"), (UNLOCK_NETWORK, source_network(client_ip))])
    if reservation is None:
        return Unlocked("limited")
    try:
        decrypted = decrypt(services.blobs.get(record.blob_key), record.detected_type, password,
                            services.settings.limits)
    except WrongPassword:
        log.info("portal wrong password", extra={"message_id": record.message_id, "path": record.path})
        return Unlocked("wrong")
    except Unsupported:
        reservation.refund()  # not a guess: the file cannot be opened here at all
        return Unlocked("unsupported")
    reservation.succeeded()
    from mailmoat.services.rescan import AV_PENDING, AV_UNCHECKED, rescanner

    # No antivirus has seen what the password opened (clamd cannot decrypt): it must pass one here.
    rescan = rescanner(services, tenant, antivirus_required=True, later=later)
    out = Unlocked("ok", archive=decrypted.archive)
    held: list[str] = []
    for index, (name, content) in enumerate(decrypted.members):
        shown = name or record.filename
        result = rescan(content, shown.rsplit("/", 1)[-1])
        verdict = result.verdict
        own = result.own_symbols
        if AV_UNCHECKED in own or AV_PENDING in own:
            # Not checked (yet): listed with the reason, offered nothing (DESIGN §4).
            verdict = Verdict.worst([verdict, Verdict.UNSUPPORTED])
            held.extend(h.detail for h in result.hits if h.symbol == AV_UNCHECKED)
        download = Download(f"member:{name}", name.rsplit("/", 1)[-1], content) if decrypted.archive \
            else Download("decrypted", record.filename, content)
        out.files.append(UnlockedFile(index=index, name=shown, size=len(content), verdict=verdict,
                                      symbols=result.symbols, offer=offer(verdict),
                                      download=download,
                                      pending=AV_PENDING in own))
    pending = sum(1 for f in out.files if f.pending)
    if pending:
        log.info("portal unlock: antivirus scans requested, decrypted files held meanwhile",
                 extra={"message_id": record.message_id, "path": record.path,
                        "symbol": AV_PENDING, "action": "isolate", "files": pending})
    if held:
        log.warning("portal unlock without an antivirus scan: decrypted files stay isolated",
                    extra={"message_id": record.message_id, "path": record.path,
                           "symbol": AV_UNCHECKED, "action": "isolate", "files": len(held),
                           "detail": held[0]})
    return out


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

    from mailmoat.scan.office import decrypt_with_password

    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        if not office.is_encrypted():
            raise Unsupported("not encrypted")
    except Unsupported:
        raise
    except Exception as exc:
        raise Unsupported(f"office: {type(exc).__name__}") from exc
    # The scan's own test (decrypt, then check for a real package), not msoffcrypto's verifier
    # check, which refuses the right password for files whose writer padded the verifier.
    plain = decrypt_with_password(office, password, len(data))
    if plain is None:
        raise WrongPassword("office password")
    if not plain:
        raise Unsupported("office: the password opens it, but its contents are not readable here")
    return Decrypted(archive=False, members=[("", plain)])


def _member_name(name: str) -> str:
    # Archive names are hostile: shown and offered as plain names, never as paths.
    cleaned = "".join(ch for ch in name if ch >= " " and ch != "\x7f").replace("\\", "/")
    return cleaned.strip("/")[:500] or "unnamed"
