"""Debian's rspamd on loopback with bench/rspamd as its local config: install, start, wait, stop.

Shared by `make bench-peers` (bench/run.py) and the tests of the rspamd connector, so both run
the same daemon the same way: a private LOCAL_CONFDIR merged over the shipped /etc/rspamd
(never edited), RUNDIR/DBDIR/LOGDIR in a temporary directory, every network check off, and
rspamd's resolver pointed at a loopback server (bench/zone_dns.py) that answers NXDOMAIN at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

try:  # imported as bench.rspamd_server (tests) or as rspamd_server (bench/run.py)
    from bench.zone_dns import ZoneDns
except ImportError:
    from zone_dns import ZoneDns  # type: ignore[no-redef]

CONF_DIR = Path(__file__).resolve().parent / "rspamd"  # our LOCAL_CONFDIR
DEFAULT_PORTS = {"normal": 11333, "controller": 11334, "proxy": 11332}


# Turned back on by same_work: the authentication our pipeline always runs.
SAME_WORK_MODULES = ("spf", "dkim", "dmarc", "arc")


def _rsa_2048_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())


class RspamdUnavailable(RuntimeError):
    """rspamd is not installed and cannot be installed here (not root, no apt)."""


def installed() -> bool:
    return shutil.which("rspamd") is not None and shutil.which("rspamc") is not None


def install() -> None:
    """Debian's rspamd through apt when we are root; RspamdUnavailable otherwise."""
    if installed():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RspamdUnavailable("rspamd is not installed and this is not root; run\n"
                                "  sudo apt-get install -y --no-install-recommends rspamd")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "rspamd"],
                   check=True, env=env)
    # Debian starts the packaged service on the default ports; ours must own them.
    subprocess.run(["systemctl", "stop", "rspamd"], capture_output=True, check=False)


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def version() -> str:
    proc = subprocess.run(["rspamd", "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""


class RspamdServer:
    """One rspamd main process (and its workers) on 127.0.0.1, for a `with` block.

    `ports` maps worker → port ("normal", "controller", "proxy"); the defaults are rspamd's
    own, which `make bench-peers` uses. Tests pass free ports so nothing clashes.

    `resolver=True` (the default) starts bench/zone_dns.py on a free loopback port and points
    rspamd's `options { dns { nameserver } }` at it, so no lookup waits for its timeout;
    `resolver=False` keeps bench/rspamd/local.d/options.inc as it is (127.0.0.1:53, where
    nothing answers: each lookup costs its timeout). `dns_stats` holds what the resolver
    answered, after stop().

    `same_work=True` also runs what mailmoat's pipeline does on every message and the default
    config turns off: SPF, DKIM and DMARC checks (their DNS answered by the loopback resolver,
    as our zone file answers ours) and ARC checking and signing (an ARC set on every message
    for the recipient's domain, with an RSA-2048 key made for the run, as our seal does)."""

    def __init__(self, ports: dict[str, int] | None = None, *, wait_for_hyperscan: bool = False,
                 start_timeout: float = 180.0, resolver: bool = True,
                 same_work: bool = False) -> None:
        self.ports = {**DEFAULT_PORTS, **(ports or {})}
        self.resolver = resolver
        self.same_work = same_work
        self.dns_stats: dict[str, object] = {}
        self._dns: ZoneDns | None = None
        self.wait_for_hyperscan = wait_for_hyperscan
        self.start_timeout = start_timeout
        self.base: Path | None = None
        self.startup_s = 0.0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: object = None

    @property
    def url(self) -> str:
        """The normal worker: where /checkv2 is."""
        return f"http://127.0.0.1:{self.ports['normal']}"

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['controller']}"

    def __enter__(self) -> RspamdServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _write_config(self, conf: Path) -> None:
        shutil.copytree(CONF_DIR, conf)
        for worker, port in self.ports.items():
            (conf / "override.d" / f"worker-{worker}.inc").write_text(
                f'bind_socket = "127.0.0.1:{port}";\ncount = 1;\n', encoding="utf-8")
        if self.same_work:
            for module in SAME_WORK_MODULES:
                (conf / "override.d" / f"{module}.conf").unlink()  # back to Debian's defaults
            key = conf / "arc.key"
            key.write_bytes(_rsa_2048_pem())
            (conf / "override.d" / "arc.conf").write_text(
                "# Written by bench/rspamd_server.py (same_work): check ARC and sign every\n"
                "# message for its recipient's domain, as mailmoat's seal does.\n"
                "allow_envfrom_empty = true;\nallow_hdrfrom_mismatch = true;\n"
                "allow_hdrfrom_multiple = true;\nallow_username_mismatch = true;\n"
                "sign_authenticated = true;\nsign_inbound = true;\nsign_local = true;\n"
                'use_domain = "recipient";\nuse_esld = true;\nuse_redis = false;\n'
                f'try_fallback = true;\nselector = "arc";\npath = "{key}";\n'
                'symbol_sign = "ARC_SIGNED";\n', encoding="utf-8")
        if self._dns is not None:
            (conf / "local.d" / "options.inc").write_text(
                "# Written by bench/rspamd_server.py: bench/zone_dns.py answers NXDOMAIN at once.\n"
                f'dns {{\n  nameserver = ["127.0.0.1:{self._dns.port}"];\n  timeout = 0.1s;\n'
                "  retransmits = 0;\n}\ndisable_monitoring = true;\n", encoding="utf-8")

    def start(self) -> None:
        install()
        if answers(self.controller_url, 0.5):
            raise RuntimeError(f"something already answers on {self.controller_url}; stop it first")
        self._tmp = tempfile.TemporaryDirectory(prefix="mailmoat-rspamd-")
        base = self.base = Path(self._tmp.name)
        if self.resolver:
            self._dns = ZoneDns(base / "dns.json")
            self._dns.start()
        conf = base / "local"
        self._write_config(conf)
        for sub in ("run", "db", "log"):
            (base / sub).mkdir()
        cmd = ["rspamd", "-f", "-c", "/etc/rspamd/rspamd.conf", f"--var=LOCAL_CONFDIR={conf}",
               f"--var=RUNDIR={base / 'run'}", f"--var=DBDIR={base / 'db'}",
               f"--var=LOGDIR={base / 'log'}"]
        if os.geteuid() == 0:  # rspamd refuses to keep root; it drops to its own user
            cmd[2:2] = ["-u", "_rspamd", "-g", "_rspamd"]
            subprocess.run(["chown", "-R", "_rspamd:_rspamd", str(base)], check=True)
            base.chmod(0o755)
        stdout = open(base / "stdout.log", "wb")  # noqa: SIM115  (closed in stop)
        self._stdout = stdout
        self._proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT)
        t0 = time.perf_counter()
        try:
            while not answers(self.controller_url, 1.0):
                if self._proc.poll() is not None or time.perf_counter() - t0 > self.start_timeout:
                    raise RuntimeError(f"rspamd did not come up (exit {self._proc.poll()}):\n"
                                       f"{self.log_tail()}")
                time.sleep(0.3)
            # The controller can answer a moment before the normal worker listens.
            while not answers(self.url, 1.0):
                if self._proc.poll() is not None or time.perf_counter() - t0 > self.start_timeout:
                    raise RuntimeError(f"rspamd's normal worker did not come up:\n{self.log_tail()}")
                time.sleep(0.3)
            if self.wait_for_hyperscan:
                self._wait_for_hyperscan(base / "db")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0

    def log_tail(self, chars: int = 2000) -> str:
        if self.base is None:
            return ""
        tail = ""
        for name in ("stdout.log", "log/rspamd.log"):
            path = self.base / name
            if path.exists():
                tail += path.read_text(errors="replace")[-chars:]
        return tail

    def _wait_for_hyperscan(self, dbdir: Path, limit: float = 120.0) -> None:
        """rspamd answers before its hs_helper has compiled the regexps; until the workers load
        the hyperscan database they match with PCRE, several times slower. The databases are
        files in DBDIR: wait until they exist and have stopped changing."""
        deadline = time.perf_counter() + limit
        last: tuple[int, float] = (-1, 0.0)
        stable_since = time.perf_counter()
        while time.perf_counter() < deadline and self._proc is not None and self._proc.poll() is None:
            files = list(dbdir.glob("*.hs"))
            state = (len(files), max((f.stat().st_mtime for f in files), default=0.0))
            if state != last:
                last, stable_since = state, time.perf_counter()
            elif files and time.perf_counter() - stable_since > 3.0:
                time.sleep(2.0)  # the helper postpones its "loaded" notice by 1 s
                return
            time.sleep(0.5)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()  # by its pid: the main process stops its workers
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        stdout, self._stdout = self._stdout, None
        if stdout is not None:
            stdout.close()  # type: ignore[attr-defined]
        dns_server, self._dns = self._dns, None
        if dns_server is not None:
            dns_server.stop()
            self.dns_stats = dns_server.stats()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
