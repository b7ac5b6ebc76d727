"""What a long-lived worker imports before it takes mail.

The stages and the analysers import their libraries on first use, so that a Lambda handler
pays only for the stage it runs (tests/unit/test_import_budget.py). A local worker
(`mailmoat serve`) lives for days: there the first message of each kind would wait on those
imports instead (oletools, pikepdf, msoffcrypto, lxml … about a second in all on this
project's machine), and with several worker processes every one of them would. The worker
imports them once, before it is ready, and loads the public suffix list and the ARC key
(generating it locally) the same way.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.preload")

# The modules the stages import inside functions (grep "^ *import\|^ *from" in stages/, scan/,
# rewrite/); XLMMacroDeobfuscator is left out: it runs in a confined child process of its own.
FIRST_USE_MODULES: tuple[str, ...] = (
    "mailmoat.scan.pdf", "mailmoat.scan.macros", "mailmoat.scan.archives", "mailmoat.ppap",
    "mailmoat.convert", "mailmoat.rewrite.body", "mailmoat.rewrite.bodytext",
    "mailmoat.rewrite.banner", "mailmoat.rewrite.htmldoc", "mailmoat.services.rescan",
    "oletools.olevba", "oletools.msodde", "oletools.ooxml", "olefile", "msoffcrypto",
    "msoffcrypto.method.ecma376_agile", "pikepdf", "magic", "lxml.etree", "py7zr", "rarfile",
    "libarchive", "yara_x", "bz2", "lzma", "gzip", "tarfile",
)


def preload(settings: Settings) -> list[str]:
    """Import every stage and FIRST_USE_MODULES, and load the ARC key; returns the modules
    that could not be imported (an optional library missing here: its stage says so when a
    message needs it, as without the preload). Never raises."""
    from mailmoat.pipeline import STAGE_NAMES, get_stage

    missing: list[str] = []
    for name in STAGE_NAMES:
        try:
            get_stage(name)
        except Exception:  # the stage fails (and holds) on the message, as it would have
            log.exception("stage %s could not be loaded ahead of mail", name)
            missing.append(f"mailmoat.stages.{name}")
    for module in FIRST_USE_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            log.debug("preload: %s not imported (%s)", module, exc)
            missing.append(module)
    try:
        from mailmoat.auth.dmarc import load_public_suffix_list

        load_public_suffix_list()  # parsed once per process, ~50 ms (more on a busy machine)
    except Exception:
        log.exception("public suffix list not loaded ahead of mail")
    try:
        from mailmoat.rewrite.rewriter import arc_key

        arc_key(settings)
    except Exception as exc:  # no key configured: the rewrite stage holds each message, as before
        log.warning("ARC key not loaded ahead of mail: %s", exc)
    return missing
