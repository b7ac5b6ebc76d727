"""The console's session-signing secret: generated once, kept in the data directory, mode 0600."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret, creating it on first use. The file is created with O_EXCL and mode
    0600 in one call, so there is no moment when it exists with wider permissions; a file
    someone made group/world readable is tightened, not trusted as is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    value = secrets.token_hex(SECRET_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return value.encode("ascii")


def _read(path: Path) -> bytes:
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    value = path.read_text(encoding="ascii").strip()
    if len(value) < 2 * SECRET_BYTES:
        raise ValueError(f"{path}: the session secret is too short; delete the file to renew it")
    return value.encode("ascii")
