"""What the portal does with isolated and kept mail: unlock, re-scan, downloads, previews, reading view."""
