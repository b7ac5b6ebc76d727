"""What `mailmoat serve` runs on a clock, as the AWS stack's scheduled functions do there:
the directory sync (hourly), the spam digest (daily) and the sandbox's later verdicts (every
minute when a sandbox is configured). One daemon thread; a job that fails
is logged and tried again at its next time, never taking the gateway down.

When each job last ran is kept in `<data dir>/schedule.json`, so a restart neither skips a
day's digest nor sends it twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmoat.runtime import Runtime

log = logging.getLogger("mailmoat.schedule")

TICK_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    # (now, when it last ran or None) → due now?
    due: Callable[[datetime, datetime | None], bool]
    run: Callable[[Runtime], str]  # returns a short summary for the log


def every(interval: timedelta) -> Callable[[datetime, datetime | None], bool]:
    return lambda now, last: last is None or now - last >= interval


def daily_at(hour: int) -> Callable[[datetime, datetime | None], bool]:
    """Due once a day from `hour` (local time): not before it, not twice the same day. A
    gateway started after the hour sends that day's run at once."""
    def due(now: datetime, last: datetime | None) -> bool:
        local = now.astimezone()
        if local.hour < hour:
            return False
        return last is None or last.astimezone().date() < local.date()
    return due


def sync_directories(runtime: Runtime) -> str:
    from mailmoat.directory.sync import sync_tenants

    outcomes = sync_tenants(runtime.services.directory, runtime.services.config.tenants)
    # The deletion guard still applies: a refused run changes nothing and says so in the log.
    return "; ".join(o.result.summary() if o.result else f"{o.tenant}: failed: {o.error}"
                     for o in outcomes) or "no tenant has a directory provider"


def send_spam_digests(runtime: Runtime) -> str:
    from mailmoat.spam.digest import send_digests

    result = send_digests(runtime.services)
    return f"{len(result.sent)} digests sent, {len(result.failed)} failed, {result.swept} expired removed"


def poll_sandbox(runtime: Runtime) -> str:
    from mailmoat.sandbox_verdicts import sandbox_verdicts

    return sandbox_verdicts(runtime.services).summary()


def check_retrohunt(runtime: Runtime) -> str:
    """Compares the signature state with the last retro-hunt's; runs one when it changed."""
    from mailmoat.retrohunt import scheduled_retrohunt

    report = scheduled_retrohunt(runtime.services, runtime.services.clock.now())
    return report.summary() if report is not None else "no signature state: not checked"


def jobs_for(runtime: Runtime) -> list[Job]:
    settings = runtime.settings
    jobs: list[Job] = []
    if settings.schedule_directory_sync_minutes > 0 and any(
            t.directory.provider for t in runtime.services.config.tenants):
        jobs.append(Job("directory-sync",
                        every(timedelta(minutes=settings.schedule_directory_sync_minutes)),
                        sync_directories))
    if settings.schedule_spam_digest_hour is not None:
        jobs.append(Job("spam-digest", daily_at(settings.schedule_spam_digest_hour), send_spam_digests))
    if settings.schedule_retrohunt_minutes > 0 and runtime.services.isolation is not None:
        jobs.append(Job("retrohunt", every(timedelta(minutes=settings.schedule_retrohunt_minutes)),
                        check_retrohunt))
    if settings.schedule_sandbox_poll_seconds > 0 and runtime.services.sandbox is not None:
        jobs.append(Job("sandbox-poll", every(timedelta(seconds=settings.schedule_sandbox_poll_seconds)),
                        poll_sandbox))
    return jobs


class Scheduler:
    def __init__(self, runtime: Runtime, jobs: list[Job] | None = None,
                 tick: float = TICK_SECONDS) -> None:
        self.runtime = runtime
        self.jobs = jobs if jobs is not None else jobs_for(runtime)
        self.tick = tick
        self.state_file: Path = runtime.settings.data_dir / "schedule.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.jobs:
            return
        self._thread = threading.Thread(target=self._loop, name="mailmoat-schedule", daemon=True)
        self._thread.start()
        log.info("scheduler started", extra={"action": ",".join(j.name for j in self.jobs)})

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_due(self.runtime.services.clock.now())
            self._stop.wait(self.tick)

    def run_due(self, now: datetime) -> list[str]:
        """Run every job that is due at `now`; the names of those that ran."""
        state = self._load()
        ran: list[str] = []
        for job in self.jobs:
            last = state.get(job.name)
            if not job.due(now, last):
                continue
            try:
                summary = job.run(self.runtime)
            except Exception:  # the next tick after its interval tries again
                log.exception("scheduled job failed", extra={"action": job.name})
            else:
                log.info("scheduled job ran", extra={"action": job.name, "detail": summary[:500]})
            # Recorded either way: a job that keeps failing runs at its interval, not every tick.
            state[job.name] = now
            self._save(state)
            ran.append(job.name)
        return ran

    def _load(self) -> dict[str, datetime]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            return {k: datetime.fromisoformat(v) for k, v in data.items() if isinstance(v, str)}
        except (FileNotFoundError, ValueError, AttributeError):
            return {}

    def _save(self, state: dict[str, datetime]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: v.isoformat() for k, v in state.items()}), encoding="utf-8")
        os.replace(tmp, self.state_file)
