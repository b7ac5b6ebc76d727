"""Sender authentication (DESIGN §5): Received route, SPF, DKIM, DMARC, ARC and SES verdicts."""
