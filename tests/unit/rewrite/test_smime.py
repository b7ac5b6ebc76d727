"""S/MIME content is never modified: the banner goes in a new first part around the untouched entity."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import dkim
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from tests.unit.rewrite.conftest import RunRewrite
from tests.unit.rewrite.helpers import leaf, message, multipart, parse, text_parts


def signed_entity() -> bytes:
    """A real detached S/MIME signature over a text part with a link in it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "taro@example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    content = leaf("text/plain", "署名付きの本文 https://example.com/signed\n", "iso-2022-jp",
                   cte="7bit")
    smime = (pkcs7.PKCS7SignatureBuilder().set_data(content)
             .add_signer(cert, key, hashes.SHA256())
             .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature]))
    smime = smime.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head, body = smime.split(b"\r\n\r\n", 1)
    # keep only the Content-* fields; message() adds MIME-Version
    fields = b"\r\n".join(f for f in head.split(b"\r\n") if f.lower().startswith(b"content-"))
    return fields + b"\r\n\r\n" + body


ENVELOPED = (b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
             b"Content-Transfer-Encoding: base64\r\n"
             b'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
             b"MIAGCSqGSIb3DQEHA6CAMIACAQAxggFAMIIBPAIBADAkMBcxFTATBgNVBAMMDGV4YW1wbGUu\r\n"
             b"Y29tAgkA3q2+7wAAAAAwDQYJKoZIhvcNAQEBBQAEggEA\r\n")


@pytest.mark.parametrize("entity_builder", [signed_entity, lambda: ENVELOPED],
                         ids=["multipart-signed", "pkcs7-enveloped"])
@pytest.mark.parametrize("actions", [("banner",), ("banner", "defang")])
def test_smime_entity_is_byte_identical_inside_wrapper(
        run_rewrite: RunRewrite, dnsfunc: Callable[..., bytes],
        entity_builder: Callable[[], bytes], actions: tuple[str, ...]) -> None:
    entity = entity_builder()
    _, result = run_rewrite(message(entity), actions=actions)
    assert entity in result.data  # headers and body of the S/MIME entity, byte for byte
    msg = parse(result.data)
    assert msg.get_content_type() == "multipart/mixed"
    first, second = msg.iter_parts()
    assert first.get_content_type() == "text/plain"
    assert "【注意】" in first.get_content()
    assert "無効化" not in first.get_content()  # signed links could not be disabled: not claimed
    assert second.get_content_type() in ("multipart/signed", "application/pkcs7-mime")
    if "defang" in actions:
        assert ("SMIME_NOT_MODIFIED", "signed or encrypted content left as sent") in result.findings
    cv, _, reason = dkim.arc_verify(result.data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason


def test_smime_without_banner_is_not_rewrapped(run_rewrite: RunRewrite) -> None:
    entity = signed_entity()
    raw = message(entity)
    _, result = run_rewrite(raw, actions=("defang",))
    assert result.data.endswith(raw.split(b"MIME-Version: 1.0\r\n", 1)[1])
    assert parse(result.data).get_content_type() == "multipart/signed"


def test_nested_signed_part_stays_byte_identical(run_rewrite: RunRewrite) -> None:
    signed = signed_entity()
    raw = message(multipart("mixed", leaf("text/plain", "cover note https://example.com\n"),
                            signed))
    _, result = run_rewrite(raw, actions=("banner", "defang"))
    assert signed in result.data
    cover = text_parts(result.data)[0][1]
    assert "【注意】" in cover and "hxxps://example[.]com" in cover
