"""Attachment analysis: type, names, archives, Office, PDF, antivirus → a verdict (DESIGN §4)."""
