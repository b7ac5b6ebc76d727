"""The `mailmoat` command: serve, process (DESIGN §9 contract), send-test, users, directory, log,
redrive, admin, spam, keepmail."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from mailmoat.context import Envelope


def _settings(args: argparse.Namespace, **overrides: Any) -> Any:
    from mailmoat.settings import Settings

    values: dict[str, Any] = {}
    for name in ("data_dir", "config", "dns_zone", "geoip_db", "smtp_port", "portal_port"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    values.update(overrides)
    return Settings(**values)


# --- process ------------------------------------------------------------------------------

def _inputs(paths: Sequence[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") or part == "__pycache__"
                for part in p.relative_to(path).parts))
        else:
            yield path


def cmd_process(args: argparse.Namespace) -> int:
    from mailmoat.auth.received import envelope_from_message
    from mailmoat.bootstrap import bootstrap

    files = list(_inputs(args.messages))
    many = len(files) > 1 or any(Path(m).is_dir() for m in args.messages)
    out = Path(args.out) if args.out else None
    if out and many:
        out.mkdir(parents=True, exist_ok=True)
    status = 0
    with tempfile.TemporaryDirectory(prefix="mailmoat-process-") as tmp:
        # Offline analysis never touches the gateway's own data directory.
        settings = _settings(args, data_dir=Path(tmp))
        runtime = bootstrap(settings)
        for path in files:
            try:
                raw = path.read_bytes()
            except OSError as exc:
                print(json.dumps({"file": str(path), "error": str(exc)}), file=sys.stdout)
                status = 1
                continue
            # Flags win; what they leave out comes from the topmost Received and Return-Path.
            envelope = envelope_from_message(raw, Envelope(
                client_ip=args.client_ip, helo=args.helo, mail_from=args.mail_from,
                rcpt_to=[r.lower() for r in (args.rcpt or [])]))
            ctx = runtime.analyse(raw, envelope, stages=("authenticate", "scan", "isolate", "rewrite"))
            from mailmoat.context import StageTiming

            ctx.trace.append(StageTiming("deliver", 0.0, "skipped", "replaced by --out"))
            report = ctx.to_report()
            report["file"] = str(path)
            if out is not None and ctx.output is not None:
                target = out / (path.name if path.suffix == ".eml" else f"{path.name}.eml") if many else out
                try:
                    target.write_bytes(ctx.output)
                    report["out"] = str(target)
                except OSError as exc:
                    print(f"mailmoat: cannot write {target}: {exc}", file=sys.stderr)
                    status = 1
            if args.json:
                print(json.dumps(report, ensure_ascii=False), flush=True)
            else:
                _print_summary(report, sys.stdout)
    return status


def _print_summary(report: dict[str, Any], out: TextIO) -> None:
    auth = report["auth"]
    print(f"{report['file']}: {report['disposition']}  spf={auth['spf']} dkim={auth['dkim']} "
          f"dmarc={auth['dmarc']} warn={auth['warn']} defang={auth['defang']}", file=out)
    for att in report["attachments"]:
        print(f"  [{att['path']}] {att['filename']!s}  {att['verdict']}  {','.join(att['symbols'])}"
              f"  -> {att['action']}", file=out)
    for finding in report["findings"]:
        print(f"  ! {finding['symbol']} {finding['target']} {finding['detail']}", file=out)


# --- serve --------------------------------------------------------------------------------

class _PendingStop:
    """Where a SIGTERM during start-up is kept until the portal server can take it."""

    should_exit = False


def cmd_serve(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.portal_server import portal_server
    from mailmoat.local.server import Gateway, port_is_free
    from mailmoat.local.workers import configured_workers

    settings = _settings(args)
    try:
        workers = configured_workers()
    except ValueError as exc:
        print(f"mailmoat: {exc}", file=sys.stderr)
        return 1
    for host, port, what in ((settings.smtp_host, settings.smtp_port, "SMTP"),
                             (settings.portal_host, settings.portal_port, "PORTAL"),
                             (settings.metrics_host, settings.metrics_port, "METRICS")):
        if port and not port_is_free(host, port):
            print(f"mailmoat: {what.lower()} port {host}:{port} is in use (another `make run`?). "
                  f"Stop it or set MAILMOAT_{what}_PORT.", file=sys.stderr)
            return 1
    from mailmoat.local.shutdown import stop_on_sigterm

    # From here on a SIGTERM stops gracefully: a worker ready before the portal is built (the
    # preload makes it so) may be mid-delivery while this thread still imports the web app.
    pending = _PendingStop()
    stop_on_sigterm(pending)
    from mailmoat.bootstrap.local import with_private_antivirus

    settings = with_private_antivirus(settings)
    if settings.metrics_port:
        from mailmoat.adapters.prometheus import prepare_multiprocess_dir

        # Before anything imports prometheus_client, here or in a worker (multiprocess mode).
        metrics_dir = prepare_multiprocess_dir(settings.data_dir)
        settings = settings.model_copy(update={"metrics_dir": metrics_dir})
    runtime = bootstrap(settings)
    gateway = Gateway(runtime, workers=workers)
    try:
        gateway.start()
    except ValueError as exc:  # the listener's settings (MAILMOAT_TLS_*) do not fit together
        gateway.stop()
        print(f"mailmoat: {exc}", file=sys.stderr)
        return 1
    from mailmoat.local.schedule import Scheduler

    scheduler = Scheduler(runtime)  # directory sync hourly, spam digest daily (settings)
    scheduler.start()
    from mailmoat.adapters.prometheus import start_metrics_server

    metrics = start_metrics_server(settings, runtime.services.log)
    from mailmoat_web.app import create_app

    users = [r.address for r in runtime.services.directory.recipients()]
    data_dir = settings.data_dir.resolve()
    max_mb = settings.max_message_bytes // (1024 * 1024)
    print(f"""mailmoat is running
  SMTP    {settings.smtp_host}:{settings.smtp_port}  (max {max_mb} MB; unknown recipients get 550 5.1.1)
  tls     {_starttls_line(gateway)}
  portal  {settings.portal_url}
  data    {data_dir}  (Maildirs under {data_dir / 'maildir'})
  workers {workers}  (pipeline processes; MAILMOAT_WORKERS)
  tenants {', '.join(t.name for t in runtime.services.config.tenants) or '(none: set MAILMOAT_CONFIG)'}
  users   {', '.join(users[:10]) or '(none)'}{' …' if len(users) > 10 else ''}
  admin   {settings.portal_url}/admin/  (an account: .venv/bin/mailmoat admin create --tenant T --email ADDR)
  keep    {settings.portal_url}/k  (recipients: .venv/bin/mailmoat keepmail set-password ADDR)
  metrics {metrics.url if metrics else "off (MAILMOAT_METRICS_PORT=0)"}
Check the gateway (in another terminal; sends the test battery and reports):
  .venv/bin/mailmoat send-test --to {users[0] if users else 'alice@example.test'}
Then see it:  .venv/bin/mailmoat log        Stop: Ctrl-C""", flush=True)
    portal = portal_server(create_app(runtime), settings)
    stop_on_sigterm(portal)  # a SIGTERM ends run(); the finally stops the gateway gracefully
    if pending.should_exit:  # one came during start-up: run() returns at once
        portal.should_exit = True
    try:
        portal.run()
    finally:
        scheduler.stop()
        gateway.stop()
        if metrics is not None:
            metrics.stop()
    return 0


def _starttls_line(gateway: Any) -> str:
    tls = gateway.smtp.tls if gateway.smtp is not None else None
    if tls is None:
        return "off (no STARTTLS: MAILMOAT_TLS_CERT, MAILMOAT_TLS_KEY)"
    required = "required before MAIL FROM" if gateway.runtime.settings.tls_required else "offered"
    return f"STARTTLS {required}, certificate {tls.cert}"


# --- users --------------------------------------------------------------------------------

def cmd_users(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.users import export_csv, import_csv

    runtime = bootstrap(_settings(args))
    if args.users_command == "import":
        try:
            data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
        except OSError as exc:
            print(f"mailmoat: {exc}", file=sys.stderr)
            return 1
        result = import_csv(runtime.services.directory, data, tenant=args.tenant,
                            replace=args.replace, dry_run=args.dry_run)
        for error in result.errors:
            print(error, file=sys.stderr)
        print(result.summary())
        return 1 if result.errors else 0
    text = export_csv(runtime.services.directory, tenant=args.tenant)
    if sys.stdout.isatty():
        sys.stdout.write(text)  # someone reads it: escaped like every other output
        return 0
    # CSV data for a file or a pipe, byte for byte (cells that start a formula are neutralised
    # by export_csv; a CR inside a quoted cell is data here).
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode(args.encoding, "replace"))
    return 0


# --- log, redrive -------------------------------------------------------------------------

def _record_dict(record: Any) -> dict[str, Any]:
    report = record.report or {}
    return {
        "id": record.id,
        "received_at": record.received_at.isoformat(),
        "updated_at": record.updated_at.isoformat() if record.updated_at else None,
        "state": record.state,
        "disposition": record.disposition,
        "mail_from": record.mail_from,
        "rcpt_to": record.rcpt_to,
        "client_ip": record.client_ip,
        "tls": record.tls,  # the SMTP session's TLS version and cipher; null: in clear
        "message_id": record.message_id,
        "subject": record.subject,
        "tenant": record.tenant,
        "size": record.size,
        "attempts": record.attempts,
        "timings_ms": record.timings,
        "deliveries": report.get("deliveries", {}),
        "findings": report.get("findings", []),
        "error": record.error,
    }


def cmd_log(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap

    runtime = bootstrap(_settings(args))
    logbook = runtime.services.log
    if args.id:
        record = logbook.get(args.id)
        records = [record] if record else []
    else:
        records = logbook.recent(args.limit)
    rows = [_record_dict(r) for r in records]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no messages yet")
    for row in rows:
        timings = " ".join(f"{k}={v:.1f}" for k, v in row["timings_ms"].items())
        print(f"{row['received_at'][:19]}  {row['id']}  {row['state']:<11} "
              f"{row['mail_from'] or '<>'} -> {', '.join(row['rcpt_to'])}  "
              f"{(row['subject'] or '')[:40]!r}  [{timings}]")
        if row["error"]:
            print(f"    {row['error']}")
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    from mailmoat.bootstrap import bootstrap

    runtime = bootstrap(_settings(args))
    record = runtime.services.log.get(args.id)
    if record is None:
        print(f"mailmoat: no message {args.id}", file=sys.stderr)
        return 1
    from mailmoat.admin.operations import redrive

    # --resend: the admin checked; deliveries whose outcome was uncertain may be tried again.
    done = redrive(runtime, args.id, resend=args.resend)
    assert done is not None  # the row was just read
    print(f"{args.id}: {done.state}"
          f"{' ' + json.dumps(done.deliveries, ensure_ascii=False) if done.deliveries else ''}")
    return 0


# --- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailmoat", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory (default $MAILMOAT_DATA_DIR or ./var)")
    parser.add_argument("--config", type=Path, default=None,
                        help="tenant configuration TOML (default $MAILMOAT_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("process", help="analyse messages offline and print the JSON report")
    p.add_argument("messages", nargs="+", metavar="MESSAGE.eml")
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    p.add_argument("--dns-zone", type=Path, default=None)
    p.add_argument("--geoip-db", type=Path, default=None)
    p.add_argument("--client-ip", default=None)
    p.add_argument("--helo", default=None)
    p.add_argument("--mail-from", default=None)
    p.add_argument("--rcpt", action="append", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("serve", help="run the gateway: SMTP listener, pipeline, portal")
    p.add_argument("--smtp-port", type=int, default=None)
    p.add_argument("--portal-port", type=int, default=None)
    p.set_defaults(func=cmd_serve)

    from mailmoat.sendtest.cli import add_send_test_commands
    add_send_test_commands(sub)

    p = sub.add_parser("users", help="import or export recipients (CSV)")
    users = p.add_subparsers(dest="users_command", required=True)
    pi = users.add_parser("import",
                          help="import a CSV (UTF-8 or CP932); nothing is imported if any row is bad")
    pi.add_argument("file", help="CSV file, or - for stdin")
    pi.add_argument("--tenant", default=None, help="tenant for every row (default: by address domain)")
    pi.add_argument("--replace", action="store_true",
                    help="remove the tenant's recipients that are not in the file "
                         "(except those a directory sync manages)")
    pi.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    pi.set_defaults(func=cmd_users)
    pe = users.add_parser("export", help="export recipients as CSV")
    pe.add_argument("--tenant", default=None)
    pe.add_argument("--encoding", default="utf-8", choices=["utf-8", "utf-8-sig", "cp932"])
    pe.set_defaults(func=cmd_users)

    from mailmoat.directory.cli import add_directory_commands
    add_directory_commands(sub)

    p = sub.add_parser("log", help="message trace")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--id", default=None)
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("redrive", help="process a held or failed message again")
    p.add_argument("id")
    p.add_argument("--resend", action="store_true",
                   help="also retry deliveries whose outcome was uncertain (check the mailbox first)")
    p.set_defaults(func=cmd_redrive)

    from mailmoat.admin.cli import add_admin_commands
    add_admin_commands(sub)
    from mailmoat.spam.cli import add_spam_commands
    add_spam_commands(sub)
    from mailmoat.keepmail import add_keepmail_commands
    add_keepmail_commands(sub)
    from mailmoat.bypass import add_bypass_commands
    add_bypass_commands(sub)
    from mailmoat.doctor.cli import add_doctor_commands
    add_doctor_commands(sub)
    from mailmoat.retrohunt import add_retrohunt_commands
    add_retrohunt_commands(sub)
    from mailmoat.sandbox_verdicts import add_sandbox_commands
    add_sandbox_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mailmoat.terminal import escape_standard_streams

    escape_standard_streams()  # before logging: its handler keeps the stream it is given
    parser = build_parser()
    args = parser.parse_args(argv)
    from mailmoat.logsetup import setup_logging

    setup_logging(logging.INFO if args.verbose else logging.WARNING)  # JSON lines off a terminal
    if args.command != "process" and os.environ.get("MAILMOAT_MODE") == "test":
        logging.getLogger().setLevel(logging.WARNING)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
