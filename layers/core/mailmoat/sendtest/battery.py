"""The send-test battery: one labelled message per behaviour an admin checks before switching MX."""

from __future__ import annotations

import io
import re
import secrets
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime

# RFC 2606 reserves .invalid: these Message-IDs can never collide with real mail.
MESSAGE_ID_DOMAIN = "mailmoat.invalid"
TEST_HEADER = "X-Mailmoat-Test"
DEFAULT_FROM = "tester@sender.example"
# example.com publishes "v=spf1 -all" (IANA); offline, the gateway's MAILMOAT_DNS_ZONE decides.
DEFAULT_SPF_FAIL_FROM = "tester@example.com"
VELVETSWEATSHOP = "VelvetSweatshop"

_RUN_ID = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class BatteryMessage:
    """One test message, ready for SMTP (CRLF line ends, 7-bit)."""

    name: str
    mail_from: str  # envelope sender (MAIL FROM) and From header
    message_id: str
    subject: str  # as the recipient should read it, decoded
    raw: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    run_id: str
    to: str
    sender: str
    spf_fail_sender: str
    zip_password: str


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time, unique enough for two runs in the same second."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def valid_run_id(run_id: str) -> bool:
    # The run id ends up in a header, a Message-ID and a file name: letters, digits, dashes only.
    return bool(_RUN_ID.match(run_id))


def message_id_for(name: str, run_id: str) -> str:
    return f"<{name}.{run_id}@{MESSAGE_ID_DOMAIN}>"


# --- file builders: everything is made here at run time, nothing binary is stored -------------

def eicar() -> bytes:
    """The EICAR test string, assembled from parts so that this source file is never flagged."""
    head = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
    tail = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    return head + tail


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data,
                             compress_type=compression)
    return buf.getvalue()


def aes_zip(members: dict[str, bytes], password: str) -> bytes:
    """A WinZip AES-256 encrypted zip, what Japanese "PPAP" mail usually carries."""
    import pyzipper

    buf = io.BytesIO()
    with pyzipper.AESZipFile(buf, "w", compression=pyzipper.ZIP_DEFLATED,
                             encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(password.encode())
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


_SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'


def minimal_xlsx(rows: Sequence[tuple[str, int]] = (("sample", 1),)) -> bytes:
    """A small but valid workbook (one sheet, inline strings), written with zipfile only."""
    cells = "".join(
        f'<row r="{i}"><c r="A{i}" t="inlineStr"><is><t>{label}</t></is></c>'
        f'<c r="B{i}"><v>{value}</v></c></row>'
        for i, (label, value) in enumerate(rows, start=1))
    ct_sheet = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    parts = {
        "[Content_Types].xml": (
            f'{_XML}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{ct_sheet}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct_sheet}.worksheet+xml"/>'
            "</Types>"),
        "_rels/.rels": (
            f'{_XML}<Relationships xmlns="{_PKG_REL_NS}"><Relationship Id="rId1" '
            f'Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (
            f'{_XML}<workbook xmlns="{_SPREADSHEET_NS}" xmlns:r="{_REL_NS}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            f'{_XML}<Relationships xmlns="{_PKG_REL_NS}"><Relationship Id="rId1" '
            f'Type="{_REL_NS}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": (
            f'{_XML}<worksheet xmlns="{_SPREADSHEET_NS}"><sheetData>{cells}</sheetData></worksheet>'),
    }
    # Stored, not deflated: msoffcrypto-tool 6.x cannot decrypt again what it encrypted when the
    # package is under 4 KiB, and the rows below keep even the encrypted test file above that.
    return zip_of({name: text.encode() for name, text in parts.items()}, zipfile.ZIP_STORED)


def encrypted_xlsx(password: str) -> bytes:
    """An OOXML workbook encrypted (ECMA-376 agile) with msoffcrypto-tool."""
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = minimal_xlsx([(f"row {i}", i) for i in range(1, 60)])
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt(password, out)
    return out.getvalue()


def windows_executable() -> bytes:
    """A minimal PE32 image (DOS stub header, PE signature, COFF and optional header, one section):
    enough for libmagic to call it a Windows executable, and it runs nothing."""
    pe_offset = 0x40
    dos_header = b"MZ" + b"\0" * 0x3A + struct.pack("<I", pe_offset)
    coff = struct.pack("<HHIIIHH", 0x014C, 1, 0, 0, 0, 0xE0, 0x0102)  # i386, 1 section, EXE|32BIT
    optional = bytearray(0xE0)
    struct.pack_into("<H", optional, 0, 0x010B)  # PE32
    struct.pack_into("<I", optional, 16, 0x1000)  # AddressOfEntryPoint
    struct.pack_into("<I", optional, 28, 0x400000)  # ImageBase
    struct.pack_into("<II", optional, 32, 0x1000, 0x200)  # SectionAlignment, FileAlignment
    struct.pack_into("<HH", optional, 48, 4, 0)  # MajorSubsystemVersion
    struct.pack_into("<II", optional, 56, 0x2000, 0x200)  # SizeOfImage, SizeOfHeaders
    struct.pack_into("<H", optional, 68, 3)  # Subsystem: console
    struct.pack_into("<I", optional, 92, 16)  # NumberOfRvaAndSizes
    section = struct.pack("<8sIIIIIIHHI", b".text", 0x1000, 0x1000, 0x200, 0x200, 0, 0, 0, 0,
                          0x60000020)
    headers = dos_header + b"PE\0\0" + coff + bytes(optional) + section
    code = b"\xc3"  # ret
    return headers.ljust(0x200, b"\0") + code.ljust(0x200, b"\0")


# --- the messages -----------------------------------------------------------------------------

def _base(env: Envelope, name: str, title: str, *, sender: str | None = None) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender or env.sender
    msg["To"] = env.to
    msg["Subject"] = f"[mailmoat send-test {env.run_id}/{name}] {title}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id_for(name, env.run_id)
    msg[TEST_HEADER] = f"{env.run_id}/{name}"
    return msg


def _intro(name: str, what: str) -> str:
    return (f"mailmoat send-test: {name}\n{what}\n"
            "This message was sent by `mailmoat send-test` to check the gateway before the MX "
            "switch.\n")


def _clean_text(env: Envelope) -> EmailMessage:
    msg = _base(env, "clean-text", "plain text, nothing to do")
    msg.set_content(_intro("clean-text", "Expected: delivered unchanged, no banner.")
                    + "\nmailmoat のテストメッセージです。\n")
    return msg


def _html_links(env: Envelope) -> EmailMessage:
    msg = _base(env, "html-links", "HTML with links from a sender that does not fail SPF")
    url = "https://www.example.org/mailmoat-send-test/html-links"
    msg.set_content(_intro("html-links", "Expected: delivered, links left clickable.")
                    + f"\nLink: {url}\n")
    msg.add_alternative(
        "<!DOCTYPE html><html><body>"
        "<p>mailmoat send-test: <b>html-links</b></p>"
        "<p>Expected: delivered, links left clickable.</p>"
        f'<p><a href="{url}">Open the example page</a></p>'
        "</body></html>\n", subtype="html")
    return msg


def _clean_xlsx(env: Envelope) -> EmailMessage:
    msg = _base(env, "clean-xlsx", "a clean spreadsheet attached")
    msg.set_content(_intro("clean-xlsx", "Expected: delivered with the spreadsheet attached (safe)."))
    msg.add_attachment(minimal_xlsx([("price", 100), ("quantity", 3)]), maintype="application",
                       subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                       filename="price-list.xlsx")
    return msg


def _eicar_zip(env: Envelope) -> EmailMessage:
    msg = _base(env, "eicar-zip", "EICAR antivirus test file in a zip")
    msg.set_content(_intro("eicar-zip", "Expected: with antivirus, VIRUS and the file deleted; "
                           "without antivirus, the file isolated (dangerous extension)."))
    msg.add_attachment(zip_of({"eicar.com": eicar()}), maintype="application", subtype="zip",
                       filename="eicar.zip")
    return msg


def _aes_zip(env: Envelope) -> EmailMessage:
    msg = _base(env, "aes-zip", "AES-encrypted zip, password in the body")
    msg.set_content(_intro("aes-zip", "Expected: the zip isolated as encrypted, portal notice.")
                    + f"\n添付ファイルのパスワード / password: {env.zip_password}\n")
    msg.add_attachment(aes_zip({"quotation.xlsx": minimal_xlsx([("quotation", 42)])}, env.zip_password),
                       maintype="application", subtype="zip", filename="quotation.zip")
    return msg


def _ppap_zip(env: Envelope) -> EmailMessage:
    # PPAP: the encrypted zip first, its password in a second mail (the next test).
    msg = _base(env, "ppap-zip", "AES-encrypted zip, password to follow in a second mail")
    msg.set_content(_intro("ppap-zip", "Expected: the zip isolated as encrypted; the ppap-password "
                           "mail that follows opens it in the portal.")
                    + "\nパスワードは別途お送りします。 / The password follows separately.\n")
    msg.add_attachment(aes_zip({"estimate.xlsx": minimal_xlsx([("estimate", 7)])}, env.zip_password),
                       maintype="application", subtype="zip", filename="estimate.zip")
    return msg


def _ppap_password(env: Envelope) -> EmailMessage:
    msg = _base(env, "ppap-password", "the password of the ppap-zip mail")
    msg["In-Reply-To"] = message_id_for("ppap-zip", env.run_id)
    msg["References"] = message_id_for("ppap-zip", env.run_id)
    msg.set_content(_intro("ppap-password", "Expected: delivered with a note that its password "
                           "opened estimate.zip (PPAP_PASSWORD_USED); needs the sender's domain to "
                           "pass SPF or DKIM from this host.")
                    + f"\nパスワード：{env.zip_password}\n")
    return msg


def _exe_as_xlsx(env: Envelope) -> EmailMessage:
    msg = _base(env, "exe-as-xlsx", "a Windows executable named .xlsx")
    msg.set_content(_intro("exe-as-xlsx", "Expected: isolated, the extension disagrees with the type."))
    msg.add_attachment(windows_executable(), maintype="application",
                       subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                       filename="invoice.xlsx")
    return msg


def _velvetsweatshop(env: Envelope) -> EmailMessage:
    msg = _base(env, "velvetsweatshop-xlsx", "Excel file encrypted with the VelvetSweatshop password")
    msg.set_content(_intro("velvetsweatshop-xlsx",
                           "Expected: danger (encryption used to hide from scanners), file deleted."))
    msg.add_attachment(encrypted_xlsx(VELVETSWEATSHOP), maintype="application",
                       subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                       filename="report.xlsx")
    return msg


def _spf_fail(env: Envelope) -> EmailMessage:
    msg = _base(env, "spf-fail", "sender domain whose SPF fails", sender=env.spf_fail_sender)
    url = "https://www.example.org/mailmoat-send-test/spf-fail"
    msg.set_content(_intro("spf-fail", "Expected: warning banner, links neutralised.")
                    + f"\nLink: {url}\n")
    return msg


def _iso_2022_jp(env: Envelope) -> EmailMessage:
    # Japanese mail clients still send JIS: body and subject in ISO-2022-JP, 7-bit on the wire.
    msg = _base(env, "iso-2022-jp", "")
    del msg["Subject"]
    msg.set_content("mailmoat send-test: iso-2022-jp\n"
                    "日本語のテストメールです。件名と本文は ISO-2022-JP で送っています。\n"
                    "Expected: delivered, subject and body readable.\n", charset="iso-2022-jp",
                    cte="7bit")
    return msg


ISO_2022_JP_TITLE = "日本語の件名（ISO-2022-JP）"

_BUILDERS: dict[str, Callable[[Envelope], EmailMessage]] = {
    "clean-text": _clean_text,
    "html-links": _html_links,
    "clean-xlsx": _clean_xlsx,
    "eicar-zip": _eicar_zip,
    "aes-zip": _aes_zip,
    "ppap-zip": _ppap_zip,
    "ppap-password": _ppap_password,
    "exe-as-xlsx": _exe_as_xlsx,
    "velvetsweatshop-xlsx": _velvetsweatshop,
    "spf-fail": _spf_fail,
    "iso-2022-jp": _iso_2022_jp,
}
TEST_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_battery(*, run_id: str, to: str, sender: str = DEFAULT_FROM,
                  spf_fail_sender: str = DEFAULT_SPF_FAIL_FROM,
                  only: Sequence[str] | None = None) -> list[BatteryMessage]:
    """The messages of one run, in the battery's order (`only` picks some by name)."""
    if not valid_run_id(run_id):
        raise ValueError(f"run id {run_id!r}: letters, digits and dashes only")
    unknown = sorted(set(only or ()) - set(TEST_NAMES))
    if unknown:
        raise ValueError(f"unknown test(s) {', '.join(unknown)}; known: {', '.join(TEST_NAMES)}")
    env = Envelope(run_id=run_id, to=to, sender=sender, spf_fail_sender=spf_fail_sender,
                   zip_password=secrets.token_urlsafe(9))
    battery = []
    for name, build in _BUILDERS.items():
        if only and name not in only:
            continue
        msg = build(env)
        raw = msg.as_bytes()
        if name == "iso-2022-jp":
            subject = f"[mailmoat send-test {run_id}/{name}] {ISO_2022_JP_TITLE}"
            # policy.SMTP would re-encode a Subject set through the API as UTF-8; JIS mailers
            # write the encoded word themselves, and so do we.
            encoded = Header(subject, "iso-2022-jp").encode(linesep="\r\n")
            raw = f"Subject: {encoded}\r\n".encode("ascii") + raw
        else:
            subject = str(msg["Subject"])
        battery.append(BatteryMessage(name=name, mail_from=env.spf_fail_sender if name == "spf-fail"
                                      else sender, message_id=message_id_for(name, run_id),
                                      subject=subject, raw=raw))
    return battery
