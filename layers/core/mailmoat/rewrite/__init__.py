"""Making a message safe to read: banner, defanged links, HTML→text, our headers, ARC seal."""
