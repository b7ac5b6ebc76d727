"""The doctor's checks: each a small function that returns Results, never raises for what it
was asked to look at (a broken zone, a hostile banner, an unreadable file is a result)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailmoat import bypass
from mailmoat.config import TenantConfig
from mailmoat.doctor import HttpProbe, Result, Status, TlsProbe
from mailmoat.ports import DnsError, DnsTimeout, Resolver

CERT_WARN_DAYS = 14
SIGNATURE_WARN_DAYS = 3
DISK_WARN_FREE_PERCENT = 10.0
DISK_FAIL_FREE_PERCENT = 5.0


# --- DNS ------------------------------------------------------------------------------------------

def check_mx(resolver: Resolver, domain: str, gateway_hosts: list[str]) -> list[Result]:
    """Every MX of the tenant domain names this gateway (bypass.check_mx's rule: one MX
    elsewhere is a way round it)."""
    if not gateway_hosts:
        return [Result("mx", domain, Status.WARN, "the gateway's own host name is not known",
                       "name it with --gateway-host (the MX target the domains should give)")]
    try:
        gateway = bypass.gateway_identity(resolver, gateway_hosts, [])
        found = bypass.check_mx(resolver, domain, gateway)
    except (DnsError, ValueError) as exc:
        return [Result("mx", domain, Status.WARN, f"the MX lookup failed: {exc}", "run it again")]
    return [Result("mx", domain, Status(str(c.status)), c.detail, c.fix) for c in found]


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def check_arc_key(resolver: Resolver, selector: str, domain: str, public_b64: str | None,
                  *, key_problem: str = "") -> Result:
    """The TXT record at <selector>._domainkey.<domain> publishes the public half of the key
    the sealer signs with (receivers look it up to trust our ARC seal)."""
    name = f"{selector}._domainkey.{domain}"
    if public_b64 is None:
        return Result("arc-key", name, Status.FAIL,
                      f"no sealing key to compare: {key_problem or 'none configured'}",
                      "set MAILMOAT_ARC_KEY_FILE (AWS: the ARC key secret) to the key to seal with")
    wanted = f'"v=DKIM1; k=rsa; p={public_b64}"'
    publish = f"publish TXT {name} {wanted}"
    try:
        records = resolver.query(name, "TXT")
    except DnsTimeout:
        return Result("arc-key", name, Status.WARN, "the TXT lookup timed out", "run it again")
    except DnsError as exc:
        return Result("arc-key", name, Status.FAIL, f"no key published ({type(exc).__name__})",
                      publish)
    published = [_tags(r).get("p", "") for r in records if "p" in _tags(r)]
    if public_b64 in published:
        return Result("arc-key", name, Status.OK, "the published p= is the sealing key's")
    detail = ("the published p= is another key" if published
              else "a TXT record without p= is published")
    return Result("arc-key", name, Status.FAIL, detail, f"replace it: {publish}")


# --- antivirus, file types --------------------------------------------------------------------

def signature_date(version: str) -> datetime | None:
    """The database date of clamd's VERSION answer, "ClamAV 1.0.7/27479/Wed Dec  2 09:32:29 2026"."""
    parts = version.split("/")
    if len(parts) < 3:
        return None
    try:
        return datetime.strptime(" ".join(parts[2].split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return None


def check_clamd(address: str | None, version: Callable[[], str], *, required: bool,
                now: datetime, warn_days: float = SIGNATURE_WARN_DAYS) -> Result:
    """clamd answers VERSION, with signatures younger than `warn_days`. Without an answer the
    attachments go unscanned: FAIL where antivirus is required (production), else WARN."""
    bad = Status.FAIL if required else Status.WARN
    if not address:
        return Result("clamd", "-", bad, "no antivirus configured: attachments are not scanned",
                      "run clamd and set MAILMOAT_CLAMD_SOCKET (a unix socket path or host:port)")
    try:
        answer = version()
    except Exception as exc:  # whatever stopped clamd answering is the result
        return Result("clamd", address, bad, f"clamd does not answer: {exc}",
                      "start clamd (systemctl start clamav-daemon) or fix MAILMOAT_CLAMD_SOCKET")
    answer = " ".join(answer.split())[:200]
    date = signature_date(answer)
    if date is None:
        return Result("clamd", address, Status.WARN, f"{answer}: no signature date in the answer",
                      "run freshclam, then reload clamd")
    age = now - date
    if age > timedelta(days=warn_days):
        return Result("clamd", address, Status.WARN,
                      f"{answer}: signatures are {age.days} days old",
                      "check that freshclam runs (systemctl status clamav-freshclam)")
    return Result("clamd", address, Status.OK, f"{answer}: signatures {age.days} days old")


def check_libmagic(problem: Callable[[], str | None]) -> Result:
    why = problem()
    if why:
        return Result("libmagic", "python-magic", Status.FAIL, f"libmagic does not load: {why}",
                      "install the Debian package libmagic1 (scripts/system-deps.sh)")
    return Result("libmagic", "python-magic", Status.OK, "libmagic names file types")


# --- certificates -------------------------------------------------------------------------------

def judge_expiry(name: str, target: str, not_after: datetime, now: datetime,
                 warn_days: int = CERT_WARN_DAYS) -> Result:
    left = not_after - now
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if left <= timedelta(0):
        return Result(name, target, Status.FAIL, f"the certificate expired {when}",
                      "renew the certificate now")
    if left < timedelta(days=warn_days):
        return Result(name, target, Status.WARN,
                      f"the certificate expires {when}, in {left.total_seconds() / 86400:.0f} days",
                      "renew it (certbot renew, or the issuer's renewal) before it expires")
    return Result(name, target, Status.OK, f"the certificate is valid until {when}")


def check_certificate_file(path: Path, now: datetime, warn_days: int = CERT_WARN_DAYS) -> Result:
    """The listener's certificate (MAILMOAT_TLS_CERT): the first PEM certificate in the file."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Result("certificate", str(path), Status.FAIL, f"cannot read a certificate: {exc}",
                      "point MAILMOAT_TLS_CERT at a readable PEM certificate")
    return judge_expiry("certificate", str(path), cert.not_valid_after_utc, now, warn_days)


# --- delivery hosts, portal ------------------------------------------------------------------------

def check_delivery(probe: TlsProbe, tenant: TenantConfig, hosts: list[tuple[str, int]], *,
                   mode: str, now: datetime) -> list[Result]:
    """The tenant's mailbox host takes our connection and offers STARTTLS with a certificate
    that verifies for its name (where the gateway delivers by SMTP)."""
    target = f"tenant {tenant.name}"
    if mode in ("maildir", "ses"):
        how = "a local Maildir" if mode == "maildir" else "SES SendEmail (SES connects, not us)"
        return [Result("delivery", target, Status.SKIP, f"delivers to {how}")]
    if not hosts:
        return [Result("delivery", target, Status.FAIL, f"{mode} delivery without a host",
                       "set [tenant.delivery] host (and port) in the tenant configuration")]
    results: list[Result] = []
    for host, port in hosts:
        where = f"{host}:{port}"
        report = probe.probe(host, port)
        if not report.connected or (report.error and not report.starttls):
            results.append(Result("delivery", where, Status.FAIL,
                                  f"no SMTP session: {report.error or 'refused'}",
                                  f"check the host name and that {host} accepts port {port} "
                                  "from this gateway (firewall, connector)"))
        elif not report.starttls:
            results.append(Result("delivery", where, Status.FAIL if tenant.delivery.require_tls
                                  else Status.WARN, "STARTTLS is not offered: mail goes in clear",
                                  "enable STARTTLS on the mailbox host"))
        elif report.verify_error:
            results.append(Result("delivery", where, Status.FAIL,
                                  f"the certificate does not verify: {report.verify_error}",
                                  f"install a certificate for {host} from a public CA, whole chain"))
        elif not report.verified:
            results.append(Result("delivery", where, Status.FAIL, f"STARTTLS failed: {report.error}",
                                  f"check {host}'s TLS configuration (protocols, ciphers)"))
        else:
            results.append(Result("delivery", where, Status.OK,
                                  f"accepts us, STARTTLS {report.tls_version}, certificate verifies"))
            if report.not_after is not None:
                results.append(judge_expiry("certificate", where, report.not_after, now))
    return results


def check_portal(probe: HttpProbe, base_url: str | None, now: datetime) -> list[Result]:
    """The portal the notices link to answers its health URL."""
    if not base_url:
        return [Result("portal", "-", Status.FAIL, "no portal URL configured: notice links go nowhere",
                       "set MAILMOAT_PORTAL_BASE_URL to the portal's public URL")]
    url = base_url.rstrip("/") + "/healthz"
    report = probe.get(url)
    if report.status is None:
        return [Result("portal", url, Status.FAIL, f"not reachable: {report.error}",
                       "start the portal (mailmoat serve) or fix MAILMOAT_PORTAL_BASE_URL")]
    if not 200 <= report.status < 300:
        return [Result("portal", url, Status.FAIL, f"answers HTTP {report.status}",
                       "check the portal's log and the proxy in front of it")]
    results = [Result("portal", url, Status.OK, f"answers HTTP {report.status}")]
    if report.not_after is not None:
        results.append(judge_expiry("certificate", url, report.not_after, now))
    elif url.startswith("http://") and not url.startswith(("http://127.", "http://localhost")):
        results.append(Result("portal", url, Status.WARN, "served without TLS",
                              "put the portal behind HTTPS (a reverse proxy with a certificate)"))
    return results


# --- disk -------------------------------------------------------------------------------------------

def check_disk(path: Path, *, warn_free_percent: float = DISK_WARN_FREE_PERCENT,
               fail_free_percent: float = DISK_FAIL_FREE_PERCENT) -> Result:
    """Free space on the file system that holds the data directory (raw mail, quarantine,
    SQLite): a full disk refuses mail with 452."""
    existing = path.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as exc:
        return Result("disk", str(path), Status.FAIL, f"cannot stat the data directory: {exc}",
                      "create MAILMOAT_DATA_DIR or fix its permissions")
    free = 100.0 * usage.free / usage.total if usage.total else 0.0
    detail = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB ({free:.0f}%)"
    fix = "free space or grow the file system holding the data directory"
    if free < fail_free_percent:
        return Result("disk", str(path), Status.FAIL, detail, fix)
    if free < warn_free_percent:
        return Result("disk", str(path), Status.WARN, detail, fix)
    return Result("disk", str(path), Status.OK, detail)
