"""`mailmoat bypass-check` against SMTP servers on loopback (aiosmtpd) that take or refuse mail at
RCPT, with the tenant's MX from a zone file: each open path is a FAIL line with its fix, the exit
code says whether a path is open, and DATA is never sent."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from mailmoat.bypass import (
    Gateway,
    ProbeResult,
    ProbeStep,
    Status,
    host_kind,
    judge_probe,
)
from tests.conftest import ROOT, free_port, stop_process, wait_for_smtp

GATEWAY_HOST = "mx.gateway.test"
GATEWAY_IP = "192.0.2.10"
EXO_HOST = "contoso-test.mail.protection.outlook.com"
GOOGLE_HOST = "aspmx.l.google.com"


@dataclass
class Recorder:
    """The aiosmtpd handler: answers RCPT with `rcpt_reply`, and keeps every command it saw."""

    rcpt_reply: str = "250 OK"
    port: int = 0
    commands: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.rcpt_reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return self.rcpt_reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 taken"


class RecordingSMTP(SMTP):
    """Writes down each command verb before aiosmtpd handles it, DATA included."""

    def _seen(self, verb: str, arg: str) -> None:
        self.event_handler.commands.append(f"{verb} {arg}".strip())

    async def smtp_EHLO(self, hostname: str) -> None:
        self._seen("EHLO", hostname)
        await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg: str) -> None:
        self._seen("MAIL", arg)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        self._seen("RCPT", arg)
        await super().smtp_RCPT(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self._seen("RSET", arg)
        await super().smtp_RSET(arg)

    async def smtp_DATA(self, arg: str) -> None:
        self._seen("DATA", arg)
        await super().smtp_DATA(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self._seen("QUIT", arg)
        await super().smtp_QUIT(arg)


class RecordingController(Controller):
    def factory(self) -> SMTP:
        return RecordingSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def mailbox_host() -> Iterator[Recorder]:
    """A mailbox host on loopback; the test sets `rcpt_reply` before the run."""
    handler = Recorder()
    controller = RecordingController(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    try:
        yield handler
    finally:
        controller.stop()


def write_setup(tmp_path: Path, *, host: str, port: int, mx: list[str], extra: dict[str, Any] | None = None,
                mode: str = "smtp") -> tuple[Path, Path]:
    config = tmp_path / "tenants.toml"
    config.write_text(f"""
[[tenant]]
name = "contoso.test"
domains = ["contoso.test"]

[tenant.delivery]
mode = "{mode}"
host = "{host}"
port = {port}

[[tenant.users]]
address = "alice@contoso.test"
""", encoding="utf-8")
    zone = {"contoso.test": {"MX": mx}, GATEWAY_HOST: {"A": [GATEWAY_IP]},
            "backup.elsewhere.test": {"A": ["198.51.100.20"]},
            EXO_HOST: {"A": ["127.0.0.1"]}, GOOGLE_HOST: {"A": ["127.0.0.1"]}, **(extra or {})}
    zone_file = tmp_path / "zone.json"
    zone_file.write_text(json.dumps(zone), encoding="utf-8")
    return config, zone_file


def bypass_check(tmp_path: Path, config: Path, zone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILMOAT_CONFIG": str(config), "MAILMOAT_DATA_DIR": str(tmp_path / "var"),
           "MAILMOAT_SMTP_HOSTNAME": GATEWAY_HOST}
    return subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "bypass-check",
                           "--tenant", "contoso.test", "--dns-zone", str(zone), "--timeout", "5", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def lines(result: subprocess.CompletedProcess[str], status: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(status)]


# --- the mailbox host ---------------------------------------------------------------------------------

def test_a_generic_host_taking_rcpt_from_outside_is_an_open_path(tmp_path: Path,
                                                                  mailbox_host: Recorder) -> None:
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=mailbox_host.port,
                               mx=[f"10 {GATEWAY_HOST}"])
    result = bypass_check(tmp_path, config, zone)
    assert result.returncode == 1, result.stdout + result.stderr
    (fail,) = lines(result, "FAIL")
    assert fail.startswith("FAIL delivery 127.0.0.1:") and "accepted RCPT" in fail
    assert f"Restrict 127.0.0.1 port 25 to the gateway's IPs ({GATEWAY_IP})" in result.stdout
    assert lines(result, "OK") == [f"OK   mx contoso.test: MX {GATEWAY_HOST} is the gateway"]


def test_the_probe_stops_at_rcpt_and_never_sends_data(tmp_path: Path, mailbox_host: Recorder) -> None:
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=mailbox_host.port,
                               mx=[f"10 {GATEWAY_HOST}"])
    bypass_check(tmp_path, config, zone)
    verbs = [c.split(" ", 1)[0] for c in mailbox_host.commands]
    assert "DATA" not in verbs
    assert verbs == ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "RSET", "QUIT"]
    mails = [c for c in mailbox_host.commands if c.startswith("MAIL")]
    assert mails == ["MAIL FROM:<bypass-check@example.net>", "MAIL FROM:<bypass-check@contoso.test>"]
    assert all(c == "RCPT TO:<alice@contoso.test>" for c in mailbox_host.commands if c.startswith("RCPT"))


def test_a_host_refusing_outside_senders_at_rcpt_is_closed(tmp_path: Path, mailbox_host: Recorder) -> None:
    mailbox_host.rcpt_reply = "550 5.7.1 Relay access denied"
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=mailbox_host.port,
                               mx=[f"10 {GATEWAY_HOST}"])
    result = bypass_check(tmp_path, config, zone)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not lines(result, "FAIL") and not lines(result, "WARN")
    assert any("refused an outside sender" in line for line in lines(result, "OK"))
    assert "no open path found" in result.stdout


def test_a_temporary_refusal_is_a_warning_not_a_pass(tmp_path: Path, mailbox_host: Recorder) -> None:
    mailbox_host.rcpt_reply = "451 4.7.1 Greylisted, try again"
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=mailbox_host.port,
                               mx=[f"10 {GATEWAY_HOST}"])
    result = bypass_check(tmp_path, config, zone)
    assert result.returncode == 0
    (warn,) = lines(result, "WARN")
    assert "answered neither yes nor no" in warn and "451" in warn


def test_exchange_online_direct_send_names_the_connector_and_reject_direct_send(
        tmp_path: Path, mailbox_host: Recorder) -> None:
    config, zone = write_setup(tmp_path, host=EXO_HOST, port=mailbox_host.port,
                               mx=[f"10 {GATEWAY_HOST}"])
    result = bypass_check(tmp_path, config, zone, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["open"] is True and report["tenant"] == "contoso.test"
    (delivery,) = [c for c in report["checks"] if c["check"] == "delivery"]
    assert (delivery["status"], delivery["target"]) == ("FAIL", EXO_HOST)
    assert "inbound connector" in delivery["fix"] and GATEWAY_IP in delivery["fix"]
    assert "Set-OrganizationConfig -RejectDirectSend $true" in delivery["fix"]


def test_google_workspace_names_the_inbound_gateway_with_reject(tmp_path: Path,
                                                                 mailbox_host: Recorder) -> None:
    config, zone = write_setup(tmp_path, host=GOOGLE_HOST, port=mailbox_host.port,
                               mx=[f"10 {GATEWAY_HOST}"])
    result = bypass_check(tmp_path, config, zone)
    assert result.returncode == 1
    assert "Inbound gateway" in result.stdout
    assert "Reject all mail not from gateway IPs" in result.stdout


# --- the MX ------------------------------------------------------------------------------------------

def test_an_mx_pointing_elsewhere_is_an_open_path(tmp_path: Path, mailbox_host: Recorder) -> None:
    mailbox_host.rcpt_reply = "550 5.7.1 not from the gateway"
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=mailbox_host.port,
                               mx=[f"10 {GATEWAY_HOST}", "20 backup.elsewhere.test"])
    result = bypass_check(tmp_path, config, zone, "--json")
    assert result.returncode == 1
    checks = json.loads(result.stdout)["checks"]
    (fail,) = [c for c in checks if c["status"] == "FAIL"]
    assert (fail["check"], fail["target"]) == ("mx", "contoso.test")
    assert "backup.elsewhere.test is not the gateway" in fail["detail"]
    assert fail["fix"] == (f"Point every MX of contoso.test at the gateway ({GATEWAY_HOST}) "
                           "and remove backup.elsewhere.test")


def test_an_mx_straight_at_exchange_online_also_says_how_to_lock_it(tmp_path: Path,
                                                                    mailbox_host: Recorder) -> None:
    mailbox_host.rcpt_reply = "550 no"
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=mailbox_host.port,
                               mx=[f"0 {EXO_HOST}"])
    result = bypass_check(tmp_path, config, zone)
    assert result.returncode == 1
    (fail,) = lines(result, "FAIL")
    assert f"MX {EXO_HOST} is not the gateway" in fail
    assert "-RejectDirectSend $true" in result.stdout


def test_an_mx_given_by_the_gateways_address_counts_as_the_gateway(tmp_path: Path,
                                                                  mailbox_host: Recorder) -> None:
    mailbox_host.rcpt_reply = "550 no"
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=mailbox_host.port,
                               mx=["10 in1.gateway-alias.test"],
                               extra={"in1.gateway-alias.test": {"A": [GATEWAY_IP]}})
    result = bypass_check(tmp_path, config, zone)
    assert result.returncode == 0, result.stdout
    assert "OK   mx contoso.test: MX in1.gateway-alias.test is the gateway" in result.stdout


# --- bounded, and unknown tenants -----------------------------------------------------------------

def test_a_host_that_never_answers_times_out_as_a_warning(tmp_path: Path) -> None:
    with socket.socket() as silent:  # listens, never speaks: the banner never comes
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        config, zone = write_setup(tmp_path, host="127.0.0.1", port=silent.getsockname()[1],
                                   mx=[f"10 {GATEWAY_HOST}"])
        result = bypass_check(tmp_path, config, zone, "--timeout", "1")
    assert result.returncode == 0
    (warn,) = lines(result, "WARN")
    assert "could not complete the probe" in warn


def test_an_unknown_tenant_is_a_usage_error(tmp_path: Path, mailbox_host: Recorder) -> None:
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=1, mx=[f"10 {GATEWAY_HOST}"])
    env = {**os.environ, "MAILMOAT_CONFIG": str(config), "MAILMOAT_DATA_DIR": str(tmp_path / "var")}
    result = subprocess.run([sys.executable, "-m", "mailmoat.local.cli", "bypass-check", "--tenant",
                             "nobody.test", "--dns-zone", str(zone)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no tenant 'nobody.test'" in result.stderr


# --- with the gateway running: `mailmoat serve` delivers, the bypass does not -------------------------

@dataclass
class GatewayOnly(Recorder):
    """A mailbox host locked to the gateway: RCPT from the gateway's address (127.0.0.1) is
    taken, from anywhere else refused, unless `open` (direct send left on)."""

    gateway_ip: str = "127.0.0.1"
    open: bool = False
    received: list[bytes] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.open or session.peer[0] == self.gateway_ip:
            envelope.rcpt_tos.append(address)
            return "250 OK"
        return "550 5.7.1 only the gateway may deliver here"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(bytes(envelope.content))
        return "250 taken"


def _serve(tmp_path: Path, config: Path, zone: Path, smtp_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MAILMOAT_CONFIG": str(config), "MAILMOAT_DATA_DIR": str(tmp_path / "var"),
           "MAILMOAT_DNS_ZONE": str(zone), "MAILMOAT_SMTP_PORT": str(smtp_port),
           "MAILMOAT_PORTAL_PORT": str(free_port()), "MAILMOAT_SMTP_HOSTNAME": GATEWAY_HOST}
    proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if wait_for_smtp(smtp_port, proc):
        return proc
    raise AssertionError("mailmoat serve did not start")


@pytest.mark.slow
def test_through_mailmoat_serve_the_gateway_delivers_and_the_bypass_is_refused(tmp_path: Path) -> None:
    host = GatewayOnly()
    controller = RecordingController(host, hostname="127.0.0.1", port=free_port())
    controller.start()
    smtp_port = free_port()
    # The gateway is 127.0.0.1 (its MX name's address); the check speaks from 127.0.0.2.
    config, zone = write_setup(tmp_path, host="127.0.0.1", port=controller.port,
                               mx=[f"10 {GATEWAY_HOST}"], extra={GATEWAY_HOST: {"A": ["127.0.0.1"]}})
    proc = _serve(tmp_path, config, zone, smtp_port)
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            smtp.sendmail("someone@sender.example", ["alice@contoso.test"],
                          b"From: someone@sender.example\r\nTo: alice@contoso.test\r\n"
                          b"Subject: through the gateway\r\n\r\nhello\r\n")
        deadline = time.monotonic() + 30
        while not host.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host.received and b"through the gateway" in host.received[0]

        closed = bypass_check(tmp_path, config, zone, "--source-address", "127.0.0.2")
        assert closed.returncode == 0, closed.stdout + closed.stderr
        assert "OK   mx contoso.test: MX mx.gateway.test is the gateway" in closed.stdout
        assert any("refused an outside sender" in line for line in lines(closed, "OK"))

        host.open = True  # direct send switched on again
        opened = bypass_check(tmp_path, config, zone, "--source-address", "127.0.0.2")
        assert opened.returncode == 1
        (fail,) = lines(opened, "FAIL")
        assert "accepted RCPT from an outside sender" in fail
        assert not lines(opened, "WARN")  # spoken from 127.0.0.2, not the gateway's address

        from_gateway = bypass_check(tmp_path, config, zone)  # from 127.0.0.1, the gateway itself
        assert any(line.startswith("WARN source") for line in from_gateway.stdout.splitlines())
    finally:
        stop_process(proc, timeout=20)
        controller.stop()
    assert len(host.received) == 1  # the probes never sent DATA
    assert [c.split(" ", 1)[0] for c in host.commands].count("DATA") == 1  # the gateway's delivery


# --- the pure parts -------------------------------------------------------------------------------

@pytest.mark.parametrize(("host", "kind"), [
    ("contoso-com.mail.protection.outlook.com", "exchange-online"),
    ("CONTOSO-COM.MAIL.PROTECTION.OUTLOOK.COM.", "exchange-online"),
    ("aspmx.l.google.com", "google"),
    ("alt1.aspmx.l.google.com", "google"),
    ("gmail-smtp-in.l.googlemail.com", "google"),
    ("mail.protection.outlook.com.evil.test", "generic"),
    ("mx.example.jp", "generic"),
])
def test_host_kinds(host: str, kind: str) -> None:
    assert host_kind(host) == kind


def test_an_acceptance_seen_from_the_gateways_own_address_is_flagged() -> None:
    from mailmoat.bypass import check_delivery
    from mailmoat.config import TenantConfig

    class Accepting:
        def probe(self, address: str, port: int, senders: Any, recipient: str) -> ProbeResult:
            return ProbeResult(address, port, connected=True, local_address=GATEWAY_IP,
                               steps=(ProbeStep("a@example.net", (250, "ok"), (250, "ok")),))

    class NoDns:
        def query(self, name: str, rdtype: str) -> list[str]:
            return ["127.0.0.1"] if rdtype == "A" else []

    tenant = TenantConfig.model_validate({"name": "t", "domains": ["t.test"],
                                          "delivery": {"mode": "smtp", "host": "mx.t.test"}})
    gateway = Gateway((GATEWAY_HOST,), frozenset({GATEWAY_IP}))
    checks = check_delivery(NoDns(), Accepting(), tenant, gateway, "a@t.test", ["a@example.net"])
    assert [c.status for c in checks] == [Status.FAIL, Status.WARN]
    assert checks[1].name == "source" and "--source-address" in checks[1].fix


def test_refused_at_mail_from_is_closed() -> None:
    result = ProbeResult("127.0.0.1", 25, connected=True,
                         steps=(ProbeStep("a@example.net", (550, "no"), None),))
    check = judge_probe("mx.example.jp", result, Gateway((GATEWAY_HOST,), frozenset({GATEWAY_IP})))
    assert check.status is Status.OK
