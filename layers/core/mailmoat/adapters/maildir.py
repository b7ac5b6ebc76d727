"""MaildirMailer: one Maildir per recipient under the data directory (local default delivery)."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from mailmoat.ports import DeliveryError
from mailmoat.smtp_text import header_safe


def _safe_mailbox_name(address: str) -> str:
    local, _, domain = address.lower().partition("@")
    name = f"{domain}/{local}" if domain else local
    cleaned = "".join(ch if ch.isalnum() or ch in "._+-/@" else "_" for ch in name)
    if ".." in cleaned or cleaned.startswith("/"):
        raise DeliveryError(f"refusing mailbox name {address!r}", permanent=True)
    return cleaned


class MaildirMailer:
    """Delivery file names are derived from (message id, recipient), so delivering the same
    message twice — after a crash between delivery and bookkeeping — finds the file already
    there and does nothing: exactly once per recipient."""

    idempotent = True  # delivering the same (message, recipient) again finds the file there

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().replace("/", "_").replace(":", "_") or "localhost"

    def mailbox(self, recipient: str) -> Path:
        return self.root / _safe_mailbox_name(recipient)

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        box = self.mailbox(recipient)
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(f"{message_id}\0{recipient.lower()}".encode()).hexdigest()[:24]
        name = f"{message_id}.{key}.{self.host}"
        final = box / "new" / name
        if final.exists() or any((box / "cur").glob(f"{name}*")):
            return str(final)
        # Maildir files use the local line ending (LF), as Dovecot and mutt expect.
        # Envelope values into headers: nothing that could end the line (mailmoat.smtp_text).
        header = (f"Return-Path: <{header_safe(mail_from or '')}>\n"
                  f"Delivered-To: {header_safe(recipient)}\n").encode()
        tmp = box / "tmp" / name
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(data.replace(b"\r\n", b"\n"))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, final)  # atomic, and fails rather than overwrite
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return str(final)
