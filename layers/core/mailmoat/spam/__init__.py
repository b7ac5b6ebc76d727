"""Spam verdicts (DNS blocklists, rspamd, SES), the per-recipient spam quarantine and its digest."""
