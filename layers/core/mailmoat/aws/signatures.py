"""ClamAV databases on AWS: freshclam → signature bucket (scheduled), bucket → clamd (scanner cold start).

freshclam stays the one that talks to the ClamAV mirrors (CDN, signed databases, incremental
.cdiff updates, the cool-down ClamAV enforces): this module only gives it a work directory
seeded with the last published set and its own state file, and publishes what changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailmoat.ports import SignatureStore

log = logging.getLogger("mailmoat.aws")

DATABASE_SUFFIXES = (".cvd", ".cld")
STATE_FILE = "freshclam.dat"  # freshclam's own state: mirror cool-down, its install id
# freshclam's exit codes: 0 updated, 1 already up to date (older releases); anything else failed.
_FRESHCLAM_OK = frozenset({0, 1})
_HEADER_BYTES = 512


class SignatureUpdateFailed(RuntimeError):
    """freshclam failed or published nothing usable: the scheduled run fails (Lambda error metric)."""


@dataclass(slots=True)
class UpdateResult:
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    versions: dict[str, int | None] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def database_version(path: Path) -> int | None:
    """The version in a .cvd/.cld header: `ClamAV-VDB:<time>:<version>:<sigs>:…` in 512 bytes."""
    with path.open("rb") as handle:
        header = handle.read(_HEADER_BYTES).decode("ascii", "replace")
    fields = header.split(":")
    if len(fields) > 2 and fields[0] == "ClamAV-VDB" and fields[2].strip().isdigit():
        return int(fields[2])
    return None


def freshclam_config(database_dir: Path, mirror: str) -> str:
    """No NotifyClamd (there is no clamd next to it), no log file (stdout goes to CloudWatch),
    no DatabaseOwner (Lambda does not run as root, so there is no privilege to drop)."""
    return "\n".join([
        f"DatabaseDirectory {database_dir}",
        f"DatabaseMirror {mirror}",
        "DNSDatabaseInfo current.cvd.clamav.net",
        "ScriptedUpdates yes",  # .cdiff increments instead of whole databases
        "TestDatabases yes",  # a database clamd could not load is never published
        "Bytecode yes",
        "Foreground yes",
        "LogTime yes",
        "ConnectTimeout 30",
        "ReceiveTimeout 120",
        "",
    ])


def update_signatures(store: SignatureStore, *, freshclam: str, mirror: str, workdir: Path,
                      timeout: float = 540.0) -> UpdateResult:
    """Seed `workdir` with the published set, run freshclam once, publish what changed, then
    the manifest (last, so readers never see a manifest naming a missing version)."""
    database_dir = workdir / "db"
    database_dir.mkdir(parents=True, exist_ok=True)
    manifest = store.manifest() or {"files": {}}
    published: dict[str, dict[str, Any]] = dict(manifest.get("files", {}))
    for name, entry in published.items():
        target = database_dir / name
        if not (target.exists() and sha256_file(target) == entry.get("sha256")):
            store.download(name, target, version_id=str(entry.get("version_id", "")))
    store.download(STATE_FILE, database_dir / STATE_FILE)  # absent on the first run: fine

    config = workdir / "freshclam.conf"
    config.write_text(freshclam_config(database_dir, mirror), encoding="utf-8")
    command = [freshclam, f"--config-file={config}", "--stdout"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SignatureUpdateFailed(f"freshclam did not run: {exc}") from exc
    for line in (done.stdout + done.stderr).splitlines()[-40:]:
        log.info("freshclam: %s", line[:300])
    if done.returncode not in _FRESHCLAM_OK:
        raise SignatureUpdateFailed(f"freshclam exited with {done.returncode}")

    result = UpdateResult()
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(database_dir.iterdir()):
        if path.suffix not in DATABASE_SUFFIXES or not path.is_file():
            continue
        digest = sha256_file(path)
        version = database_version(path)
        result.versions[path.name] = version
        old = published.get(path.name)
        if old is not None and old.get("sha256") == digest:
            files[path.name] = old
            result.unchanged.append(path.name)
            continue
        version_id = store.upload(path.name, path, sha256=digest)
        files[path.name] = {"sha256": digest, "size": path.stat().st_size, "version": version,
                            "version_id": version_id}
        result.uploaded.append(path.name)
    if not files:
        raise SignatureUpdateFailed("freshclam left no database in its directory")
    state = database_dir / STATE_FILE
    if state.is_file():
        store.upload(STATE_FILE, state, sha256=sha256_file(state))
    if result.uploaded or set(files) != set(published):
        store.put_manifest({"updated_at": datetime.now(UTC).isoformat(timespec="seconds"), "files": files})
    return result


def fetch_signatures(store: SignatureStore, database_dir: Path) -> list[str]:
    """The published set into `database_dir` (the scanner's, at cold start); files already there
    with the right sha256 are kept. Returns the names fetched. Every file is checked against the
    manifest's sha256 before it replaces the old one: clamd never loads a torn download."""
    manifest = store.manifest()
    if manifest is None:
        raise FileNotFoundError("no ClamAV databases published yet (SignatureUpdateFunction has not run)")
    database_dir.mkdir(parents=True, exist_ok=True)
    fetched = []
    for name, entry in sorted(manifest["files"].items()):
        target = database_dir / name
        expected = str(entry.get("sha256", ""))
        if target.exists() and sha256_file(target) == expected:
            continue
        partial = database_dir / f".{name}.part"
        if not store.download(name, partial, version_id=str(entry.get("version_id", ""))):
            raise FileNotFoundError(f"signature file {name} is in the manifest but not in the bucket")
        if sha256_file(partial) != expected:
            partial.unlink(missing_ok=True)
            raise ValueError(f"signature file {name} does not match the manifest's sha256")
        os.replace(partial, target)
        fetched.append(name)
    return fetched


@dataclass(slots=True)
class ClamdProcess:
    """clamd started once per execution environment (it stays up between warm invocations)."""

    command: Sequence[str]
    ready: Any  # () -> bool: clamd answers PING
    start_seconds: float = 120.0
    process: subprocess.Popen[bytes] | None = None

    def ensure(self) -> bool:
        if self.ready():  # ours, already up (or someone else's on the socket: use it)
            return True
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(list(self.command), stdin=subprocess.DEVNULL)
        # else: ours is still loading its databases; wait for it rather than start a second
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log.error("clamd exited with %s while loading", self.process.returncode)
                return False
            if self.ready():
                return True
            time.sleep(0.5)
        log.error("clamd did not answer within %.0f s", self.start_seconds)
        return False
