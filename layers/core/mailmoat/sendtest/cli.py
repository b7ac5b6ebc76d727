"""`mailmoat send-test`: send the labelled battery, then report what the gateway did with each message."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mailmoat.sendtest.battery import DEFAULT_FROM, DEFAULT_SPF_FAIL_FROM, TEST_NAMES

if TYPE_CHECKING:
    from mailmoat.sendtest.runs import RunRecord

HELP = "send the pre-MX-switch test battery and/or report what the gateway did with it"
DEFAULT_SEND_WAIT = 60.0


def add_send_test_commands(sub: Any) -> None:
    """The `send-test` subcommand (`sub` is the CLI's subparsers object)."""
    p = sub.add_parser(
        "send-test", help=HELP,
        description="Send one labelled message per check (clean text, HTML links, clean xlsx, EICAR in a "
                    "zip, AES zip, .exe named .xlsx, VelvetSweatshop xlsx, SPF fail, ISO-2022-JP), then "
                    "compare what the message log says the gateway did with what it should do. "
                    "Exit 0 when every row matches, 1 on a mismatch, 2 when messages are still missing.")
    p.add_argument("--to", default="alice@example.test", help="recipient (default alice@example.test)")
    p.add_argument("--from", "--sender", dest="sender", default=DEFAULT_FROM,
                   help=f"sender for every test but spf-fail (default {DEFAULT_FROM})")
    p.add_argument("--spf-fail-from", default=DEFAULT_SPF_FAIL_FROM,
                   help="sender at a domain whose SPF fails for this host "
                        f"(default {DEFAULT_SPF_FAIL_FROM}, which publishes v=spf1 -all)")
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="gateway SMTP address (default $MAILMOAT_SMTP_HOST:$MAILMOAT_SMTP_PORT, "
                        "127.0.0.1:2525)")
    p.add_argument("--host", default=None, help="gateway host (alias; --server wins)")
    p.add_argument("--port", type=int, default=None, help="gateway port (alias; --server wins)")
    p.add_argument("--starttls", action="store_true",
                   help="require STARTTLS; the certificate is verified")
    p.add_argument("--insecure", action="store_true",
                   help="with --starttls: do not verify the certificate (self-signed test gateway)")
    p.add_argument("--only", default=None, metavar="NAME,...",
                   help=f"send only these tests: {','.join(TEST_NAMES)}")
    p.add_argument("--report", action="store_true",
                   help="send nothing; report on the latest run (or --run) from the message log")
    p.add_argument("--run", default=None, metavar="RUN_ID", help="with --report: which run")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="wait up to this long for the messages to be processed (default: "
                        f"{DEFAULT_SEND_WAIT:.0f} after sending, 0 with --report)")
    p.add_argument("--send-only", action="store_true",
                   help="send, record the run, and do not read the message log")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_send_test)


def _only(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(TEST_NAMES))
    if unknown:
        raise ValueError(f"unknown test(s): {', '.join(unknown)} (known: {', '.join(TEST_NAMES)})")
    return names


def cmd_send_test(args: argparse.Namespace) -> int:
    from mailmoat.local.cli import _settings

    settings = _settings(args)
    try:
        only = _only(args.only)
    except ValueError as exc:
        print(f"mailmoat send-test: {exc}", file=sys.stderr)
        return 1
    if args.run and not args.report:
        print("mailmoat send-test: --run goes with --report", file=sys.stderr)
        return 1
    if args.report:
        return _report(args, settings, run_id=args.run, wait=args.wait or 0.0)
    for option, address in (("--to", args.to), ("--from", args.sender),
                            ("--spf-fail-from", args.spf_fail_from)):
        if not _plain_address(address):
            print(f"mailmoat send-test: {option} {address!r} is not a plain address (local@domain)",
                  file=sys.stderr)
            return 1
    run = _send(args, settings, only)
    if run is None:
        return 1
    accepted = [m for m in run.messages if m.accepted]
    if args.send_only or not accepted:
        if args.json:
            print(json.dumps({"run": run.to_dict()}, ensure_ascii=False, indent=2))
        elif not accepted:
            print(f"nothing was accepted by {run.server}: is the gateway running there?", file=sys.stderr)
        return 0 if len(accepted) == len(run.messages) else 1
    return _report(args, settings, run_id=run.run_id,
                   wait=DEFAULT_SEND_WAIT if args.wait is None else args.wait)


def _plain_address(address: str) -> bool:
    # It goes into MAIL FROM / RCPT TO and a header: one local@domain, nothing else.
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and address.isascii() and all(
        c.isprintable() and not c.isspace() and c not in "<>,;\"()[]\\" for c in address)


def _send(args: argparse.Namespace, settings: Any, only: list[str] | None) -> RunRecord | None:
    from mailmoat.sendtest.battery import build_battery, new_run_id
    from mailmoat.sendtest.runs import RunRecord, save_run
    from mailmoat.sendtest.sender import SmtpTarget, parse_server, send_one

    host: str = args.host or settings.smtp_host
    port: int = args.port or settings.smtp_port
    if args.server:
        try:
            host, server_port = parse_server(args.server)
        except ValueError as exc:
            print(f"mailmoat send-test: --server: {exc}", file=sys.stderr)
            return None
        port = server_port or 25
    if args.insecure and not args.starttls:
        print("mailmoat send-test: --insecure only makes sense with --starttls", file=sys.stderr)
        return None
    # One HELO name for the run: smtplib would look it up again for every session.
    target = SmtpTarget(host, port, starttls=args.starttls, verify_certificate=not args.insecure,
                        local_hostname=socket.getfqdn())
    run_id = new_run_id()
    battery = build_battery(run_id=run_id, to=args.to, sender=args.sender,
                            spf_fail_sender=args.spf_fail_from, only=only)
    run = RunRecord(run_id=run_id, sent_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    server=target.label, starttls=args.starttls, to=args.to, mail_from=args.sender,
                    spf_fail_from=args.spf_fail_from)
    for message in battery:
        sent = send_one(target, message, args.to)
        run.messages.append(sent)
        if not args.json:
            print(f"{'sent   ' if sent.accepted else 'FAILED '} {message.name:<22} {sent.reply}",
                  flush=True)
    path = save_run(settings.data_dir, run)
    if not args.json:
        accepted = sum(m.accepted for m in run.messages)
        print(f"run {run_id}: {accepted}/{len(run.messages)} accepted by {target.label}; recorded in {path}")
        if not args.send_only:
            print("Waiting for the gateway to process them (message log) ...", flush=True)
    return run


def _report(args: argparse.Namespace, settings: Any, *, run_id: str | None, wait: float) -> int:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.sendtest.report import build_report, policy_notes, print_report
    from mailmoat.sendtest.runs import RunNotFound, load_run

    try:
        run = load_run(settings.data_dir, run_id)
    except RunNotFound as exc:
        print(f"mailmoat send-test: {exc}", file=sys.stderr)
        return 1
    runtime = bootstrap(settings)
    report = build_report(run, runtime.services.log, wait_seconds=wait)
    tenant = runtime.services.config.tenant_for_domain(run.to.rpartition("@")[2])
    if tenant is not None:
        report.policy_notes = policy_notes(tenant)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        columns = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        print_report(report, sys.stdout, columns=columns)
    return report.exit_code
