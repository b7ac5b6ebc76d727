"""`mailmoat directory sync|show`: the recipient directory from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mailmoat.directory.sync import PROVIDERS

# Exit codes a scheduler can tell apart.
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3


def _runtime(args: argparse.Namespace) -> Any:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.settings import Settings

    values: dict[str, Path] = {name: getattr(args, name) for name in ("data_dir", "config")
                               if getattr(args, name, None) is not None}
    return bootstrap(Settings(**values))  # type: ignore[arg-type]


def cmd_directory_sync(args: argparse.Namespace) -> int:
    from mailmoat.directory.sync import sync_tenants

    runtime = _runtime(args)
    tenants = runtime.services.config.tenants
    if args.tenant is not None:
        tenants = [t for t in tenants if t.name == args.tenant]
        if not tenants:
            print(f"mailmoat: no tenant {args.tenant!r} in the configuration", file=sys.stderr)
            return EXIT_FAILED
    outcomes = sync_tenants(runtime.services.directory, tenants, provider=args.provider,
                            confirm_deletes=args.confirm_deletes, dry_run=args.dry_run)
    if not outcomes:
        print("mailmoat: no tenant has a directory provider ([tenant.directory] provider = ...)",
              file=sys.stderr)
        return EXIT_FAILED
    status = EXIT_OK
    for outcome in outcomes:
        if outcome.error is not None:
            print(f"{outcome.tenant}: sync failed, nothing changed: {outcome.error}", file=sys.stderr)
            status = EXIT_FAILED
        elif outcome.result is not None:
            if outcome.result.refused and status == EXIT_OK:
                status = EXIT_REFUSED
            if not args.json:
                print(outcome.result.summary())
    if args.json:
        print(json.dumps([o.result.to_dict() if o.result else {"tenant": o.tenant, "error": o.error}
                          for o in outcomes], ensure_ascii=False, indent=2))
    return status


def cmd_directory_show(args: argparse.Namespace) -> int:
    """Which recipient an address (or alias) reaches: what the SMTP gate will decide."""
    runtime = _runtime(args)
    recipient = runtime.services.directory.recipient(args.address)
    if recipient is None:
        print(f"{args.address}: not registered (550 5.1.1 at RCPT)")
        return EXIT_FAILED
    print(json.dumps({"address": recipient.address, "tenant": recipient.tenant, "kind": recipient.kind,
                      "name": recipient.name, "aliases": recipient.aliases, "source": recipient.source,
                      "spam_filter": recipient.spam_filter}, ensure_ascii=False, indent=2))
    return EXIT_OK


def add_directory_commands(sub: Any) -> None:
    p = sub.add_parser("directory", help="recipient directory: sync from Microsoft 365 / Google Workspace")
    commands = p.add_subparsers(dest="directory_command", required=True)
    s = commands.add_parser(
        "sync", help="bring recipients in line with the tenant's directory provider",
        description="Exit status: 0 done, 1 a tenant failed (it changed nothing), "
                    "3 refused by the deletion guard (nothing changed; check, then --confirm-deletes).")
    s.add_argument("--tenant", default=None, help="only this tenant (default: every tenant with a provider)")
    s.add_argument("--provider", choices=PROVIDERS, default=None,
                   help="default: the tenant's [tenant.directory] provider")
    s.add_argument("--dry-run", action="store_true", help="fetch and compare, change nothing")
    s.add_argument("--confirm-deletes", action="store_true",
                   help="allow removing more than the tenant's max_delete_share of its recipients")
    s.add_argument("--json", action="store_true", help="one JSON list of results")
    s.set_defaults(func=cmd_directory_sync)
    w = commands.add_parser("show", help="the recipient an address or alias reaches")
    w.add_argument("address")
    w.set_defaults(func=cmd_directory_show)
