"""Attachment analysis: type, names, archives, Office, PDF, antivirus → a verdict (DESIGN §4)."""

# olevba imports XLMMacroDeobfuscator when it is installed, and that prints a pywin32 notice on
# stdout (the JSON of `mailmoat process --json`) unless told to be silent first.
try:
    import XLMMacroDeobfuscator.configs.settings as _xlm_settings

    _xlm_settings.SILENT = True
except ImportError:  # pragma: no cover - a runtime without the emulator
    pass
