"""`mailmoat doctor`: gathers the deployment's facts for the local or the AWS runtime
(MAILMOAT_RUNTIME), runs the checks, prints one line each (escaped: values come from DNS and
the network) and exits 1 when any check fails."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailmoat.config import GatewayConfig, TenantConfig, load_config
from mailmoat.doctor import Result, Status, checks, failed, summary
from mailmoat.doctor.diagnose import Deployment, Thresholds, diagnose
from mailmoat.ports import Resolver
from mailmoat.settings import AwsSettings, Settings

DEFAULT_TIMEOUT = 10.0


def add_doctor_commands(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check the deployment: MX, ARC key, clamd, libmagic, "
                                      "delivery hosts, portal, certificates, disk")
    p.add_argument("--dns-zone", type=Path, default=None, help="answer DNS from this zone file")
    p.add_argument("--gateway-host", action="append", default=None,
                   help="a name the tenant MX records should give (default: MAILMOAT_SMTP_HOSTNAME; "
                        "AWS: inbound-smtp.<region>.amazonaws.com, or the stack's MxTarget output)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds per network step (at most 60)")
    p.add_argument("--signature-warn-days", type=float, default=checks.SIGNATURE_WARN_DAYS)
    p.add_argument("--cert-warn-days", type=int, default=checks.CERT_WARN_DAYS)
    p.add_argument("--disk-warn-percent", type=float, default=checks.DISK_WARN_FREE_PERCENT,
                   help="WARN below this share of free space")
    p.add_argument("--disk-fail-percent", type=float, default=checks.DISK_FAIL_FREE_PERCENT,
                   help="FAIL below this share of free space")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from mailmoat.adapters.clamd import ClamdAntivirus
    from mailmoat.adapters.http_probe import HttpClientProbe
    from mailmoat.adapters.smtp_probe import SmtplibTlsProbe
    from mailmoat.bootstrap.common import resolver
    from mailmoat.local.cli import _settings
    from mailmoat.scan.filetype import magic_problem

    settings = _settings(args)
    timeout = max(0.5, min(args.timeout, 60.0))
    dns = resolver(settings.model_copy(update={"dns_timeout": timeout}))
    gather = aws_deployment if settings.runtime == "aws" else local_deployment
    deployment = gather(settings, args.gateway_host, dns)
    clamd = ClamdAntivirus(deployment.clamd_address or "", timeout=timeout,
                           connect_timeout=min(timeout, 3.0))
    results = diagnose(
        deployment, resolver=dns,
        tls=SmtplibTlsProbe(helo=settings.smtp_hostname, timeout=timeout),
        http=HttpClientProbe(timeout=timeout), clamd_version=clamd.version,
        magic_problem=magic_problem, now=datetime.now(UTC),
        thresholds=Thresholds(signature_warn_days=args.signature_warn_days,
                              cert_warn_days=args.cert_warn_days,
                              disk_warn_free_percent=args.disk_warn_percent,
                              disk_fail_free_percent=args.disk_fail_percent))
    if args.json:
        print(json.dumps({"runtime": deployment.runtime, "failed": failed(results),
                          "checks": [r.to_dict() for r in results]}, ensure_ascii=False, indent=2))
    else:
        for result in results:
            print(result.line())
        print(f"mailmoat doctor ({deployment.runtime}): {summary(results)}")
    return 1 if failed(results) else 0


def _listener_cert(settings: Settings) -> Path | None:
    """The certificate the listener offers on STARTTLS (mailmoat.local.tls): the operator's, or
    the self-signed one `make run` generated under the data directory."""
    if settings.tls_cert is not None:
        return settings.tls_cert
    generated = settings.data_dir / "tls" / "cert.pem"
    return generated if settings.tls_self_signed and generated.exists() else None


def _arc_public(settings: Settings) -> tuple[str | None, str]:
    """The public half of the key the sealer would use, without generating one."""
    from mailmoat.rewrite.seal import load_key

    path = settings.arc_key_file
    if path is None:
        if not settings.generate_keys:
            return None, "no ARC key configured (MAILMOAT_ARC_KEY_FILE)"
        path = settings.data_dir / "arc" / "private.pem"
        if not path.exists():
            return None, (f"no key yet: the first sealed message generates {path}; "
                          "production needs a provisioned one")
    try:
        return load_key(path).public_b64, ""
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"


def _delivery_hosts(dns: Resolver) -> Callable[[TenantConfig], list[tuple[str, int]]]:
    from mailmoat import bypass

    return lambda tenant: bypass.delivery_hosts(dns, tenant)


def local_deployment(settings: Settings, gateway_hosts: list[str] | None, dns: Resolver) -> Deployment:
    from mailmoat.rewrite.rewriter import arc_domain

    problems: list[Result] = []
    try:
        config = load_config(settings.config)
    except (OSError, ValueError) as exc:
        config = GatewayConfig()
        problems.append(Result("config", str(settings.config), Status.FAIL,
                               f"the tenant configuration does not load: {exc}",
                               "fix the TOML file MAILMOAT_CONFIG names"))
    public, problem = _arc_public(settings)
    return Deployment(
        runtime="local", tenants=config.tenants,
        gateway_hosts=gateway_hosts or [settings.smtp_hostname],
        arc_selector=settings.arc_selector, arc_domain=arc_domain(settings),
        arc_public_b64=public, arc_problem=problem, portal_url=settings.portal_url,
        delivery_mode=lambda tenant: tenant.delivery.mode,
        delivery_hosts=_delivery_hosts(dns),
        clamd_address=settings.clamd_socket or _private_clamd(settings.data_dir),
        clamd_required=settings.mode == "production",
        tls_cert=_listener_cert(settings), data_dir=settings.data_dir, problems=problems)


def _private_clamd(data_dir: Path) -> str | None:
    """The socket of the clamd `mailmoat serve` starts itself when MAILMOAT_CLAMD_SOCKET is not
    set (mailmoat.adapters.private_clamd), while it runs."""
    socket = data_dir / "clamd" / "clamd.sock"
    return str(socket) if socket.exists() else None


def _region() -> str:
    from mailmoat.adapters.aws_region import current_region

    return current_region()


def _aws_tenants(aws: AwsSettings, problems: list[Result]) -> list[TenantConfig]:
    try:
        if aws.config is not None:
            config = load_config(aws.config)
            if config.tenants:
                return config.tenants
        from mailmoat.adapters.aws_dynamodb import DynamoDirectory
        from mailmoat.bootstrap.aws import tenant_config

        return tenant_config(DynamoDirectory(aws.directory_table)).tenants
    except Exception as exc:  # any AWS or parse error is what the line reports
        problems.append(Result("config", aws.directory_table or "-", Status.FAIL,
                               f"cannot read the tenants: {type(exc).__name__}: {exc}",
                               "check MAILMOAT_DIRECTORY_TABLE and this role's access to it"))
        return []


def aws_deployment(settings: Settings, gateway_hosts: list[str] | None, dns: Resolver) -> Deployment:
    """The stack's facts as its functions see them: tenants from the directory table, the ARC
    key from the secret the rewrite function reads, the portal's API URL."""
    from mailmoat.bootstrap.aws import aws_settings, delivery_mode
    from mailmoat.rewrite.rewriter import arc_domain

    aws = AwsSettings(**settings.model_dump(exclude={"runtime", "mode", "generate_keys"}))
    problems: list[Result] = []
    try:
        aws = aws_settings(aws)  # reads the ARC key secret into a private file
    except Exception as exc:  # a missing secret or no access is the ARC line
        problem = f"cannot read the ARC key secret: {type(exc).__name__}: {exc}"
        public: str | None = None
    else:
        public, problem = _arc_public(aws)
    tenants = _aws_tenants(aws, problems)
    if not gateway_hosts and aws.ingress == "receipt-rules":
        gateway_hosts = [f"inbound-smtp.{_region()}.amazonaws.com"]
    return Deployment(
        runtime="aws", tenants=tenants, gateway_hosts=gateway_hosts or [],
        arc_selector=aws.arc_selector, arc_domain=arc_domain(aws), arc_public_b64=public,
        arc_problem=problem, portal_url=aws.portal_base_url,
        delivery_mode=lambda tenant: delivery_mode(aws, tenant),
        delivery_hosts=_delivery_hosts(dns),
        not_applicable={
            "clamd": "clamd runs inside the scan function's image, started per cold start; "
                     "its signatures come from SignatureUpdateFunction (see its log)",
            "libmagic": "libmagic ships in the scan and portal images; production mode refuses "
                        "to start them without it",
            "certificate": "SES terminates inbound TLS with AWS's certificate",
            "disk": "no data directory: mail is kept in S3 and DynamoDB",
        },
        problems=problems)

