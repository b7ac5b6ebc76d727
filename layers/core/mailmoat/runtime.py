"""The runtime one process has: its settings, the services its composition root built
(mailmoat.bootstrap), and the runner. The same class serves `mailmoat serve`, the CLI and the
Lambda handlers; only what the root put into it differs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mailmoat.context import Envelope, MessageContext
from mailmoat.ingress import split_by_tenant
from mailmoat.pipeline import STAGE_NAMES, Services, run_pipeline
from mailmoat.ports import BlobStore, Recipient, StageInbox, StageRef
from mailmoat.runner import RAW_PREFIX, Runner, due_unfinished, new_message_id
from mailmoat.settings import Settings
from mailmoat.states import MessageState

if TYPE_CHECKING:
    from mailmoat.aws.events import MessageRef
    from mailmoat.config import GatewayConfig

log = logging.getLogger("mailmoat.runtime")

__all__ = ["Runtime", "new_message_id"]


@runtime_checkable
class _ScratchableBlobs(Protocol):
    """A blob store that can also write without durability (FsBlobStore.scratch)."""

    def scratch(self) -> BlobStore: ...


@dataclass(slots=True)
class Runtime:
    settings: Settings
    services: Services
    runner: Runner
    # The in-process stage queue when this process runs the stages itself (local); None when
    # they run elsewhere (each Lambda takes its stage from SQS).
    inbox: StageInbox | None = None
    # Re-reads tenant policy every `config_refresh_seconds` (AWS: warm functions see a change
    # the console saved in the directory table); None: the config is the one built at start.
    reload_config: Callable[[], GatewayConfig] | None = None
    config_refresh_seconds: float = 300.0
    raw_bucket: str | None = None  # the bucket whose objects an event may name (AWS)
    _config_at: float = field(default_factory=time.monotonic)

    # --- ingress ------------------------------------------------------------------------------
    def is_known_recipient(self, address: str) -> bool:
        return self.services.directory.recipient(address) is not None

    def tenant_for(self, envelope: Envelope) -> str | None:
        """The tenant of the envelope's first recipient (an analysis without a stored message)."""
        shares = split_by_tenant(self.services.directory, envelope.rcpt_to)
        return shares[0].tenant if shares else None

    def accept(self, raw: bytes, envelope: Envelope, message_id: str | None = None) -> str:
        return self.runner.accept(raw, envelope, message_id)

    # --- processing ---------------------------------------------------------------------------
    def analyse(self, raw: bytes, envelope: Envelope, *, message_id: str | None = None,
                tenant: str | None = None, stages: Sequence[str] = STAGE_NAMES) -> MessageContext:
        """Every stage in memory over one message, nothing stored (`mailmoat process`). What the
        stages write (isolated files) is promised to no one, so it is written without fsync."""
        ctx = MessageContext(id=message_id or new_message_id(), raw=raw, envelope=envelope,
                             tenant=tenant or self.tenant_for(envelope))
        services = self.services
        if isinstance(services.blobs, _ScratchableBlobs):
            services = replace(services, blobs=services.blobs.scratch())
        return run_pipeline(ctx, services, stages)

    def process_stored(self, message_id: str) -> MessageContext | None:
        """Run a stored message's stages now, in this process (the CLI's redrive, tests): the
        stage it waits for, then each one due after it — a retry scheduled for later stays
        scheduled. Returns the last context a stage of it (or of the messages split from it)
        produced."""
        if self.inbox is None:
            raise RuntimeError("this runtime's stages run elsewhere (their queues)")
        record = self.services.log.get(message_id)
        if record is None:
            return None
        if not MessageState(record.state).final and not self.inbox.waiting(message_id):
            self.runner.resume(record, self.services.clock.now())
        ref = self.inbox.take(0.0, message=message_id, due_only=False)
        last: MessageContext | None = None
        while ref is not None:
            ctx = self.runner.step(ref)
            last = ctx if ctx is not None else last
            ref = self.inbox.take(0.0, message=message_id)
        return last

    def run_stage(self, stage: str, refs: Iterable[MessageRef]) -> None:
        """A stage function's batch record: every message it names, through the runner."""
        from mailmoat.aws.events import check_refs

        refs = list(refs)
        check_refs(stage, refs)
        self.refresh_config()
        for ref in refs:
            if ref.bucket is not None and ref.bucket != self.raw_bucket:
                raise ValueError(f"object in an unexpected bucket {ref.bucket!r:.80}")
            self.runner.step(StageRef(ref.message_id, stage, ref.recipients, ref.raw_key))

    def refresh_config(self) -> None:
        if self.reload_config is None:
            return
        if time.monotonic() - self._config_at > self.config_refresh_seconds:
            self.services.config = self.reload_config()
            self._config_at = time.monotonic()

    def recover(self) -> int:
        """Queue every unfinished message again at the stage it had begun (a restart)."""
        now = self.services.clock.now()
        pending = self.services.log.unfinished()
        for record in pending:
            self.runner.resume(record, now)
        return len(pending)

    def reconcile(self, older_than: timedelta) -> int:
        """Queue again what has not moved for `older_than`: unfinished rows, and stored raw
        messages that never got a row (an S3 notification lost). Returns the count."""
        from mailmoat.aws.events import is_setup_notification, message_id_for_key

        now = self.services.clock.now()
        cutoff = now - older_than
        count = 0
        for record in due_unfinished(self.services.log.unfinished(), cutoff):
            self.runner.resume(record, now)
            count += 1
            log.info("re-queued", extra={"message_id": record.id, "stage": record.stage})
        for key, modified in self.services.blobs.objects(RAW_PREFIX):
            if modified > cutoff or is_setup_notification(key):
                continue  # SES's setup notification is no mail: it never gets a row
            try:
                message_id = message_id_for_key(key)
            except ValueError:
                log.error("stored object is not a message key", extra={"key": key[:200]})
                continue
            if self.services.log.get(message_id):
                continue
            nested = None if key == RAW_PREFIX + message_id else key
            self.runner.queue.send(StageRef(message_id, self.runner.stages[0], raw_key=nested))
            count += 1
            log.info("re-queued stored message without a row", extra={"message_id": message_id})
        return count

    # --- directory ------------------------------------------------------------------------------
    def sync_config_to_directory(self) -> None:
        """Tenants in the TOML become directory rows (local runtime). Their `users` seed a new
        tenant only: afterwards the directory (CSV import, sync) is the source of truth."""
        directory = self.services.directory
        for tenant in self.services.config.tenants:
            created = directory.ensure_tenant(tenant.name, tenant.domains)
            if created and tenant.users:
                directory.upsert_recipients(
                    Recipient(address=u.address.lower(), tenant=tenant.name, name=u.name,
                              organisation=u.organisation, department=u.department,
                              title=u.title, memo=u.memo, spam_filter=u.spam_filter,
                              source="config")
                    for u in tenant.users)
