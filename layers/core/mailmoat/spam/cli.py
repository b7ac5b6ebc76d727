"""`mailmoat spam digest | list | release | allow`: the spam quarantine from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_spam_commands(sub: Any) -> None:
    p = sub.add_parser("spam", help="spam quarantine: send digests, list, release, allow senders")
    spam = p.add_subparsers(dest="spam_command", required=True)

    pd = spam.add_parser("digest", help="mail each recipient the copies held since their last digest")
    pd.add_argument("--tenant", default=None, help="only this tenant's recipients")
    pd.set_defaults(func=cmd_spam)

    pl = spam.add_parser("list", help="held copies (not released, not expired)")
    pl.add_argument("--tenant", default=None)
    pl.add_argument("--recipient", default=None)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_spam)

    pr = spam.add_parser("release", help="deliver a held copy as it was stored")
    pr.add_argument("id", help="the message id (mailmoat log / spam list)")
    pr.add_argument("--recipient", action="append", default=None,
                    help="only this recipient's copy (repeatable; default: every held copy)")
    pr.set_defaults(func=cmd_spam)

    pa = spam.add_parser("allow", help="add a sender to a recipient's allowed senders")
    pa.add_argument("recipient")
    pa.add_argument("sender", help="an address, a domain or @domain")
    pa.set_defaults(func=cmd_spam)


def cmd_spam(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.cli import _settings
    from mailmoat.spam import digest, quarantine

    runtime = bootstrap(_settings(args))
    services = runtime.services
    store = services.spam
    if store is None:
        print("mailmoat: no spam quarantine store in this runtime", file=sys.stderr)
        return 1
    now = services.clock.now()
    command = args.spam_command
    if command == "digest":
        run = digest.send_digests(services, now, tenant=args.tenant)
        for rcpt, count in sorted(run.sent.items()):
            print(f"digest sent to {rcpt}: {count} message(s)")
        for rcpt, why in sorted(run.failed.items()):
            print(f"digest NOT sent to {rcpt}: {why}", file=sys.stderr)
        print(f"{len(run.sent)} digest(s) sent, {len(run.failed)} failed, "
              f"{run.swept} expired cop{'y' if run.swept == 1 else 'ies'} removed")
        return 1 if run.failed else 0
    if command == "list":
        held = store.held(tenant=args.tenant, recipient=args.recipient, now=now)
        if args.json:
            print(json.dumps([_held_dict(h) for h in held], ensure_ascii=False, indent=2))
            return 0
        if not held:
            print("no held messages")
        for h in held:
            score = "-" if h.score is None else f"{h.score:.1f}"
            print(f"{h.held_at:%Y-%m-%d %H:%M}  {h.message_id}  {h.recipient}  score={score}  "
                  f"{h.from_header or h.mail_from or '<>'}  {(h.subject or '')[:50]!r}")
        return 0
    if command == "release":
        targets = [r.lower() for r in args.recipient] if args.recipient else \
            [h.recipient for h in store.held(now=now) if h.message_id == args.id]
        if not targets:
            print(f"mailmoat: no held copy of {args.id}", file=sys.stderr)
            return 1
        status = 0
        for rcpt in targets:
            result = quarantine.release(services, args.id, rcpt, by="admin", now=now)
            print(f"{args.id} {rcpt}: {result.status} {result.outcome}".rstrip())
            if result.status not in ("released", "already"):
                status = 1
        return status
    store.allow_sender(args.recipient, args.sender, now)
    print(f"{args.recipient}: {args.sender} allowed")
    return 0


def _held_dict(h: Any) -> dict[str, Any]:
    return {"id": h.message_id, "recipient": h.recipient, "tenant": h.tenant,
            "held_at": h.held_at.isoformat(), "expires_at": h.expires_at.isoformat(),
            "from": h.from_header, "mail_from": h.mail_from, "subject": h.subject, "date": h.date,
            "score": h.score, "sources": h.sources, "digested": h.digested_at is not None}
