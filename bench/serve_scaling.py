"""`mailmoat serve` throughput through SMTP on loopback, with 1 and 2 worker processes (or any
counts): the same messages, one SMTP connection per worker, timed from the first MAIL FROM to
the moment the last message is final in the message log; then every message accounted for.

    .venv/bin/python bench/serve_scaling.py [CORPUS_DIR_OR_FILES…] [--workers 1 2] [--repeat 1]

`measure_serve_scaling(paths)` is what bench/run.py calls."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = ROOT.parent / "shared" / "corpus" / "bench200"
RCPT = "alice@example.test"
SENDER = "bench@sender.example"
FINAL = ("delivered", "quarantined", "held", "failed", "dropped", "split")
QUEUED = re.compile(rb"queued as (\S+)")
EOL = re.compile(rb"\r?\n")
START_SECONDS = 120.0  # serve may start a private clamd first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key(count: int) -> str:
    return "serve_1_worker_msgs_per_s" if count == 1 else f"serve_{count}_workers_msgs_per_s"


class _Serve:
    """One `mailmoat serve` on free ports and a temp data directory."""

    def __init__(self, data_dir: Path, workers: int) -> None:
        self.data_dir = data_dir
        self.smtp_port = _free_port()
        zone = data_dir.parent / "zone.json"
        zone.write_text("{}")  # offline: every name NXDOMAIN, at once
        self.env = {**os.environ, "MAILMOAT_DATA_DIR": str(data_dir),
                    "MAILMOAT_CONFIG": str(ROOT / "config" / "demo.toml"),
                    "MAILMOAT_DNS_ZONE": str(zone), "MAILMOAT_SMTP_PORT": str(self.smtp_port),
                    "MAILMOAT_PORTAL_PORT": str(_free_port()), "MAILMOAT_WORKERS": str(workers)}
        self.log = data_dir.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Serve:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"],
                                         cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text(errors='replace')[-1500:]}")
            try:
                with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=2) as smtp:
                    smtp.noop()
                if b"workers" in self.log.read_bytes():  # the banner: the worker pool is up
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("serve did not start listening")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # by pid: the process this bench started
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wire_form(raw: bytes) -> bytes:
    """A file's lines as SMTP carries them (CRLF; smtplib leaves bytes as they are, and a
    LF-only file would be one over-long line to the listener)."""
    return EOL.sub(b"\r\n", raw)


def _send_share(port: int, raws: Sequence[bytes], accepted: list[str], errors: list[str]) -> None:
    """One connection, one transaction per message (RSET between them, as an MTA queue does)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("client.sender.example")
        for raw in raws:
            try:
                code, resp = smtp.mail(SENDER)
                if code == 250:
                    code, resp = smtp.rcpt(RCPT)
                if code == 250:
                    code, resp = smtp.data(raw)
                if code != 250:
                    errors.append(f"{code} {resp[:80]!r}")
                    smtp.rset()
                    continue
            except smtplib.SMTPDataError as exc:
                errors.append(f"{exc.smtp_code}")
                continue
            match = QUEUED.search(resp)
            if match:
                accepted.append(match.group(1).decode())


def _states(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return {r[0]: r[1] for r in conn.execute("SELECT id, state FROM messages")}
    finally:
        conn.close()


def run_once(raws: Sequence[bytes], workers: int, timeout: float = 600.0) -> dict[str, Any]:
    """One serve with `workers` processes: msgs/s, and what was lost or doubled."""
    with tempfile.TemporaryDirectory(prefix="mailmoat-serve-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        with _Serve(data_dir, workers) as serve:
            shares = [list(raws[i::workers]) for i in range(workers)]
            accepted: list[str] = []
            errors: list[str] = []
            threads = [threading.Thread(target=_send_share, args=(serve.smtp_port, share, accepted, errors))
                       for share in shares]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            db = data_dir / "mailmoat.sqlite3"
            deadline = time.monotonic() + timeout
            while True:
                states = _states(db)
                if all(states.get(i) in FINAL for i in accepted) or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
            lost = sum(1 for i in accepted if states.get(i) not in FINAL)
            lost += len(raws) - len(accepted)  # refused at SMTP: never accepted, so counted here
            local, _, domain = RCPT.partition("@")
            box = data_dir / "maildir" / domain / local
            copies: dict[str, int] = {}
            for sub in ("new", "cur"):
                for path in (box / sub).iterdir() if (box / sub).is_dir() else ():
                    gid = path.name.split(".", 1)[0]
                    copies[gid] = copies.get(gid, 0) + 1
            doubled = sum(c - 1 for c in copies.values() if c > 1)
            doubled += len(states) - len(set(states))  # (ids are unique keys; kept for clarity)
            doubled += sum(1 for gid in copies if gid not in set(accepted))
        return {"workers": workers, "messages": len(raws), "accepted": len(accepted),
                "seconds": round(elapsed, 3), "msgs_per_s": round(len(accepted) / elapsed, 1),
                "lost": lost, "doubled": doubled, "smtp_errors": errors[:5],
                "states": _count(states.values())}


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def measure_serve_scaling(corpus_paths: Sequence[Path], workers: Sequence[int] = (1, 2),
                          repeat: int = 1) -> dict[str, Any]:
    """bench/results.json keys: serve_<n>_worker(s)_msgs_per_s for each count, serve_scaling
    (the last count's rate over the first's), serve_messages, serve_lost, serve_doubled."""
    raws = [wire_form(Path(p).read_bytes()) for p in corpus_paths] * max(1, repeat)
    results: dict[str, Any] = {}
    runs = [run_once(raws, n) for n in workers]
    for run in runs:
        results[_key(run["workers"])] = run["msgs_per_s"]
    first, last = runs[0]["msgs_per_s"], runs[-1]["msgs_per_s"]
    results["serve_scaling"] = round(last / first, 2) if first else None
    results["serve_messages"] = len(raws)
    results["serve_lost"] = sum(r["lost"] for r in runs)
    results["serve_doubled"] = sum(r["doubled"] for r in runs)
    results["serve_detail"] = runs
    return results


def _corpus(args: Sequence[str]) -> list[Path]:
    paths = [Path(a) for a in args] or [SHARED_CORPUS]
    files: list[Path] = []
    for p in paths:
        files += sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    files = _corpus(args.paths)
    if not files:
        print("serve_scaling: no messages", file=sys.stderr)
        return 1
    print(json.dumps(measure_serve_scaling(files, args.workers, args.repeat), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
