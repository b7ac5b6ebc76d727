"""Shipped extension lists (DESIGN §8) and tenant overrides merged over them."""

from __future__ import annotations

from dataclasses import dataclass

from mailmoat.config import TenantConfig

# DESIGN §8, executable and script types; flagged on attachments and on members of
# unencrypted archives at any depth.
_DESIGN_8 = """
ade adp apk app appx appxbundle asp aspx asx bas bat cab cer chm cmd cnt com
cpl crt csh der diagcab dll dmg ex ex_ exe fpx gadget grp hlp hpj hta htc inf
ins iso isp its jar jnlp js jse ksh lib lnk mad maf mag mam maq mar mas mat
mau mav maw mcf mda mdb mde mdt mdw mdz msc msh msh1 msh1xml msh2 msh2xml
mshxml msi msix msixbundle msp mst msu nsh ops osd pcd pif pl plg prf prg
printerexport ps1 ps1xml ps2 ps2xml psc1 psc2 psd1 psdm1 pst py pyc pyo pyw
pyz pyzw reg scf scr sct shb shs sys theme tmp url vb vbe vbp vbs vhd vhdx
vsmacros vsw vxd webpnp website ws wsc wsf wsh xbap xll
"""
DANGEROUS_EXTENSIONS: frozenset[str] = frozenset(_DESIGN_8.split())

# DESIGN §8 archive types (compared case-insensitively, so "Z" is "z"); zip is optional.
ARCHIVE_TYPES: frozenset[str] = frozenset({"7z", "bz2", "wim", "rar", "lzh", "z", "gz", "tar"})

# Real types (detected from content) that count as the archive types above, so a
# renamed archive is still an archive type.
ARCHIVE_MIME_TO_TYPE: dict[str, str] = {
    "application/x-7z-compressed": "7z",
    "application/x-bzip2": "bz2",
    "application/x-ms-wim": "wim",
    "application/x-rar": "rar",
    "application/vnd.rar": "rar",
    "application/x-rar-compressed": "rar",
    "application/x-lzh-compressed": "lzh",
    "application/x-lha": "lzh",
    "application/x-compress": "z",
    "application/gzip": "gz",
    "application/x-gzip": "gz",
    "application/x-tar": "tar",
    "application/x-gtar": "tar",
    "application/zip": "zip",
}

# Extensions that are really an archive type under another name.
EXTENSION_ALIASES: dict[str, str] = {"tgz": "gz", "tbz": "bz2", "tbz2": "bz2", "lha": "lzh",
                                     "taz": "z"}


def _norm(ext: str) -> str:
    return ext.strip().lower().lstrip(".")


@dataclass(frozen=True, slots=True)
class Lists:
    """The effective lists for one tenant: shipped defaults merged with its overrides."""

    dangerous: frozenset[str] = DANGEROUS_EXTENSIONS
    archive_types: frozenset[str] = ARCHIVE_TYPES

    @classmethod
    def for_tenant(cls, tenant: TenantConfig | None) -> Lists:
        if tenant is None:
            return cls()
        add = {_norm(e) for e in tenant.dangerous_extensions_add if _norm(e)}
        remove = {_norm(e) for e in tenant.dangerous_extensions_remove}
        archives = set(ARCHIVE_TYPES) | ({"zip"} if tenant.zip_is_archive_type else set())
        return cls(dangerous=frozenset((DANGEROUS_EXTENSIONS | add) - remove),
                   archive_types=frozenset(archives - remove))

    def is_dangerous(self, ext: str | None) -> bool:
        return bool(ext) and _norm(ext or "") in self.dangerous

    def archive_type(self, ext: str | None, detected_type: str | None) -> str | None:
        """The archive type this file is, by extension or by real type, if it is a listed one."""
        if ext:
            e = _norm(ext)
            e = EXTENSION_ALIASES.get(e, e)
            if e in self.archive_types:
                return e
        kind = ARCHIVE_MIME_TO_TYPE.get(detected_type or "")
        if kind and kind in self.archive_types:
            return kind
        return None

    @property
    def key(self) -> tuple[frozenset[str], frozenset[str]]:
        """Cache key part: a result computed under other lists must not be reused."""
        return (self.dangerous, self.archive_types)
