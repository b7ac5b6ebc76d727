"""A PdfConverter built on first use: `mailmoat process` without a convert rule never makes
LibreOffice's private directory nor starts soffice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmoat.convert.libreoffice import LibreOfficePdfConverter


class LazyPdfConverter:
    """PdfConverter. `close()` stops the converter if one was built (registered at exit)."""

    def __init__(self, build: Callable[[], LibreOfficePdfConverter]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._converter: LibreOfficePdfConverter | None = None

    @property
    def started(self) -> bool:
        return self._converter is not None

    def convert(self, data: bytes, filename: str) -> bytes:
        with self._lock:
            if self._converter is None:
                self._converter = self._build()
            converter = self._converter
        return converter.convert(data, filename)

    def close(self) -> None:
        with self._lock:
            if self._converter is not None:
                self._converter.close()
                self._converter = None
