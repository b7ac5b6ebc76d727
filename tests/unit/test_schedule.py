"""The local scheduler: due times, its state across restarts, failures that do not stop it."""

from __future__ import annotations

from datetime import datetime, timedelta

from mailmoat.bootstrap import bootstrap
from mailmoat.config import DirectoryConfig, M365DirectoryConfig
from mailmoat.local.schedule import Job, Scheduler, daily_at, every, jobs_for
from tests.conftest import make_settings

LOCAL = datetime.now().astimezone().tzinfo


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=LOCAL)


def test_daily_at_runs_once_a_day_from_its_hour() -> None:
    due = daily_at(8)
    assert not due(at(27, 7, 59), None)
    assert due(at(27, 8, 0), None)
    assert not due(at(27, 23, 0), at(27, 8, 0))  # once that day
    assert due(at(28, 8, 1), at(27, 8, 0))
    assert due(at(28, 15, 0), at(26, 8, 0))  # started late: that day's run at once


def test_every_waits_its_interval() -> None:
    due = every(timedelta(minutes=60))
    assert due(at(27, 9), None)
    assert not due(at(27, 9, 59), at(27, 9))
    assert due(at(27, 10), at(27, 9))


def test_the_digest_runs_once_a_day_across_restarts(tmp_path) -> None:
    runtime = bootstrap(make_settings(tmp_path, schedule_retrohunt_minutes=0))
    (job,) = jobs_for(runtime)  # the demo tenant has no directory provider
    assert job.name == "spam-digest"
    assert Scheduler(runtime).run_due(at(27, 9)) == ["spam-digest"]  # the real send_digests
    assert (runtime.settings.data_dir / "schedule.json").exists()
    assert Scheduler(runtime).run_due(at(27, 18)) == []  # a restart the same day: not again
    assert Scheduler(runtime).run_due(at(28, 8)) == ["spam-digest"]


def test_a_failing_job_is_logged_and_waits_for_its_next_time(tmp_path, caplog) -> None:
    runtime = bootstrap(make_settings(tmp_path))
    calls: list[str] = []

    def broken(_runtime) -> str:
        calls.append("x")
        raise RuntimeError("provider down")

    scheduler = Scheduler(runtime, jobs=[Job("directory-sync", every(timedelta(hours=1)), broken)])
    assert scheduler.run_due(at(27, 9)) == ["directory-sync"]
    assert "scheduled job failed" in caplog.text
    assert scheduler.run_due(at(27, 9, 30)) == []  # not every tick
    scheduler.run_due(at(27, 10))
    assert calls == ["x", "x"]


def test_directory_sync_is_scheduled_only_for_tenants_with_a_provider(tmp_path) -> None:
    runtime = bootstrap(make_settings(tmp_path, schedule_spam_digest_hour=None,
                                      schedule_retrohunt_minutes=0))
    assert jobs_for(runtime) == []
    runtime.services.config.tenants[0].directory = DirectoryConfig(
        provider="m365", m365=M365DirectoryConfig(tenant_id="t", client_id="c"))
    assert [j.name for j in jobs_for(runtime)] == ["directory-sync"]
    runtime.settings = runtime.settings.model_copy(update={"schedule_directory_sync_minutes": 0})
    assert jobs_for(runtime) == []


def test_the_retrohunt_check_is_scheduled_with_an_isolation_store(tmp_path) -> None:
    runtime = bootstrap(make_settings(tmp_path, schedule_spam_digest_hour=None))
    assert [j.name for j in jobs_for(runtime)] == ["retrohunt"]
    runtime.settings = runtime.settings.model_copy(update={"schedule_retrohunt_minutes": 0})
    assert jobs_for(runtime) == []


def test_the_sandbox_poll_is_scheduled_only_with_a_sandbox(tmp_path) -> None:
    runtime = bootstrap(make_settings(tmp_path, schedule_spam_digest_hour=None,
                                      schedule_retrohunt_minutes=0))
    assert jobs_for(runtime) == []

    class Box:
        def submit(self, data: bytes, filename: str | None) -> str:
            return "t"

        def poll(self, ticket: str) -> None:
            return None

    runtime.services.sandbox = Box()
    (job,) = jobs_for(runtime)
    assert job.name == "sandbox-poll"
    assert job.run(runtime) == "0 clean, 0 danger, 0 timed out, 0 waiting, 0 errors, 0 mailed"
    runtime.settings = runtime.settings.model_copy(update={"schedule_sandbox_poll_seconds": 0})
    assert jobs_for(runtime) == []
