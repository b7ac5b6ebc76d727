"""ManagedClamd: the scan image's own clamd behind the antivirus port, started at the first
scan of an execution environment with the databases the signature bucket's manifest names."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mailmoat.adapters.clamd import AntivirusUnavailable, ClamdAntivirus
from mailmoat.aws import observability
from mailmoat.aws.signatures import ClamdProcess, fetch_signatures
from mailmoat.ports import AntivirusResult, SignatureStore

log = logging.getLogger("mailmoat.aws")


class ManagedClamd:
    """If clamd cannot be started the scan still runs: this port raises, the antivirus check
    reports SCAN_FAILED and the policy isolates (fails closed); the next file tries again."""

    def __init__(self, address: str, *, command: list[str], mirror: SignatureStore,
                 signature_dir: Path, start_seconds: float = 120.0) -> None:
        self.client = ClamdAntivirus(address)
        self.mirror = mirror
        self.signature_dir = signature_dir
        self.process = ClamdProcess(command=command, ready=ClamdAntivirus(address, connect_timeout=1.0).ping,
                                    start_seconds=start_seconds)
        self._lock = threading.Lock()

    def ensure(self) -> bool:
        with self._lock:
            running = self.process.process is not None and self.process.process.poll() is None
            if running and self.process.ready():
                return True
            try:
                fetched = fetch_signatures(self.mirror, self.signature_dir)
            except Exception as exc:  # S3 or a file: either way the scan must go on and fail closed
                log.error("ClamAV databases unavailable: %s", exc)
                return False
            observability.count(observability.SIGNATURE_FILES_DOWNLOADED, len(fetched))
            if not self.process.ensure():
                log.error("clamd is not running: attachments get SCAN_FAILED until it starts")
                return False
            return True

    def ping(self) -> bool:
        return self.ensure()

    def version(self) -> str:
        """clamd's VERSION answer (engine/database version/date): the retro-hunt's signature state."""
        if not self.ensure():
            raise AntivirusUnavailable("clamd could not be started with the signature bucket's databases")
        return self.client.version()

    def scan(self, data: bytes) -> AntivirusResult:
        if not self.ensure():
            raise AntivirusUnavailable("clamd could not be started with the signature bucket's databases")
        return self.client.scan(data)
