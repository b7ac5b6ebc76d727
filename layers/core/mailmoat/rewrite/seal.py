"""ARC sealing (RFC 8617) with dkimpy; the key is configured, or generated once locally."""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from mailmoat import authres_speedups, dkim_speedups
from mailmoat.smtp_text import has_bare_lf

dkim_speedups.install()  # exact, faster dkimpy passes for large messages
authres_speedups.install()  # sign() parses our Authentication-Results with authres

log = logging.getLogger("mailmoat.rewrite.seal")

_KEY_BITS = 2048
_lock = threading.Lock()
_cache: dict[tuple[str, int], ArcKey] = {}


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_openssl_keys: dict[int, rsa.RSAPrivateKey] = {}


class _Digest(Protocol):
    @property
    def name(self) -> str: ...

    def digest(self) -> bytes: ...


def openssl_pkcs1_sign(digest: _Digest, private_key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA-PKCS1-v1_5 signing done by OpenSSL instead of Python big-int pow:
    about 15 ms less per seal on a 2048-bit key. PKCS#1 v1.5 signatures are deterministic,
    so the bytes are exactly those dkimpy would produce (a test checks this)."""
    modulus = private_key["modulus"]
    key = _openssl_keys.get(modulus)
    if key is None:
        public = rsa.RSAPublicNumbers(private_key["publicExponent"], modulus)
        key = rsa.RSAPrivateNumbers(
            p=private_key["prime1"], q=private_key["prime2"], d=private_key["privateExponent"],
            dmp1=private_key["exponent1"], dmq1=private_key["exponent2"],
            iqmp=private_key["coefficient"], public_numbers=public).private_key()
        _openssl_keys[modulus] = key
    algorithm = _HASHES[digest.name.lower()]()
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


# dkim.gen_header calls this module-level name; only signing goes through it (verification,
# which the authenticate stage uses, does not).
dkim.RSASSA_PKCS1_v1_5_sign = openssl_pkcs1_sign

_dkimpy_parse_pem = dkim.crypto.parse_pem_private_key
_parsed_pems: dict[bytes, dict[str, int]] = {}
_PARSED_PEMS_MAX = 32  # keys in use at once: one per sealing identity, plus a rotation


def parsed_pem_private_key(pem: bytes) -> dict[str, int]:
    """dkimpy's PEM parse (a regex, base64 and a pure-Python ASN.1 walk), once per key rather
    than on every seal: dkimpy's sign() takes the PEM and parses it each call. Same dict, so
    the same signature bytes; a key it cannot parse still raises on every call."""
    parsed = _parsed_pems.get(pem)
    if parsed is None:
        parsed = _dkimpy_parse_pem(pem)
        if len(_parsed_pems) >= _PARSED_PEMS_MAX:
            _parsed_pems.clear()
        _parsed_pems[pem] = parsed
    return dict(parsed)  # a copy: nothing dkimpy does to it reaches the next seal


# ARC.sign (and DKIM.sign) call this module-level name.
dkim.parse_pem_private_key = parsed_pem_private_key


class SealError(RuntimeError):
    """The message could not be sealed; the caller holds it rather than deliver it unsealed."""


@dataclass(frozen=True, slots=True)
class ArcKey:
    private_pem: bytes  # PKCS#1 ("BEGIN RSA PRIVATE KEY"), the form dkimpy parses
    public_b64: str  # SubjectPublicKeyInfo, base64: the p= of the DNS record
    path: Path

    def dns_record(self, selector: str, domain: str) -> str:
        return f'{selector}._domainkey.{domain}. IN TXT "v=DKIM1; k=rsa; p={self.public_b64}"'

    @property
    def txt_value(self) -> bytes:
        return f"v=DKIM1; k=rsa; p={self.public_b64}".encode("ascii")


def key_from_pem(pem: bytes, path: Path) -> ArcKey:
    """An ArcKey from PEM bytes (PKCS#1 or PKCS#8); `path` names where it came from."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SealError(f"ARC key {path} is not an RSA key")
    # The signing shortcut finds the already validated key by its modulus.
    _openssl_keys[key.private_numbers().public_numbers.n] = key
    pkcs1 = key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return ArcKey(pkcs1, base64.b64encode(spki).decode("ascii"), path)


def load_key(path: Path) -> ArcKey:
    """Read a PEM RSA private key (PKCS#1 or PKCS#8), cached per file version."""
    stat = path.stat()
    cache_key = (str(path), stat.st_mtime_ns)
    cached = _cache.get(cache_key)
    if cached is None:
        cached = key_from_pem(path.read_bytes(), path)
        _cache[cache_key] = cached
    return cached


def ensure_local_key(arc_dir: Path, selector: str, domain: str) -> ArcKey:
    """The local key under `arc_dir`, generated on first use (0600) with `public.txt` beside it
    holding the DNS TXT record to publish."""
    private = arc_dir / "private.pem"
    with _lock:
        if not private.exists():
            arc_dir.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
            # Written in full under a private temporary name, then linked into place: another
            # process never reads a half-written key, and the first one to link wins.
            temporary = arc_dir / f".private-{os.getpid()}-{secrets.token_hex(4)}.pem"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(pem)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(temporary, private)
                except FileExistsError:
                    pass
                else:
                    generated = key_from_pem(pem, private)
                    (arc_dir / "public.txt").write_text(
                        generated.dns_record(selector, domain) + "\n", encoding="ascii")
                    log.warning("generated an ARC sealing key at %s; publish the TXT record "
                                "in %s", private, arc_dir / "public.txt")
            finally:
                temporary.unlink(missing_ok=True)
    return load_key(private)


# Header fields the AMS does not sign, in every delivery mode. SES sending replaces Message-ID
# (with its own <...@email.amazonses.com>) and Date, and adds Return-Path, Feedback-ID,
# X-SES-* and its own DKIM-Signature (SES developer guide, header fields; docs/aws-limits.md):
# a seal covering any of them fails at the mailbox. They are left out in smtp and maildir mode
# too: one header list whatever the route (a tenant may switch modes, a relay such as Mail
# Manager may also stamp them), and none of them is what the seal vouches for — From, To,
# Subject, the MIME headers and the body, which stay signed.
_CHANGED_IN_TRANSIT = frozenset({b"message-id", b"date", b"return-path", b"feedback-id",
                                 b"dkim-signature"})
_CHANGED_PREFIXES = (b"x-ses-",)


def _signed_headers(signer: dkim.ARC) -> list[bytes]:
    """dkimpy's default AMS header list without the fields a sending hop changes; From always
    (signing an absent From is allowed, RFC 6376 §5.4, and stops anyone adding one later)."""
    include = [h for h in signer.default_sign_headers()
               if h.lower() not in _CHANGED_IN_TRANSIT and not h.lower().startswith(_CHANGED_PREFIXES)]
    if b"from" not in (h.lower() for h in include):
        include.append(b"from")
    return include


_AR_NAME = b"Authentication-Results"  # the spelling dkimpy's sign() looks for, exactly


def could_be_ours(value: bytes, authserv_id: bytes) -> bool:
    """False only when this Authentication-Results value plainly names another authserv-id:
    its first word before ";" is a bare token that is not ours. Anything a parser might still
    read as ours (a comment or quoted string before ";", no ";", our id in any case) is True."""
    head, sep, _ = value.partition(b";")
    if not sep or b"(" in head or b'"' in head:
        return True
    words = head.split()
    return not words or words[0].lower() == authserv_id.lower()


def _only_possibly_ours(signer: dkim.ARC, authserv_id: bytes) -> None:
    """dkimpy's ARC sign() parses every Authentication-Results field with authres (a pure-Python
    grammar: ~2 ms a message on the corpus, most of a seal's time) only to keep those whose
    authserv-id is ours. Those fields are never signed (sign() puts them in should_not), so
    dropping the plainly foreign ones from its header list first changes nothing it writes
    (a test seals with and without this and compares bytes); it parses ours alone."""
    signer.headers = [h for h in signer.headers
                      if h[0] != _AR_NAME or could_be_ours(h[1], authserv_id)]


def seal(message: bytes, key: ArcKey, *, selector: str, domain: str, authserv_id: str,
         linesep: bytes, timestamp: int | None = None) -> bytes:
    """Prepend the next ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results).
    The message must already carry our Authentication-Results (authserv-id `authserv_id`).
    `timestamp` (t=) is now unless given (tests compare seals byte for byte)."""
    blank = _HEADER_END.search(message)
    if blank is None:
        return seal_parts(message, b"", key, selector=selector, domain=domain,
                          authserv_id=authserv_id, linesep=linesep, timestamp=timestamp)
    cut = blank.start() + (2 if message[blank.start():blank.start() + 2] == b"\r\n" else 1)
    return seal_parts(message[:cut], memoryview(message)[cut:], key, selector=selector,
                      domain=domain, authserv_id=authserv_id, linesep=linesep,
                      timestamp=timestamp)


_HEADER_END = re.compile(rb"\r?\n\r?\n")  # where dkimpy's parse ends the header block
_CR_CR = re.compile(rb"\r\r")


def seal_parts(fields: bytes, rest: bytes | memoryview, key: ArcKey, *, selector: str,
               domain: str, authserv_id: str, linesep: bytes,
               timestamp: int | None = None) -> bytes:
    """`seal` for a message given as its header fields and the rest (the blank line and the
    body), which may be a view of a buffer. The sealed message is built once, from the ARC set,
    the fields and the rest: a 25 MB body is neither copied for dkimpy to hash nor held twice
    while the result is joined (issue 15: a large message in at most 2x its size). dkimpy
    parses the header block alone, and hashes the body view (mailmoat.dkim_speedups takes
    views); the result is the same bytes as dkimpy's sign() over the whole message (tests
    compare them). Anything unusual (no blank line, CR CR) goes through dkimpy whole."""
    view = memoryview(rest)
    blank = 2 if view[:2].tobytes() == b"\r\n" else 1 if view[:1].tobytes() == b"\n" else 0
    body = view[blank:]
    whole: bytes | None = None
    if not fields or not blank or b"\r\r" in fields or _CR_CR.search(body) is not None:
        whole = fields + bytes(view)
    try:
        if whole is not None:
            signer = dkim.ARC(whole, signature_algorithm=b"rsa-sha256", linesep=linesep)
        else:
            signer = dkim.ARC(fields + bytes(view[:blank]), signature_algorithm=b"rsa-sha256",
                              linesep=linesep)
            # dkimpy's parse gives each line a CRLF ("\r?\n" becomes "\r\n"); a body
            # already in CRLF is hashed as the view it is.
            signer.body = bytes(body).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") \
                if has_bare_lf(body) else body
        srv_id = authserv_id.encode("ascii")
        _only_possibly_ours(signer, srv_id)
        arc_set = signer.sign(selector.encode("ascii"), domain.encode("ascii"), key.private_pem,
                              srv_id, include_headers=_signed_headers(signer), timestamp=timestamp)
    except dkim.DKIMException as exc:
        raise SealError(f"arc_sign: {exc}") from exc
    del signer  # and with it the body it hashed, before the result is joined
    if not arc_set:
        raise SealError("arc_sign produced no ARC set (chain state inconsistent with our "
                        "Authentication-Results)")
    # arc_sign returns AAR, AMS, AS; the seal goes on top as receivers conventionally expect.
    sealed = [line if line.endswith(b"\n") else line + linesep for line in reversed(arc_set)]
    return b"".join([*sealed, whole]) if whole is not None else b"".join([*sealed, fields, view])
