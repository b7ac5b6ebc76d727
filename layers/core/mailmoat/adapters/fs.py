"""FsBlobStore: the blob store port on a directory tree, durable (fsync) before it returns
unless it was built for an analysis that promises nothing (`durable=False`, `scratch()`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path


class FsBlobStore:
    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._scratch: FsBlobStore | None = None

    def scratch(self) -> FsBlobStore:
        """The same tree, written without fsync: for `mailmoat process`, whose data directory is
        a temporary one that no crash recovery will ever read (two fsyncs per put were a tenth
        of its time)."""
        if not self.durable:
            return self
        if self._scratch is None:
            self._scratch = FsBlobStore(self.root, durable=False)
        return self._scratch

    def _path(self, key: str) -> Path:
        # Keys are ours (ids, fixed prefixes), but refuse anything that could leave the root.
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") or "\\" in p or "\x00" in p for p in parts):
            raise ValueError(f"bad blob key: {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            if self.durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if not self.durable:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash too
        finally:
            os.close(dir_fd)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        for key in self.keys(prefix):
            yield key, datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)
