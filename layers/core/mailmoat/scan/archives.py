"""Archive walking (zip, 7z, rar, tar, gz/bz2/xz, lzh/cab/iso) in memory, within scan.walker's bounds."""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from mailmoat.scan.filetype import extension
from mailmoat.scan.lists import Lists
from mailmoat.scan.result import Budget, FileResult, LimitReached
from mailmoat.scan.walker import CHUNK, Walker, unsafe_path
from mailmoat.scan.walker import MemberAnalyser as MemberAnalyser  # engine.py imports it from here

_Walker = Walker  # engine.py's name for it (PDF embedded files) until it imports mailmoat.scan.walker

ZIP_TYPES = frozenset({"application/zip", "application/java-archive",
                       "application/vnd.android.package-archive"})
SEVENZIP_TYPES = frozenset({"application/x-7z-compressed"})
RAR_TYPES = frozenset({"application/x-rar", "application/vnd.rar", "application/x-rar-compressed"})
TAR_TYPES = frozenset({"application/x-tar", "application/x-gtar"})
STREAM_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/x-bzip2",
                          "application/x-xz", "application/x-lzma"})
LIBARCHIVE_TYPES = frozenset({"application/x-lzh-compressed", "application/x-lha",
                              "application/vnd.ms-cab-compressed", "application/x-iso9660-image",
                              "application/x-cpio", "application/x-archive"})
ARCHIVE_READABLE = ZIP_TYPES | SEVENZIP_TYPES | RAR_TYPES | TAR_TYPES | STREAM_TYPES | LIBARCHIVE_TYPES


def walk_archive(data: bytes, detected: str, name: str | None, result: FileResult, prefix: str,
                 depth: int, budget: Budget, lists: Lists, analyse_member: MemberAnalyser) -> None:
    """List and analyse the members of an archive into `result`. Never raises."""
    if depth >= budget.limits.archive_max_depth:
        result.add("ARCHIVE_LIMIT", f"archives nested deeper than {budget.limits.archive_max_depth}")
        return
    walker = Walker(result, prefix, depth, budget, lists, analyse_member, len(data))
    try:
        if detected in ZIP_TYPES:
            _walk_zip(data, walker)
        elif detected in SEVENZIP_TYPES:
            _walk_7z(data, walker)
        elif detected in RAR_TYPES:
            _walk_rar(data, walker)
        elif detected in TAR_TYPES:
            _walk_tar(data, walker)
        elif detected in STREAM_TYPES:
            _walk_stream(data, detected, name, walker)
        else:
            _walk_libarchive(data, walker)
    except LimitReached as exc:
        budget.stopped = budget.stopped or str(exc)
        result.add("ARCHIVE_LIMIT", str(exc))
    except MemoryError:
        budget.stopped = "out of memory while expanding"
        result.add("ARCHIVE_LIMIT", budget.stopped)
    except _Corrupt as exc:
        result.add("ARCHIVE_CORRUPT", str(exc)[:200])
    except Exception as exc:  # a reader choking on hostile input is a finding, not a crash
        result.add("ARCHIVE_CORRUPT", f"{type(exc).__name__}: {exc}"[:200])


class _Corrupt(Exception):
    pass


# --- zip ---------------------------------------------------------------------------------------

def zip_member_name(info: zipfile.ZipInfo) -> str:
    """The member name as the sender's system wrote it. Without the UTF-8 flag (bit 11)
    Japanese Windows writes CP932; zipfile has decoded those bytes as CP437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        raw = info.orig_filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    for codec in ("utf-8", "cp932"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return info.filename


def zip_encryption(info: zipfile.ZipInfo) -> str | None:
    if info.compress_type == 99:  # WinZip AE-x: the method is stored in the 0x9901 extra field
        strength = _aes_strength(info.extra)
        return f"AES-{strength}" if strength else "AES"
    if info.flag_bits & 0x40:
        return "PKWARE strong encryption"
    if info.flag_bits & 0x1:
        return "ZipCrypto"
    return None


def _aes_strength(extra: bytes) -> int | None:
    i = 0
    while i + 4 <= len(extra):
        tag = int.from_bytes(extra[i:i + 2], "little")
        size = int.from_bytes(extra[i + 2:i + 4], "little")
        if tag == 0x9901 and size >= 7:
            return {1: 128, 2: 192, 3: 256}.get(extra[i + 8])
        i += 4 + size
    return None


def zip_directory_entries(data: bytes) -> int | None:
    """Members the central directory holds, from its end record, before parsing it: opening
    a 100k-member zip costs a second; the count (or the directory's size) says so at once."""
    try:
        endrec = zipfile._EndRecData(io.BytesIO(data))  # type: ignore[attr-defined]
    except Exception:
        return None
    if not endrec:
        return None
    total = int(endrec[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]
    by_size = int(endrec[zipfile._ECD_SIZE]) // 46  # type: ignore[attr-defined]  # 46 = min entry
    return max(total, by_size)


def _walk_zip(data: bytes, w: Walker) -> None:
    entries = zip_directory_entries(data)
    if entries is not None and entries > w.budget.limits.archive_max_members:
        w.budget.members += entries
        raise LimitReached(f"{entries} members, more than {w.budget.limits.archive_max_members}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        # No central directory (truncated, or only local headers): libarchive reads the
        # local headers in order and lists what is there.
        w.result.add("ARCHIVE_CORRUPT", f"zip: {exc}"[:200])
        try:
            _walk_libarchive(data, w)
        except (LimitReached, MemoryError):
            raise
        except Exception:  # noqa: S110 - already recorded as ARCHIVE_CORRUPT above
            pass
        return
    with zf:
        infos = zf.infolist()
        if len(infos) > w.budget.limits.archive_max_members:
            # Fail fast on a 100k-member central directory instead of walking it.
            w.budget.members += len(infos)
            raise LimitReached(f"{len(infos)} members, more than {w.budget.limits.archive_max_members}")
        for info in infos:
            w.count_member()
            if info.is_dir():
                continue
            name = zip_member_name(info)
            encrypted = zip_encryption(info)
            if encrypted:
                w.member(name, encrypted=encrypted, size=info.file_size)
                continue
            try:
                with zf.open(info) as fh:
                    content = w.read_bounded(fh, info.compress_size)
            except (LimitReached, MemoryError):
                raise
            except Exception as exc:  # bad CRC, unsupported method, truncated member
                w.member(name, size=info.file_size,
                         extra=[("ARCHIVE_CORRUPT", f"{type(exc).__name__}: {exc}"[:200])])
                continue
            w.member(name, content=content, size=len(content))


# --- 7z ----------------------------------------------------------------------------------------

def _walk_7z(data: bytes, w: Walker) -> None:
    import py7zr
    from py7zr.exceptions import PasswordRequired

    try:
        archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r")
    except PasswordRequired:
        # Header encryption: even the member names are hidden.
        w.result.add("ENCRYPTED_ARCHIVE", "7z with encrypted header (names hidden)")
        return
    except (py7zr.Bad7zFile, EOFError) as exc:
        raise _Corrupt(f"7z: {exc}") from exc
    with archive:
        infos = [i for i in archive.list()]
        if len(infos) > w.budget.limits.archive_max_members:
            raise LimitReached(f"{len(infos)} members, more than {w.budget.limits.archive_max_members}")
        if archive.needs_password():
            for info in infos:
                w.count_member()
                if not info.is_directory:
                    w.member(info.filename, encrypted="7z AES-256", size=info.uncompressed)
            return
        declared = sum(int(i.uncompressed or 0) for i in infos)
        if declared > w.budget.limits.archive_max_expanded_bytes:
            raise LimitReached(f"declared expanded size {declared} bytes over "
                               f"{w.budget.limits.archive_max_expanded_bytes}")
        factory = memory_factory(w.count_expanded)
        archive.extract(factory=factory)
        for info in infos:
            w.count_member()
            if info.is_directory:
                continue
            sink = factory.files.get(info.filename)
            content = bytes(sink.buf) if sink is not None else b""
            w.member(info.filename, content=content, size=len(content))


def memory_factory(on_write: Callable[[int], None]) -> Any:
    """A py7zr WriterFactory keeping every member in memory (`.files[name].buf`); `on_write`
    sees each chunk's size first and raises to stop the extraction (the bounds)."""
    from py7zr.io import Py7zIO, WriterFactory

    class MemorySink(Py7zIO):
        def __init__(self) -> None:
            self.buf = bytearray()

        def write(self, s: bytes | bytearray) -> int:
            on_write(len(s))
            self.buf += s
            return len(s)

        def read(self, size: int | None = None) -> bytes:
            return b""

        def seek(self, offset: int, whence: int = 0) -> int:
            return 0

        def flush(self) -> None:
            return None

        def size(self) -> int:
            return len(self.buf)

    class MemoryFactory(WriterFactory):
        def __init__(self) -> None:
            self.files: dict[str, MemorySink] = {}

        def create(self, filename: str) -> Py7zIO:
            sink = MemorySink()
            self.files[filename] = sink
            return sink

    return MemoryFactory()


# --- rar ---------------------------------------------------------------------------------------

def _walk_rar(data: bytes, w: Walker) -> None:
    import rarfile

    encrypted: dict[str, str] = {}
    try:
        with rarfile.RarFile(io.BytesIO(data)) as rf:
            if rf.needs_password() and not rf.infolist():
                w.result.add("ENCRYPTED_ARCHIVE", "rar with encrypted headers (names hidden)")
                return
            infos = rf.infolist()
            if len(infos) > w.budget.limits.archive_max_members:
                raise LimitReached(f"{len(infos)} members, more than "
                                   f"{w.budget.limits.archive_max_members}")
            for info in infos:
                if info.needs_password():
                    encrypted[info.filename] = "rar"
    except rarfile.PasswordRequired:
        w.result.add("ENCRYPTED_ARCHIVE", "rar with encrypted headers (names hidden)")
        return
    except rarfile.Error as exc:
        raise _Corrupt(f"rar: {exc}") from exc
    # rarfile reads headers itself but needs an external tool for content; libarchive
    # decompresses RAR4/RAR5 in-process and in chunks.
    _walk_libarchive(data, w, encrypted)


# --- tar and single-stream compressors ---------------------------------------------------------

def _walk_tar(data: bytes, w: Walker) -> None:
    import tarfile

    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise _Corrupt(f"tar: {exc}") from exc
    with tf:
        while True:
            try:
                ti = tf.next()
            except tarfile.TarError as exc:
                raise _Corrupt(f"tar: {exc}") from exc
            if ti is None:
                break
            w.count_member()
            extra: list[tuple[str, str]] = []
            if (ti.issym() or ti.islnk()) and unsafe_path(ti.linkname):
                extra.append(("PATH_TRAVERSAL", f"link to {ti.linkname}"))
            if not ti.isfile():
                if extra:
                    w.member(ti.name, extra=extra)
                continue
            fh = tf.extractfile(ti)
            content = w.read_bounded(fh, None) if fh is not None else b""
            w.member(ti.name, content=content, size=len(content), extra=extra)


def _walk_stream(data: bytes, detected: str, name: str | None, w: Walker) -> None:
    import bz2
    import gzip
    import lzma

    def opener(raw: IO[bytes]) -> gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile:
        if detected in {"application/gzip", "application/x-gzip"}:
            return gzip.GzipFile(fileobj=raw)
        if detected == "application/x-bzip2":
            return bz2.BZ2File(raw)
        return lzma.LZMAFile(raw)

    w.count_member()
    try:
        with opener(io.BytesIO(data)) as fh:
            content = w.read_bounded(fh, len(data))
    except (EOFError, OSError, lzma.LZMAError) as exc:
        raise _Corrupt(f"{detected}: {exc}") from exc
    w.member(_stream_member_name(name), content=content, size=len(content))


def _stream_member_name(name: str | None) -> str:
    base = posixpath.basename((name or "").replace("\\", "/"))
    ext = extension(base)
    if not base or ext is None:
        return "data"
    stem = base.rstrip(". ")[: -(len(ext) + 1)]
    if ext in {"tgz", "tbz", "tbz2", "txz"}:
        return stem + ".tar"
    return stem or "data"


# --- everything else libarchive reads (lzh, cab, iso, rar content, broken zips) ------------------

def _entry_encrypted(entry: Any) -> bool:
    """libarchive knows per entry; libarchive-c does not expose it, so ask through ctypes."""
    import ctypes

    from libarchive.ffi import libarchive as lib

    func = lib.archive_entry_is_encrypted
    if func.argtypes is None:  # a pointer passed as a default int would be truncated
        func.argtypes = [ctypes.c_void_p]
        func.restype = ctypes.c_int
    try:
        return bool(func(entry._entry_p))
    except Exception:
        return False


@contextmanager
def _libarchive_reader(data: bytes) -> Iterator[Any]:
    """libarchive-c's memory_reader plus one reader option it does not expose: LHA headers
    without a charset are CP932 (Japanese LHA tools); libarchive would otherwise fail on them."""
    import ctypes

    from libarchive import ffi
    from libarchive.read import ArchiveRead, new_archive_read

    set_options = ffi.libarchive.archive_read_set_options
    if set_options.argtypes is None:
        set_options.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        set_options.restype = ctypes.c_int
    with new_archive_read("all", "all") as archive_p:
        set_options(archive_p, b"lha:hdrcharset=CP932")  # a refusal only means no LHA module
        ffi.read_open_memory(archive_p, ctypes.cast(data, ctypes.c_void_p),  # type: ignore[arg-type]
                             len(data))
        yield ArchiveRead(archive_p, "utf-8")


def _walk_libarchive(data: bytes, w: Walker, encrypted: dict[str, str] | None = None) -> None:
    from libarchive.exception import ArchiveError

    encrypted = encrypted or {}
    try:
        with _libarchive_reader(data) as archive:
            for entry in archive:
                w.count_member()
                name = entry.pathname or "unnamed"
                if entry.isdir:
                    continue
                extra: list[tuple[str, str]] = []
                if (entry.issym or entry.islnk) and entry.linkpath and unsafe_path(entry.linkpath):
                    extra.append(("PATH_TRAVERSAL", f"link to {entry.linkpath}"))
                if name in encrypted or _entry_encrypted(entry):
                    w.member(name, encrypted=encrypted.get(name, "encrypted member"),
                             size=entry.size, extra=extra)
                    continue
                if not entry.isreg:
                    if extra:
                        w.member(name, extra=extra)
                    continue
                try:
                    content = w.read_bounded(iter(entry.get_blocks(CHUNK)), None)
                except ArchiveError as exc:
                    w.member(name, size=entry.size,
                             extra=[*extra, ("ARCHIVE_CORRUPT", str(exc)[:200])])
                    continue
                w.member(name, content=content, size=len(content), extra=extra)
    except ArchiveError as exc:
        raise _Corrupt(f"libarchive: {exc}") from exc
