"""OutboundSmtp: the gateway's own notices (DSNs) to a sender's domain, as an MTA sends a bounce."""

from __future__ import annotations

from mailmoat.adapters.smtp import SmtpMailer
from mailmoat.ports import DeliveryError, DnsError, Resolver


class OutboundSmtp:
    """Sends a notice the way an MTA sends a bounce: to the recipient domain's MX hosts in
    preference order (or the A record, RFC 5321 §5.1), or through a configured smarthost."""

    def __init__(self, resolver: Resolver, *, port: int = 25, relay: str | None = None,
                 local_hostname: str | None = None, timeout: float = 30.0) -> None:
        self.resolver = resolver
        self.port = port
        self.relay = relay
        self.local_hostname = local_hostname
        self.timeout = timeout

    def hosts(self, domain: str) -> list[tuple[str, int]]:
        """(address, port) to try in order. Names are resolved through the resolver port too, so
        a zone file (tests, `--dns-zone`) decides everything and nothing asks the system DNS."""
        if self.relay:
            host, _, port = self.relay.rpartition(":")
            return [(host or self.relay, int(port) if host and port.isdigit() else self.port)]
        try:
            answers = self.resolver.query(domain, "MX")
        except DnsError:
            answers = []
        ranked: list[tuple[int, str]] = []
        for answer in answers:
            pref, _, host = answer.partition(" ")
            ranked.append((int(pref) if pref.isdigit() else 65535, host.strip().rstrip(".")))
        if any(host == "" for _, host in ranked):  # "0 ." null MX (RFC 7505): takes no mail
            return []
        names = [host for _, host in sorted(ranked)] or [domain]  # no MX: the domain itself
        found: list[tuple[str, int]] = []
        for name in names[:5]:
            for rdtype in ("A", "AAAA"):
                try:
                    found.extend((address, self.port) for address in self.resolver.query(name, rdtype))
                except DnsError:
                    continue
        return found

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        domain = recipient.rpartition("@")[2]
        hosts = self.hosts(domain)
        if not hosts:
            raise DeliveryError(f"no address to deliver to for {domain} (null MX or no A record)",
                                permanent=True)
        last: DeliveryError | None = None
        for host, port in hosts[:5]:  # a few addresses, as MTAs do, so one notice cannot stall
            try:
                return SmtpMailer(host, port, local_hostname=self.local_hostname,
                                  timeout=self.timeout).deliver(message_id, recipient, mail_from, data)
            except DeliveryError as exc:
                if exc.permanent or exc.maybe_delivered:
                    raise
                last = exc
        assert last is not None
        raise last
