"""The recipient directory's sync from Microsoft 365 (Graph) and Google Workspace (Admin SDK).

Entry point: `mailmoat.directory.sync.sync_tenant` (the CLI `mailmoat directory sync` and the
scheduled DirectorySyncFunction on AWS both call it). See docs/directory.md.
"""
