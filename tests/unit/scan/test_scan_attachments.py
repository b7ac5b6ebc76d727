"""DESIGN §3: what is and is not an attachment, and attached messages as the worst file inside."""

from __future__ import annotations

from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from tests.unit.scan.scanfiles import eml, make_zip, only

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def _base() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "t"
    return msg


def test_inline_text_and_html_are_not_attachments(analyse):
    msg = _base()
    msg.set_content("plain")
    msg.add_alternative("<p>html</p>", subtype="html")
    assert analyse(msg.as_bytes())["attachments"] == []


def test_inline_image_in_related_is_not_an_attachment(analyse):
    msg = _base()
    msg.set_content("plain")
    msg.add_alternative('<p><img src="cid:logo@x"></p>', subtype="html")
    html = msg.get_payload()[1]
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo@x>")
    assert analyse(msg.as_bytes())["attachments"] == []


def test_image_with_disposition_attachment_is_an_attachment(analyse):
    att = only(analyse(eml(("photo.png", PNG, "image/png"))))
    assert att["verdict"] == "safe" and att["detected_type"] == "image/png"


def test_read_receipt_is_not_an_attachment(analyse):
    outer = MIMEMultipart("report", report_type="disposition-notification")
    outer["From"] = "a@example.com"
    outer["Subject"] = "Read: hello"
    outer.attach(MIMEText("Your message was read."))
    mdn = MIMEApplication(b"Reporting-UA: x\r\nFinal-Recipient: rfc822;a@example.com\r\n"
                          b"Disposition: manual-action/MDN-sent-manually; displayed\r\n",
                          _subtype="octet-stream")
    mdn.replace_header("Content-Type", "message/disposition-notification")
    outer.attach(mdn)
    headers = MIMEText("From: a@example.com\nSubject: hello\n", "rfc822-headers")
    outer.attach(headers)
    assert analyse(outer.as_bytes())["attachments"] == []


def test_smime_is_not_an_attachment(analyse):
    signed = MIMEMultipart("signed", protocol="application/pkcs7-signature", micalg="sha-256")
    signed["From"] = "a@example.com"
    signed.attach(MIMEText("signed body"))
    sig = MIMEApplication(b"0\x82\x01\x00fake-signature", _subtype="pkcs7-signature",
                          name="smime.p7s")
    sig.add_header("Content-Disposition", "attachment", filename="smime.p7s")
    signed.attach(sig)
    assert analyse(signed.as_bytes())["attachments"] == []
    enveloped = MIMEApplication(b"0\x82\x01\x00fake-envelope", _subtype="pkcs7-mime",
                                name="smime.p7m")
    enveloped.add_header("Content-Disposition", "attachment", filename="smime.p7m")
    enveloped["From"] = "a@example.com"
    assert analyse(enveloped.as_bytes())["attachments"] == []


def test_third_party_encrypted_atc_is_not_an_attachment(analyse):
    assert analyse(eml(("secret.atc", b"\x00\x01opaque")))["attachments"] == []


def _with_inner(*files: tuple[str, bytes]) -> bytes:
    inner = _base()
    inner.replace_header("Subject", "forwarded")
    inner.set_content("inner body")
    for name, data in files:
        inner.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    outer = _base()
    outer.set_content("see the forwarded message")
    outer.add_attachment(inner)
    return outer.as_bytes()


def test_attached_message_without_files_is_not_listed(analyse):
    assert analyse(_with_inner())["attachments"] == []


def test_attached_message_is_as_bad_as_the_worst_file_inside(analyse):
    mz = b"MZ\x90\x00" + b"\x00" * 200
    report = analyse(_with_inner(("notes.txt", b"fine"), ("tool.exe", mz)))
    by_path = {a["path"]: a for a in report["attachments"]}
    message = by_path["2"]
    assert message["detected_type"] == "message/rfc822"
    assert message["verdict"] == "risky" and "DANGEROUS_EXTENSION" in message["symbols"]
    inner = {a["filename"]: a for a in report["attachments"] if a["path"] != "2"}
    assert inner["tool.exe"]["path"].startswith("2.") and inner["tool.exe"]["verdict"] == "risky"
    assert inner["notes.txt"]["verdict"] == "safe"
    assert report["attachments"][0]["path"] == "2"  # the message comes first


def test_attached_message_with_clean_files(analyse):
    report = analyse(_with_inner(("a.zip", make_zip({"a.txt": b"x"}))))
    assert [a["verdict"] for a in report["attachments"]] == ["safe", "safe"]
    assert report["attachments"][0]["action"] == "keep"


def test_filename_from_both_headers_disagreeing_is_risky(analyse):
    msg = _base()
    msg.set_content("x")
    msg.add_attachment(b"%PDF-1.4\n", maintype="application", subtype="pdf", filename="a.pdf")
    part = msg.get_payload()[1]
    part.set_param("name", "a.exe", header="Content-Type")
    att = only(analyse(msg.as_bytes()))
    assert "FILENAME_MISMATCH" in att["symbols"] and att["verdict"] == "risky"
