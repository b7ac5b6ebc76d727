"""A real (minimal) VBA project built in the test: MS-OVBA records and compression, stored in a
Compound File (MS-CFB v3) written here, because no installable library writes either."""

from __future__ import annotations

import struct

NOSTREAM = 0xFFFFFFFF
ENDOFCHAIN = 0xFFFFFFFE
FATSECT = 0xFFFFFFFD
SECTOR = 512
MINI = 64

AUTOOPEN_SOURCE = ('Attribute VB_Name = "Module1"\r\n'
                   "Sub AutoOpen()\r\n"
                   '    Shell "cmd.exe /c calc.exe"\r\n'
                   "End Sub\r\n")


def ovba_compress(data: bytes) -> bytes:
    """MS-OVBA 2.4.1 compressed container using literal tokens only (valid, just not smaller)."""
    out = bytearray(b"\x01")
    for start in range(0, max(len(data), 1), 3000):
        chunk = data[start:start + 3000]
        body = bytearray()
        for i in range(0, len(chunk), 8):
            body.append(0)  # flag byte: the next 8 tokens are literals
            body += chunk[i:i + 8]
        out += struct.pack("<H", (len(body) - 1) | 0x3000 | 0x8000) + body
    return bytes(out)


def _rec(rec_id: int, data: bytes) -> bytes:
    return struct.pack("<HI", rec_id, len(data)) + data


def dir_stream(module: str) -> bytes:
    """MS-OVBA 2.3.4.2: project information, no references, one procedural module."""
    u16 = module.encode("utf-16le")
    out = bytearray()
    out += _rec(0x0001, struct.pack("<I", 1))  # PROJECTSYSKIND: 32-bit Windows
    out += _rec(0x0002, struct.pack("<I", 0x409))  # PROJECTLCID
    out += _rec(0x0014, struct.pack("<I", 0x409))  # PROJECTLCIDINVOKE
    out += _rec(0x0003, struct.pack("<H", 1252))  # PROJECTCODEPAGE
    out += _rec(0x0004, b"VBAProject")  # PROJECTNAME
    out += _rec(0x0005, b"") + struct.pack("<HI", 0x0040, 0)  # PROJECTDOCSTRING
    out += _rec(0x0006, b"") + struct.pack("<HI", 0x003D, 0)  # PROJECTHELPFILEPATH
    out += _rec(0x0007, struct.pack("<I", 0))  # PROJECTHELPCONTEXT
    out += _rec(0x0008, struct.pack("<I", 0))  # PROJECTLIBFLAGS
    out += struct.pack("<HIIH", 0x0009, 4, 1, 0)  # PROJECTVERSION
    out += _rec(0x000C, b"") + struct.pack("<HI", 0x003C, 0)  # PROJECTCONSTANTS
    out += struct.pack("<HIH", 0x000F, 2, 1)  # PROJECTMODULES: one module
    out += struct.pack("<HIH", 0x0013, 2, 0xFFFF)  # PROJECTCOOKIE
    out += _rec(0x0019, module.encode())  # MODULENAME
    out += _rec(0x0047, u16)  # MODULENAMEUNICODE
    out += _rec(0x001A, module.encode()) + struct.pack("<HI", 0x0032, len(u16)) + u16
    out += _rec(0x001C, b"") + struct.pack("<HI", 0x0048, 0)  # MODULEDOCSTRING
    out += _rec(0x0031, struct.pack("<I", 0))  # MODULEOFFSET: source at the stream start
    out += _rec(0x001E, struct.pack("<I", 0))  # MODULEHELPCONTEXT
    out += _rec(0x002C, struct.pack("<H", 0xFFFF))  # MODULECOOKIE
    out += struct.pack("<HI", 0x0021, 0)  # MODULETYPE: procedural
    out += struct.pack("<HI", 0x002B, 0)  # module TERMINATOR
    out += struct.pack("<HI", 0x0010, 0)  # dir TERMINATOR
    return bytes(out)


def project_streams(source: str = AUTOOPEN_SOURCE, module: str = "Module1") -> dict[str, bytes]:
    """Streams of a VBA project storage, relative to its root (PROJECT, VBA/...)."""
    project = (f'ID="{{00000000-0000-0000-0000-000000000000}}"\r\nModule={module}\r\n'
               'Name="VBAProject"\r\nHelpContextID="0"\r\nCMG=""\r\nDPB=""\r\nGC=""\r\n\r\n'
               "[Host Extender Info]\r\n"
               "&H00000001={3832D640-CF90-11CF-8E43-00A0C911005A};VBE;&H00000000\r\n")
    return {
        "PROJECT": project.encode(),
        "VBA/dir": ovba_compress(dir_stream(module)),
        "VBA/_VBA_PROJECT": struct.pack("<HHBH", 0x61CC, 0xFFFF, 0x00, 0x0000),
        f"VBA/{module}": ovba_compress(source.encode("latin-1")),
    }


def write_cfb(streams: dict[str, bytes]) -> bytes:
    """MS-CFB v3 with 512-byte sectors; every stream is under 4096 bytes so lives in the
    mini stream. Siblings are chained to the right (valid, if not balanced)."""
    # directory tree: storages from the paths
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "kids": []}]
    index: dict[str, int] = {"": 0}
    for path, data in streams.items():
        assert len(data) < 4096
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            if key in index:
                continue
            is_stream = depth == len(parts)
            entries.append({"name": parts[depth - 1], "type": 2 if is_stream else 1, "kids": [],
                            "data": data if is_stream else None})
            index[key] = len(entries) - 1
            entries[index["/".join(parts[:depth - 1])]]["kids"].append(index[key])
    # mini stream and mini FAT
    ministream = bytearray()
    minifat: list[int] = []
    for entry in entries:
        data = entry.get("data")
        if data is None:
            continue
        first = len(ministream) // MINI
        count = max(1, -(-len(data) // MINI))
        entry["start"], entry["size"] = first, len(data)
        ministream += data + b"\0" * (count * MINI - len(data))
        minifat += [first + i + 1 for i in range(count - 1)] + [ENDOFCHAIN]

    def pad(data: bytes | bytearray) -> bytes:
        return bytes(data) + b"\0" * (-len(data) % SECTOR)

    mini_bytes = pad(ministream)
    minifat_raw = b"".join(struct.pack("<I", v) for v in minifat)
    minifat_bytes = minifat_raw + b"\xff" * (-len(minifat_raw) % SECTOR)  # unused = FREESECT
    dir_entries = bytearray()
    for i, entry in enumerate(entries):
        dir_entries += _dir_entry(entry, entries, i)
    while len(dir_entries) % SECTOR:
        dir_entries += _empty_entry()
    layout = [("mini", len(mini_bytes) // SECTOR), ("minifat", len(minifat_bytes) // SECTOR),
              ("dir", len(dir_entries) // SECTOR)]
    starts: dict[str, int] = {}
    fat: list[int] = []
    for name, count in layout:
        starts[name] = len(fat)
        fat += [len(fat) + i + 1 for i in range(count - 1)] + [ENDOFCHAIN]
    fat_sector = len(fat)
    fat.append(FATSECT)
    fat += [NOSTREAM] * (SECTOR // 4 - len(fat))
    entries[0]["start"], entries[0]["size"] = starts["mini"], len(ministream)
    dir_entries[:128] = _dir_entry(entries[0], entries, 0)

    header = bytearray(SECTOR)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 24, 0x003E, 0x0003, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIIII", header, 40, 0, 1, starts["dir"], 0, 4096, starts["minifat"],
                     len(minifat_bytes) // SECTOR, ENDOFCHAIN, 0)
    difat = [fat_sector] + [NOSTREAM] * 108
    struct.pack_into("<109I", header, 76, *difat)
    return (bytes(header) + mini_bytes + minifat_bytes + bytes(dir_entries)
            + b"".join(struct.pack("<I", v) for v in fat))


def _empty_entry() -> bytes:
    entry = bytearray(128)
    struct.pack_into("<III", entry, 68, NOSTREAM, NOSTREAM, NOSTREAM)
    return bytes(entry)


def _dir_entry(entry: dict, entries: list[dict], i: int) -> bytes:
    out = bytearray(128)
    name = entry["name"].encode("utf-16le") + b"\0\0"
    out[: len(name)] = name
    struct.pack_into("<H", out, 64, len(name))
    out[66] = entry["type"]
    out[67] = 1  # black
    # right sibling: the next kid of the same parent
    right = NOSTREAM
    for parent in entries:
        kids = parent["kids"]
        if i in kids and kids.index(i) + 1 < len(kids):
            right = kids[kids.index(i) + 1]
    child = entry["kids"][0] if entry["kids"] else NOSTREAM
    struct.pack_into("<III", out, 68, NOSTREAM, right, child)
    struct.pack_into("<I", out, 116, entry.get("start", 0) if entry["type"] != 1 else 0)
    struct.pack_into("<Q", out, 120, entry.get("size", 0) if entry["type"] != 1 else 0)
    return bytes(out)


def vba_project_bin(source: str = AUTOOPEN_SOURCE) -> bytes:
    """word/vbaProject.bin (or xl/vbaProject.bin) of a macro-enabled OOXML document."""
    return write_cfb(project_streams(source))


def legacy_word_with_macros(source: str = AUTOOPEN_SOURCE) -> bytes:
    """A Word 97–2003 container: a (stub) WordDocument stream and Macros/ storage."""
    streams = {"WordDocument": b"\xec\xa5" + b"\0" * 600}
    streams.update({f"Macros/{k}": v for k, v in project_streams(source).items()})
    return write_cfb(streams)


def _biff(record: int, data: bytes) -> bytes:
    return struct.pack("<HH", record, len(data)) + data


# MS-OFFCRYPTO 2.3.7.1 password verifier of "VelvetSweatshop" (also in msoffcrypto's doctest).
VELVET_XOR_VERIFIER = 0x9A0A


def legacy_excel(verifier: int | None) -> bytes:
    """An Excel 97–2003 Workbook stream: BOF, FILEPASS with XOR obfuscation (when `verifier`
    is given), EOF. verifier=VELVET_XOR_VERIFIER is the VelvetSweatshop trick."""
    records = _biff(0x0809, struct.pack("<HHHHII", 0x0600, 0x0005, 0x1F35, 0x07CD, 0, 0x0106))
    if verifier is not None:
        records += _biff(0x002F, struct.pack("<HHH", 0x0000, 0x1234, verifier))
    records += _biff(0x000A, b"")
    return write_cfb({"Workbook": records})
