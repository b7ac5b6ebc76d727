"""`make bench`: times the pipeline on generated mail (and the shared corpus when present) and
writes bench/results.json. Keys other tools read: machine, import_ms, plain_median_ms,
plain_p99_ms, mixed_msgs_per_s, large_25mb_s, large_25mb_peak_rss_mb, cost_per_1000_usd, peer."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import corpus  # noqa: E402  (the generator beside this file)
import rspamd_server  # noqa: E402  (start/stop of the peer rspamd, shared with the tests)

STAGES = ("authenticate", "scan", "isolate", "rewrite")  # what `mailmoat process` runs
SHARED_CORPUS = ROOT.parent / "shared" / "corpus" / "bench200"
RESULTS = ROOT / "bench" / "results.json"
# The SMTP envelope every timed message gets; the peer gets the same (RspamdClient).
ENVELOPE: dict[str, Any] = {"client_ip": "203.0.113.5", "helo": "mail.sender.example",
                            "mail_from": "sender@sender.example", "rcpt_to": ["alice@example.test"]}

# AWS prices used for the cost estimate (us-east-1, on-demand, checked 2026-11):
PRICE = {
    "lambda_gb_s_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1_000_000,
    "sqs_request": 0.40 / 1_000_000,
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "dynamodb_write": 0.625 / 1_000_000,  # on-demand write request unit
    "dynamodb_read": 0.125 / 1_000_000,
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def make_runtime(data_dir: Path) -> Any:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.settings import Settings

    zone = data_dir / "zone.json"
    zone.write_text("{}")
    settings = Settings(data_dir=data_dir, config=ROOT / "config" / "demo.toml", dns_zone=zone)
    return bootstrap(settings)


def time_messages(runtime: Any, messages: list[bytes]) -> tuple[list[float], dict[str, list[float]]]:
    from mailmoat.context import Envelope

    totals: list[float] = []
    per_stage: dict[str, list[float]] = {}
    for raw in messages:
        envelope = Envelope(**{**ENVELOPE, "rcpt_to": list(ENVELOPE["rcpt_to"])})
        t0 = time.perf_counter()
        ctx = runtime.analyse(raw, envelope, stages=STAGES)
        totals.append((time.perf_counter() - t0) * 1000)
        for t in ctx.trace:
            per_stage.setdefault(t.stage, []).append(t.duration_ms)
    return totals, per_stage


def import_times() -> dict[str, float]:
    """Cumulative import time of each Lambda handler module (python -X importtime)."""
    result: dict[str, float] = {}
    targets = [(d.name, d) for d in sorted((ROOT / "functions").glob("*")) if (d / "app.py").exists()]
    web = ROOT / "web"
    if (web / "app.py").exists():
        targets.append(("portal", web))
    for name, folder in targets:
        code = f"import sys; sys.path.insert(0, {str(folder)!r}); import app"
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                              text=True, cwd=ROOT, env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"})
        match = re.search(r"import time:\s+\d+ \|\s+(\d+) \| app$", proc.stderr, re.M)
        if match:
            result[name] = round(int(match.group(1)) / 1000, 1)
    for stage in ("authenticate", "scan", "isolate", "rewrite", "deliver"):
        code = f"import mailmoat.stages.{stage}"
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                              text=True, cwd=ROOT)
        match = re.search(rf"import time:\s+\d+ \|\s+(\d+) \| mailmoat\.stages\.{stage}$",
                          proc.stderr, re.M)
        if match:
            result[f"stage:{stage}"] = round(int(match.group(1)) / 1000, 1)
    return result


def _status_mb(field: str) -> float:
    """A /proc/self/status figure (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child_large(path: Path) -> None:
    """Runs in a fresh process so its peak RSS is the large message's, not the whole bench's.
    The message is read from `path` (the parent generated it, so the generator's own peak is
    not in this process). Measured with the process's own high-water mark (VmHWM), reset just
    before the message is processed (clear_refs 5): ru_maxrss would not do, Linux carries the
    parent's RSS at fork into the child's ru_maxrss across exec, so a large bench process hid
    the child's figure under its own."""
    import random

    with tempfile.TemporaryDirectory() as tmp:
        runtime = make_runtime(Path(tmp))
        time_messages(runtime, [corpus.plain(random.Random(1))])  # warm imports
        raw = path.read_bytes()
        base_rss = _status_mb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # the high-water mark := now
            reset = True
        except OSError:
            reset = False
        totals, per_stage = time_messages(runtime, [raw])
        peak = _status_mb("VmHWM")
    print(json.dumps({"seconds": totals[0] / 1000, "peak_rss_mb": peak, "base_rss_mb": base_rss,
                      "increment_mb": peak - base_rss, "size_mb": len(raw) / 1024 / 1024,
                      "increment_x_size": (peak - base_rss) / (len(raw) / 1024 / 1024),
                      "high_water_reset": reset,
                      "stages_ms": {k: v[0] for k, v in per_stage.items()}}))


def large_message_runs() -> dict[str, Any]:
    """The 25 MB attachment twice, each in a fresh process: as `mailmoat process` reads it
    from a Unix file (LF line ends; the keys kept since the first bench) and as it arrives
    over SMTP (RFC 5321 §2.3.8) or from SES, with CRLF (`large_25mb_crlf_*`). With LF the seal
    must hash a CRLF copy of the body (DKIM's canonical form, RFC 6376 §3.4); with CRLF it
    hashes the message as it is. Issue 15's target: the peak RSS increment at most 2x the
    message size, the whole run at most 2 s."""
    import random

    results: dict[str, Any] = {}
    raw = corpus.large(random.Random(25))
    with tempfile.TemporaryDirectory(prefix="mailmoat-bench-large-") as tmp:
        for prefix, data in (("large_25mb", raw), ("large_25mb_crlf", raw.replace(b"\n", b"\r\n"))):
            path = Path(tmp) / "large.eml"
            path.write_bytes(data)
            child = subprocess.run([sys.executable, __file__, "--child-large", str(path)],
                                   capture_output=True, text=True, check=True)
            large = json.loads(child.stdout.strip().splitlines()[-1])
            results[f"{prefix}_s"] = round(large["seconds"], 3)
            results[f"{prefix}_peak_rss_mb"] = round(large["peak_rss_mb"], 1)
            results[f"{prefix}_increment_mb"] = round(large["increment_mb"], 1)
            results[f"{prefix}_detail"] = {k: (round(v, 2) if isinstance(v, float) else v)
                                           for k, v in large.items()}
    return results


def analysis_backend_ms(runtime: Any, rounds: int = 5) -> dict[str, float]:
    """What the analysis backends that run here add per file (issue 16: README's table): the
    scan engine on one generated sample each, content cache cleared every round, median ms.
    The samples are the detection tests' own generators (nothing binary in the tree)."""
    import hashlib

    from mailmoat.scan.engine import CACHE, engine_for
    from mailmoat.scan.lists import Lists

    sys.path.insert(0, str(ROOT))
    from tests.detection.xlmfiles import DOWNLOADER, SYLK, XLS_DOWNLOADER, xls, xlsm

    rng = random.Random(16)
    samples = {"xlm_xlsm": ("sheet.xlsm", xlsm(DOWNLOADER)),
               "xlm_xls": ("sheet.xls", xls(XLS_DOWNLOADER)),
               "xlm_sylk": ("sheet.slk", SYLK),
               "yara_1mb_text": ("notes.txt", rng.randbytes(1 << 20).hex().encode()[:1 << 20])}
    engine, lists = engine_for(runtime.services), Lists()
    out: dict[str, float] = {}
    for name, (filename, data) in samples.items():
        times = []
        for _ in range(rounds + 1):
            CACHE.clear()
            t0 = time.perf_counter()
            engine.analyse(data, filename, lists, sha256=hashlib.sha256(data).hexdigest())
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = round(statistics.median(times[1:]), 2)  # the first loads the analysers
    return out


def cost_per_1000(stage_ms: dict[str, float]) -> dict[str, Any]:
    """Compute + request cost of 1,000 messages on Lambda (arm64) from measured stage times.

    Assumptions, written out so the arithmetic can be checked: one invocation per stage per
    message (batch size 1, the worst case), billed duration = measured median + 20 ms of
    handler/SDK overhead rounded up to 1 ms; memory 512 MB for light stages, 2048 MB for scan
    (clamd); per stage 3 SQS requests (send, receive, delete); S3: 1 PUT (raw, by SES) + per
    stage 1 PUT (its state snapshot, work/ or out/) and 2 GETs (raw + the previous snapshot);
    DynamoDB: 2 writes + 1 read per stage (log, stage ledger).
    SES receiving/sending fees are per message and not compute; listed separately.
    """
    memory_gb = {"authenticate": 0.5, "scan": 2.0, "isolate": 0.5, "rewrite": 0.5, "deliver": 0.5}
    overhead_ms = 20.0
    gb_s = sum(memory_gb[s] * (stage_ms.get(s, 0.0) + overhead_ms) / 1000 for s in memory_gb)
    stages = len(memory_gb)
    per_message = (gb_s * PRICE["lambda_gb_s_arm64"] + stages * PRICE["lambda_request"]
                   + stages * 3 * PRICE["sqs_request"]
                   + (1 + stages) * PRICE["s3_put"] + 2 * stages * PRICE["s3_get"]
                   + stages * (2 * PRICE["dynamodb_write"] + PRICE["dynamodb_read"]))
    return {"usd": round(per_message * 1000, 4), "gb_s_per_message": round(gb_s, 5),
            "assumptions": cost_per_1000.__doc__.split("\n\n", 1)[1].strip()}


def portal_render_ms(runtime: Any, rounds: int = 200) -> dict[str, float]:
    """Server time of the portal page for a message with ten isolated files (issue 5 target)."""
    sys.path.insert(0, str(ROOT))
    from tests.e2e.test_portal import ten_file_portal

    client, token = ten_file_portal(runtime)
    client.get(f"/m/{token}")  # template cache warm
    timings = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        response = client.get(f"/m/{token}")
        timings.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"portal answered {response.status_code}")
    return {"median": round(statistics.median(timings), 3), "p99": round(percentile(timings, 99), 3)}


RSPAMD_NORMAL = "127.0.0.1:11333"  # rspamd_server.DEFAULT_PORTS: the normal worker, /checkv2
PEER_RUNS = 3  # runs in a row, each over the corpus PEER_PASSES times, for the ratio's spread
PEER_PASSES = 3
PEER_WARMUP = 20  # messages each side sees untimed first


class RspamdClient:
    """POSTs one message at a time to rspamd's /checkv2 over one HTTP connection, with the
    envelope our pipeline is given, and keeps the answers to read after the clock stops.

    Why not `rspamc -n 1`: this client holds the messages in memory as our pipeline does, is
    timed by the same clock in the same process, and sends the same envelope (IP, HELO, MAIL
    FROM, RCPT TO) that our pipeline authenticates. rspamd 3.4's worker answers
    `Connection: close`, so the connection is reopened per message (still one at a time);
    `connections` counts the opens."""

    def __init__(self, hostport: str = RSPAMD_NORMAL) -> None:
        import http.client

        host, port = hostport.rsplit(":", 1)
        client = self

        class Counted(http.client.HTTPConnection):
            def connect(self) -> None:
                client.connections += 1
                super().connect()

        self.connections = 0
        self._conn = Counted(host, int(port), timeout=60)
        self._headers = {"IP": ENVELOPE["client_ip"], "Helo": ENVELOPE["helo"],
                         "From": ENVELOPE["mail_from"], "Rcpt": ",".join(ENVELOPE["rcpt_to"]),
                         "Connection": "keep-alive"}

    def check(self, raws: list[bytes]) -> tuple[float, list[bytes]]:
        """Wall seconds over the messages, sequentially, and rspamd's answers."""
        answers: list[bytes] = []
        t0 = time.perf_counter()
        for raw in raws:
            self._conn.request("POST", "/checkv2", body=raw, headers=self._headers)
            response = self._conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"rspamd answered {response.status}: {body[:200]!r}")
            answers.append(body)
        return time.perf_counter() - t0, answers

    def close(self) -> None:
        self._conn.close()


def _server_ms(answers: list[bytes]) -> list[float]:
    """rspamd's own processing time per message (`time_real`), ms."""
    return [float(json.loads(a)["time_real"]) * 1000 for a in answers]


def _forget_scan_cache() -> str:
    """Our engine caches content results by SHA-256 for a worker's lifetime; a second pass over
    the same files would time cache hits, not scans (rspamd keeps no such cache). Each timed
    pass starts without it, so every file in it is scanned as if first seen."""
    try:
        from mailmoat.scan import engine
    except ImportError:
        return "not found (mailmoat.scan.engine moved): passes may hit a content cache"
    cache = getattr(engine, "CACHE", None)
    if cache is None or not hasattr(cache, "clear"):
        return "not found (mailmoat.scan.engine.CACHE): passes may hit a content cache"
    cache.clear()
    return "cleared before each pass"


def peer_runs(client: RspamdClient, raws: list[bytes]) -> dict[str, Any]:
    """PEER_RUNS runs in a row; each times ours and rspamd over the same messages, in the same
    order, PEER_PASSES times, alternating pass by pass (ours, rspamd, ours, …) so a change in
    the machine's load falls on both. Ours: `mailmoat process`'s in-process pipeline on a
    runtime of its own. Both are warmed up first by one untimed pass over all the messages:
    with only a few, our first timed pass also paid the lazy imports of analysers (oletools,
    pikepdf …) the first file of each kind needs, ~3 ms a message more, while rspamd had
    compiled everything at start."""
    runs: list[dict[str, float]] = []
    server_ms: list[float] = []
    cache_note = ""
    with tempfile.TemporaryDirectory(prefix="mailmoat-bench-peer-") as tmp:
        runtime = make_runtime(Path(tmp))
        time_messages(runtime, raws)
        client.check(raws)
        for _ in range(PEER_RUNS):
            ours_s = rspamd_s = 0.0
            for _ in range(PEER_PASSES):
                cache_note = _forget_scan_cache()
                t0 = time.perf_counter()
                time_messages(runtime, raws)
                ours_s += time.perf_counter() - t0
                seconds, answers = client.check(raws)
                rspamd_s += seconds
                server_ms += _server_ms(answers)
            n = len(raws) * PEER_PASSES
            runs.append({"ours": n / ours_s, "rspamd": n / rspamd_s, "ratio": rspamd_s / ours_s})
    median = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    return {"runs": runs, "median": median, "server_ms": server_ms, "cache": cache_note,
            "messages": len(raws) * PEER_PASSES, "arc_signed": _arc_signed(answers)}


def _arc_signed(answers: list[bytes]) -> int:
    """How many of rspamd's answers (one pass) carry an ARC set to add: proof that the
    same-work peer really signed."""
    signed = 0
    for answer in answers:
        milter = json.loads(answer).get("milter") or {}
        signed += "ARC-Seal" in (milter.get("add_headers") or {})
    return signed


def peer_same_work(raws: list[bytes]) -> dict[str, Any]:
    """The side-by-side runs again, on an rspamd that also does the authentication our
    pipeline always does and its default bench config leaves off: SPF, DKIM, DMARC and ARC
    checked, and an ARC set signed on every message (RspamdServer(same_work=True)). `ratio`
    stays the issue's setup; this is the like-for-like figure beside it."""
    print("bench: bench200 again, rspamd with SPF/DKIM/DMARC/ARC checks and ARC signing …",
          flush=True)
    with rspamd_server.RspamdServer(wait_for_hyperscan=True, same_work=True):
        client = RspamdClient(RSPAMD_NORMAL)
        timed = peer_runs(client, raws)
        client.close()
    median = timed["median"]
    ratios = [round(r["ratio"], 2) for r in timed["runs"]]
    return {
        "ratio": round(median["ratio"], 2), "ratio_runs": ratios,
        "ratio_min": min(ratios), "ratio_max": max(ratios),
        "rspamd_msgs_per_s": round(median["rspamd"], 1),
        "ours_msgs_per_s": round(median["ours"], 1),
        "rspamd_arc_signed": timed["arc_signed"], "messages_per_pass": len(raws),
        "how": (f"as `ratio` (same files, same order, alternating passes, {PEER_RUNS} runs of "
                f"{PEER_PASSES}), with rspamd's spf, dkim, dmarc and arc modules on (their DNS "
                "answered NXDOMAIN at once by bench/zone_dns.py, as our empty zone answers "
                "ours) and ARC signing every message for the recipient's domain with an "
                "RSA-2048 key (bench/rspamd_server.py same_work); rspamd_arc_signed counts the "
                "answers of the last pass that carried an ARC-Seal"),
    }


def _zone_of(asked: str) -> str:
    """"a1b2.phishtank.rspamd.com. TXT" -> "*.phishtank.rspamd.com TXT": what rspamd asks about,
    without the per-URL hash."""
    name, _, rdtype = asked.partition(" ")
    labels = name.rstrip(".").split(".")
    zone = ".".join(labels[-3:]) if len(labels) > 3 else ".".join(labels)
    return f"{'*.' if len(labels) > 3 else ''}{zone} {rdtype}"


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
        return proc.stdout.strip()

    dirty = git("status", "--porcelain", "--", "layers", "web", "functions", "config")
    return {"git_commit": git("rev-parse", "HEAD"), "pipeline_uncommitted_changes": bool(dirty)}


def peer_rspamd(files: list[Path], groups: dict[str, list[Path]] | None = None,
                ours: dict[str, float] | None = None,
                runs_on: tuple[str, list[Path]] | None = None) -> dict[str, Any] | None:
    """rspamd (Debian) on loopback with bench/rspamd as its local config and bench/zone_dns.py
    as its resolver. `groups` are the sets our main bench timed earlier in this run (`ours` holds
    those msg/s), each timed once on rspamd for its own ratio; `runs_on` names the set timed side
    by side PEER_RUNS times (peer_runs), whose median ratio is `ratio`."""
    if not files:
        return None
    try:
        rspamd_server.install()
    except rspamd_server.RspamdUnavailable as exc:
        raise SystemExit(f"bench-peers: {exc}\nthen make bench-peers") from exc
    ours = ours or {}
    name, run_files = runs_on or ("all", files)
    print("bench: starting rspamd on loopback (first start compiles hyperscan, ~20 s) …", flush=True)
    server = rspamd_server.RspamdServer(wait_for_hyperscan=True)
    with server:
        client = RspamdClient(RSPAMD_NORMAL)
        # Warm up the worker (maps, Lua caches, hyperscan loading) as our bench warms imports.
        client.check([p.read_bytes() for p in files[:PEER_WARMUP]])
        result: dict[str, Any] = {"peer": "rspamd", "version": rspamd_server.version(),
                                  "startup_s": round(server.startup_s, 1)}
        for group, subset in (groups or {}).items():
            if not subset:
                continue
            seconds, _ = client.check([p.read_bytes() for p in subset])
            rate = round(len(subset) / seconds, 1)
            result[f"{group}_rspamd_msgs_per_s"] = rate
            if ours.get(group):
                result[f"{group}_ratio"] = round(ours[group] / rate, 2)
        print(f"bench: {name} side by side with rspamd, {PEER_RUNS} runs of {PEER_PASSES} passes …",
              flush=True)
        timed = peer_runs(client, [p.read_bytes() for p in run_files])
        connections = client.connections
        client.close()
    stats = server.dns_stats
    same_work = peer_same_work([p.read_bytes() for p in run_files])
    median, server_ms = timed["median"], timed["server_ms"]
    ratios = [round(r["ratio"], 2) for r in timed["runs"]]
    result |= {
        "messages": timed["messages"],
        "rspamd_msgs_per_s": round(median["rspamd"], 1),
        "rspamd_median_ms": round(statistics.median(server_ms), 3),
        "rspamd_p99_ms": round(percentile(server_ms, 99), 3),
        "rspamd_server_msgs_per_s": round(len(server_ms) / (sum(server_ms) / 1000), 1),
        "ours_msgs_per_s": round(median["ours"], 1),
        "ratio": round(median["ratio"], 2),
        "ratio_runs": ratios, "ratio_min": min(ratios), "ratio_max": max(ratios),
        "rspamd_msgs_per_s_runs": [round(r["rspamd"], 1) for r in timed["runs"]],
        "ours_msgs_per_s_runs": [round(r["ours"], 1) for r in timed["runs"]],
        "runs_on": name,
        "rspamd_connections": connections,
        "ours_scan_cache": timed["cache"],
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "same_work": same_work,
    }
    if name == "bench200":
        result |= {"bench200_rspamd_msgs_per_s": result["rspamd_msgs_per_s"],
                   "bench200_ours_msgs_per_s": result["ours_msgs_per_s"],
                   "bench200_ratio": result["ratio"]}
    asked = sorted({_zone_of(n) for n in dict(stats.get("names") or {})} - {"ready.invalid A"})
    result["resolver"] = (
        f"bench/zone_dns.py on 127.0.0.1:<free port>, NXDOMAIN for every name at once; rspamd's "
        f"options.dns.nameserver points there (timeout 0.1 s, no retransmits). It answered "
        f"{stats.get('queries', '?')} queries this run, for {', '.join(asked) or 'no names'}; "
        f"no packet leaves loopback")
    result["resolver_queries"] = stats.get("queries")
    result |= _git_state()
    result["how"] = (
        f"ratio = the median of ratio_runs: {PEER_RUNS} runs in a row, each over {name} "
        f"{PEER_PASSES} times ({timed['messages']} messages), ours and rspamd alternating pass by "
        f"pass over the same files in the same order, in this run. rspamd: Debian 3.4 on "
        f"loopback, network checks off (bench/rspamd), resolver as in `resolver`, warmed up by "
        f"one untimed pass over {name}, one worker, one connection at a time: a Python HTTP "
        f"client POSTing to /checkv2 with the same envelope ours gets (rspamd 3.4 closes the "
        f"connection after each answer; rspamd_connections counts the opens). Ours: the "
        f"in-process pipeline `mailmoat process` runs (authenticate, scan, isolate, rewrite) on "
        f"a runtime of its own, warmed by the same untimed pass, the scan "
        f"content cache {timed['cache']}. One core each. rspamd_msgs_per_s, ours_msgs_per_s "
        f"(and bench200_*): the median run's. rspamd_median_ms, rspamd_p99_ms, "
        f"rspamd_server_msgs_per_s: rspamd's own time_real over every timed message, without "
        f"HTTP. mixed_*/corpus_*: rspamd once over the sets the main bench timed ours on "
        f"earlier in this run")
    result["from_previous_run"] = False
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child-large", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--peers", action="store_true", help="also time rspamd on the same corpus")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    args = parser.parse_args()
    if args.child_large:
        child_large(args.child_large)
        return 0
    import random

    n_plain = 60 if args.quick else 400
    results: dict[str, Any] = {"machine": machine()}
    print("bench: import times …", flush=True)
    results["import_ms"] = import_times()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = make_runtime(Path(tmp))
        rng = random.Random(3)
        plain = [corpus.plain(rng) for _ in range(20)]
        time_messages(runtime, plain)  # warm up: imports, caches
        print(f"bench: {n_plain} plain 20 KB messages …", flush=True)
        totals, per_stage = time_messages(runtime, [plain[i % 20] for i in range(n_plain)])
        results["plain_median_ms"] = round(statistics.median(totals), 3)
        results["plain_p99_ms"] = round(percentile(totals, 99), 3)
        results["plain_stage_median_ms"] = {k: round(statistics.median(v), 3)
                                            for k, v in per_stage.items()}
        mix = corpus.mixed(copies=3 if args.quick else 10)
        print(f"bench: mixed corpus of {len(mix)} messages …", flush=True)
        t0 = time.perf_counter()
        mix_totals, _ = time_messages(runtime, [raw for _, raw in mix])
        elapsed = time.perf_counter() - t0
        results["mixed_msgs_per_s"] = round(len(mix) / elapsed, 1)
        peer_timed: dict[str, tuple[int, float]] = {"mixed": (len(mix), elapsed)}
        results["mixed_median_ms"] = round(statistics.median(mix_totals), 3)
        results["mixed_p99_ms"] = round(percentile(mix_totals, 99), 3)
        by_kind: dict[str, list[float]] = {}
        for (kind, _), ms in zip(mix, mix_totals, strict=True):
            by_kind.setdefault(kind, []).append(ms)
        results["mixed_kind_median_ms"] = {k: round(statistics.median(v), 3)
                                           for k, v in sorted(by_kind.items())}
        shared = sorted(p for p in SHARED_CORPUS.glob("*") if p.is_file()) if SHARED_CORPUS.is_dir() else []
        if shared:
            print(f"bench: shared corpus ({len(shared)} messages) …", flush=True)
            raws = [p.read_bytes() for p in shared]
            t0 = time.perf_counter()
            time_messages(runtime, raws)
            shared_elapsed = time.perf_counter() - t0
            results["corpus_msgs_per_s"] = round(len(raws) / shared_elapsed, 1)
            peer_timed["corpus"] = (len(raws), shared_elapsed)
            results["corpus"] = str(SHARED_CORPUS.relative_to(ROOT.parent))
        results["auth_rewrite_median_ms"] = round(
            results["plain_stage_median_ms"].get("authenticate", 0.0)
            + results["plain_stage_median_ms"].get("rewrite", 0.0), 3)
        # Distinct files: the engine caches verdicts by SHA-256, and a cache hit is not a scan.
        docs = [corpus.docx_1mb(random.Random(seed)) for seed in range(6 if args.quick else 21)]
        time_messages(runtime, docs[:1])  # warm: analysers load on first use
        _, docx_stages = time_messages(runtime, docs[1:])
        results["docx_1mb_scan_ms"] = round(statistics.median(docx_stages["scan"]), 3)
        print("bench: portal page with 10 files …", flush=True)
        portal = portal_render_ms(runtime, 50 if args.quick else 200)
        results["portal_10_files_median_ms"] = portal["median"]
        results["portal_10_files_p99_ms"] = portal["p99"]
        print("bench: analysis backends per file …", flush=True)
        results["analysis_ms"] = analysis_backend_ms(runtime)
        if shared and not args.quick:
            # issue 15: `mailmoat serve` through SMTP on loopback with 1 and 2 worker processes.
            print("bench: mailmoat serve through SMTP, 1 and 2 workers …", flush=True)
            import serve_scaling

            results |= serve_scaling.measure_serve_scaling(shared)
    print("bench: 25 MB attachment in a fresh process, LF and CRLF …", flush=True)
    results |= large_message_runs()
    cost = cost_per_1000(results["plain_stage_median_ms"] | {"deliver": 5.0})
    results["cost_per_1000_usd"] = cost["usd"]
    results["cost_detail"] = cost
    if args.peers:
        results["peer"] = run_peers(mix, shared, peer_timed)
    else:
        # Keep the last side-by-side figures (marked as such) rather than erase them.
        previous = json.loads(RESULTS.read_text()).get("peer") if RESULTS.exists() else None
        if previous and not previous.get("from_previous_run"):
            previous = {**previous, "from_previous_run": True}
        results["peer"] = previous
    results["stages_timed"] = list(STAGES)
    if RESULTS.exists():
        results["before"] = headline_of(json.loads(RESULTS.read_text()))
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print_table(results)
    return 0


def run_peers(mix: list[tuple[str, bytes]], shared: list[Path],
              timed: dict[str, tuple[int, float]]) -> dict[str, Any] | None:
    """The generated mixed corpus (written out as files) plus the shared corpus: the same
    messages our pipeline was timed on above."""
    with tempfile.TemporaryDirectory(prefix="mailmoat-bench-mix-") as tmp:
        mix_files = []
        for i, (kind, raw) in enumerate(mix):
            path = Path(tmp) / f"{i:04d}-{kind}.eml"
            path.write_bytes(raw)
            mix_files.append(path)
        Path(tmp).chmod(0o755)  # rspamc reads them; rspamd's user never needs to
        ours = {name: n / s for name, (n, s) in timed.items()}
        runs_on = ("bench200", shared) if shared else ("mixed", mix_files)
        return peer_rspamd(shared + mix_files, {"mixed": mix_files, "corpus": shared}, ours,
                           runs_on)


# The figures issue 15 asks to see before and after; `before` holds them from the
# results.json this run replaces (its commit and date with them), so every run records both.
HEADLINE_KEYS = ("plain_median_ms", "plain_p99_ms", "mixed_msgs_per_s", "corpus_msgs_per_s",
                 "serve_1_worker_msgs_per_s", "serve_2_workers_msgs_per_s", "large_25mb_s",
                 "large_25mb_peak_rss_mb", "large_25mb_increment_mb", "large_25mb_crlf_s",
                 "large_25mb_crlf_increment_mb", "cost_per_1000_usd", "import_ms")
PEER_HEADLINE_KEYS = ("ratio", "ratio_runs", "ours_msgs_per_s", "rspamd_msgs_per_s", "git_commit")


def headline_of(previous: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an earlier results.json (its own `before` is not carried)."""
    headline: dict[str, Any] = {"date": previous.get("machine", {}).get("date")}
    headline |= {key: previous[key] for key in HEADLINE_KEYS if key in previous}
    detail = previous.get("large_25mb_detail")
    if isinstance(detail, dict) and {"peak_rss_mb", "base_rss_mb"} <= detail.keys():
        # Runs before increment_mb was recorded: the same difference, from their detail.
        headline.setdefault("large_25mb_increment_mb",
                            round(detail["peak_rss_mb"] - detail["base_rss_mb"], 1))
    peer = previous.get("peer") or {}
    headline["peer"] = {key: peer[key] for key in PEER_HEADLINE_KEYS if key in peer}
    if isinstance(peer.get("same_work"), dict):
        headline["peer"]["same_work_ratio"] = peer["same_work"].get("ratio")
    return headline


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("plain 20 KB median", f"{r['plain_median_ms']} ms", "≤ 10 ms"),
        ("plain 20 KB p99", f"{r['plain_p99_ms']} ms", "≤ 50 ms"),
        ("mixed corpus", f"{r['mixed_msgs_per_s']} msg/s", "≥ 100 msg/s"),
        ("25 MB attachment", f"{r['large_25mb_s']} s", "≤ 2 s"),
        ("25 MB peak RSS increment", f"{r['large_25mb_increment_mb']} MB",
         f"≤ {2 * r['large_25mb_detail']['size_mb']:.1f} MB (2 × size)"),
        ("25 MB, CRLF (as over SMTP)", f"{r['large_25mb_crlf_s']} s", "≤ 2 s"),
        ("25 MB, CRLF, RSS increment", f"{r['large_25mb_crlf_increment_mb']} MB",
         f"≤ {2 * r['large_25mb_crlf_detail']['size_mb']:.1f} MB (2 × size)"),
        ("cost / 1,000 msgs", f"${r['cost_per_1000_usd']}", "≤ $0.05"),
    ]
    rows.append(("auth + rewrite, plain (median)", f"{r['auth_rewrite_median_ms']} ms", "≤ 5 ms"))
    rows.append(("clean 1 MB docx, scan stage", f"{r['docx_1mb_scan_ms']} ms", "≤ 100 ms"))
    rows.append(("portal page, 10 files (median)", f"{r['portal_10_files_median_ms']} ms", "≤ 50 ms"))
    if "corpus_msgs_per_s" in r:
        rows.append(("shared corpus (bench200)", f"{r['corpus_msgs_per_s']} msg/s", ""))
    peer = r.get("peer")
    if peer and peer.get("rspamd_msgs_per_s"):
        rows.append((f"rspamd, {peer.get('runs_on', 'same')} {peer['messages']} msgs",
                     f"{peer['rspamd_msgs_per_s']} msg/s",
                     f"ours {peer.get('ours_msgs_per_s')} msg/s, ratio {peer.get('ratio')} "
                     f"(runs {peer.get('ratio_runs')}), rspamd p99 {peer.get('rspamd_p99_ms')} ms"))
        for name in ("mixed", "corpus"):
            if f"{name}_rspamd_msgs_per_s" in peer:
                rows.append((f"rspamd, {name} only", f"{peer[f'{name}_rspamd_msgs_per_s']} msg/s",
                             f"ratio ours/rspamd {peer.get(f'{name}_ratio')}"))
    for name, ms in sorted(r["import_ms"].items()):
        target = "≤ 800 ms" if "scan" in name else "≤ 500 ms" if name == "portal" else "≤ 300 ms"
        rows.append((f"import {name}", f"{ms} ms", target))
    width = max(len(n) for n, _, _ in rows)
    print(f"\n{'measure':<{width}}  {'result':>14}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>14}  {target}")
    print(f"\nmachine: {r['machine']['cpu']} ({r['machine']['cores']} cores), "
          f"Python {r['machine']['python']}; written to bench/results.json")


if __name__ == "__main__":
    sys.exit(main())
