"""Routing loops: the trace header every copy we deliver carries, and how to tell that a message
coming in has already been through this gateway (detection only; policy.decide holds it)."""

from __future__ import annotations

import email.message
import re

from mailmoat.settings import Settings

TRACE_HEADER = "X-Mailmoat-Trace"

# Passes through us a message may make, counted by our own Received lines, before it is taken
# for a loop even without our trace header (a mailbox host that strips X- headers). A message
# legitimately comes back now and then (a user's redirect to a colleague behind the same
# gateway); three passes is more than any real route needs and few enough copies of a loop.
MAX_PASSES = 3

_MAX_TRACE_FIELDS = 50  # trace headers looked at; the header block itself is bounded at parse
_FIRST_WORD = re.compile(r"^\s*([^\s;]+)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def gateway_name(settings: Settings) -> str:
    """This install's name: the ARC signing domain (on AWS the relay identity's domain, set by
    the AWS composition root), else the SMTP hostname. Unlike the authserv-id, whose default
    every install shares, it differs between two installs that deliver to each other."""
    return (settings.arc_domain or settings.smtp_hostname).strip().rstrip(".").lower()


def trace_header(settings: Settings, message_id: str) -> str:
    """`X-Mailmoat-Trace: <gateway name>; id=<our id>`, added to every copy before the seal.

    Our own name and no MAC: a MAC needs a secret that both the authenticate and the rewrite
    stage hold, and the stack gives the authenticate role none (the ARC key stays with rewrite).
    The name is enough because a forged header can only hold the forger's own message (the
    check fails closed, it never lets a message through), and another install's header names
    that install, so it does not count here."""
    return f"{TRACE_HEADER}: {gateway_name(settings)}; id={_UNSAFE.sub('', message_id)[:80]}"


def trace_passes(msg: email.message.Message, settings: Settings) -> int:
    """How many of the message's trace headers are ours."""
    ours = gateway_name(settings)
    values = msg.get_all(TRACE_HEADER) or []
    count = 0
    for value in values[:_MAX_TRACE_FIELDS]:
        match = _FIRST_WORD.match(str(value)[:300])
        if match is not None and match.group(1).rstrip(".").lower() == ours:
            count += 1
    return count
