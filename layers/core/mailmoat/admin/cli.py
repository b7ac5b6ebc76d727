"""`mailmoat admin …`: create and list console accounts, read the audit trail (local runtime)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from mailmoat.admin.accounts import ALL_TENANTS, AccountError, create_account


def add_admin_commands(sub: Any) -> None:
    p = sub.add_parser("admin", help="admin console accounts and audit trail")
    admin = p.add_subparsers(dest="admin_command", required=True)
    pc = admin.add_parser("create", help="create an admin account (password from a prompt or stdin)")
    who = pc.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant this admin manages")
    who.add_argument("--all-tenants", action="store_true",
                     help="an operator account that manages every tenant")
    pc.add_argument("--email", required=True, help="the admin's address (the sign-in name)")
    pc.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of stdin instead of a prompt")
    pc.set_defaults(func=cmd_admin)
    pl = admin.add_parser("list", help="list admin accounts")
    pl.set_defaults(func=cmd_admin)
    pa = admin.add_parser("audit", help="show the audit trail, newest first")
    pa.add_argument("--tenant", default=None)
    pa.add_argument("--limit", type=int, default=50)
    pa.set_defaults(func=cmd_admin)


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat: ") != first:
        print("mailmoat: the passwords differ", file=sys.stderr)
        return None
    return first


def cmd_admin(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.cli import _settings

    runtime = bootstrap(_settings(args))
    store = runtime.services.admin.accounts
    if store is None:
        print("mailmoat: admin accounts are local; on AWS the console signs in through Cognito",
              file=sys.stderr)
        return 1
    audit = runtime.services.admin.audit
    if args.admin_command == "create":
        tenant = ALL_TENANTS if args.all_tenants else args.tenant
        password = _read_password(args)
        if password is None:
            return 1
        tenants = sorted({r.tenant for r in runtime.services.directory.recipients()}
                         | {t.name for t in runtime.services.config.tenants})
        try:
            account = create_account(store, email=args.email, tenant=tenant, password=password,
                                     now=runtime.services.clock.now(), known_tenants=tenants)
        except AccountError as exc:
            print(f"mailmoat: {exc}", file=sys.stderr)
            return 1
        scope = "OPERATOR of all tenants" if account.operator else f"tenant {account.tenant}"
        print(f"created admin {account.email} ({scope}); sign in at {runtime.settings.portal_url}/admin/")
        return 0
    if args.admin_command == "list":
        for a in store.accounts():
            scope = "ALL TENANTS (operator)" if a.operator else a.tenant
            state = "\tdisabled" if a.disabled else ""
            print(f"{a.email}\t{scope}\t{a.created_at:%Y-%m-%d}{state}")
        return 0
    for e in audit.entries(args.tenant, limit=args.limit):
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.tenant}  {e.admin}  {e.action}  {e.target}  "
              f"{e.client_ip or '-'}  {e.detail}")
    return 0
