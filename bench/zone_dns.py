"""A loopback DNS server for the peer benchmark: every query answered at once with NXDOMAIN.

rspamd resolves names even with its network checks off (maps, URL and address lookups); without
a server that answers, each such lookup costs its whole timeout, and the benchmark measures the
timeout rather than rspamd. This server runs in its own process (so it never competes with the
bench for the GIL), binds a free UDP port on 127.0.0.1, prints `port <n>` on stdout once it
listens, and on SIGTERM writes how many queries it answered (and the first names) to --log.

    python bench/zone_dns.py [--port 0] [--log FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import FrameType, TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

MAX_DATAGRAM = 4096  # a query is a few hundred bytes; anything larger is not one we answer
NAMES_KEPT = 40  # distinct names kept for the log: enough to say what rspamd asked


def answer(wire: bytes) -> tuple[bytes, str] | None:
    """The NXDOMAIN reply to one query and the name asked ("name TYPE"), or None for what is
    not a query."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.set_rcode(dns.rcode.NXDOMAIN)
    asked = ""
    if query.question:
        q = query.question[0]
        asked = f"{q.name.to_text()} {dns.rdatatype.to_text(q.rdtype)}"
    return response.to_wire(), asked


def serve(sock: socket.socket, log: Path | None) -> None:
    queries = 0
    names: Counter[str] = Counter()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sock.settimeout(0.2)  # to notice SIGTERM between queries
    while not stopping:
        try:
            wire, peer = sock.recvfrom(MAX_DATAGRAM)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        answered = answer(wire)
        if answered is None:
            continue
        reply, asked = answered
        sock.sendto(reply, peer)
        queries += 1
        if len(names) < NAMES_KEPT or asked in names:
            names[asked] += 1
    if log is not None:
        log.write_text(json.dumps({"queries": queries, "names": dict(names.most_common())},
                                  indent=1) + "\n")


class ZoneDns:
    """The server as a child process, for a `with` block: `.port` once it listens."""

    def __init__(self, log: Path | None = None) -> None:
        self.log = log
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ZoneDns:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", "0"]
        if self.log is not None:
            cmd += ["--log", str(self.log)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "port <n>", written once bound
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"zone_dns did not start: {line!r}")
        self.port = int(line.split()[1])
        self._wait_answers(timeout)

    def _wait_answers(self, timeout: float) -> None:
        query = dns.message.make_query("ready.invalid.", "A").to_wire()
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            while time.monotonic() < deadline:
                sock.sendto(query, ("127.0.0.1", self.port))
                try:
                    sock.recvfrom(MAX_DATAGRAM)
                    return
                except TimeoutError:
                    continue
        self.stop()
        raise RuntimeError("zone_dns does not answer")

    def stats(self) -> dict[str, object]:
        """What the server logged at exit (after stop()); {} without a log."""
        if self.log is None or not self.log.exists():
            return {}
        return dict(json.loads(self.log.read_text()))

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()  # by its pid; it writes its log and exits
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="UDP port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--log", type=Path, help="write query counts here on exit")
    args = parser.parse_args()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", args.port))
        print(f"port {sock.getsockname()[1]}", flush=True)
        serve(sock, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
