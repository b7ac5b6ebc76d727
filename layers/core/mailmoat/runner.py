"""ONE step for every runtime: load a stored message and its state, run one stage, save, then
hand on or finish (retry, hold, DSN, final state).

`mailmoat serve`, `mailmoat redrive` and every stage Lambda call Runner.step; they differ only
in the adapters the composition root gave the runner: locally the queue is in process and the
state is the live context (parsed once), on AWS the queue is the next stage's SQS queue and the
state a snapshot in S3. Nothing here knows which of the two it runs in."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailmoat.context import Disposition, Envelope, MessageContext
from mailmoat.ingress import split_by_tenant, stored_envelope
from mailmoat.pipeline import STAGE_NAMES, Services, run_pipeline
from mailmoat.ports import MessageRecord, Metrics, StageLedger, StageQueue, StageRef, StateStore
from mailmoat.states import MessageState, Outcome

log = logging.getLogger("mailmoat.runner")

RAW_PREFIX = "raw/"  # SES's S3 action writes raw/<SES message id>; ingress writes the same
RETRIES_EXHAUSTED = "delivery retries exhausted"
# What the runner counts (ports.Metrics; alarms on AWS read these names).
STAGE_MESSAGES = "StageMessages"  # stage: a message completed a stage
STAGE_FAILURES = "StageFailures"  # stage: an attempt failed (it is retried, or the message held)
HELD_AFTER_RETRIES = "DeadLettered"  # stage: the last attempt failed, the message is held
DISPOSITIONS = "Dispositions"  # disposition: deliver / quarantine / drop / held
DELIVERIES = "Deliveries"  # outcome: delivered / deferred / failed, one per recipient
STAGE_DURATION = "StageDuration"  # stage: seconds one attempt of the stage took
VERDICTS = "Verdicts"  # verdict: one per attachment of a finished message
SYMBOLS = "Symbols"  # symbol: one per finding of a finished message
# A message held or dropped by a stage goes no further.
_ENDS = frozenset({Disposition.HELD, Disposition.DROP})


def raw_key(message_id: str) -> str:
    return f"{RAW_PREFIX}{message_id}"


def new_message_id(now: datetime | None = None) -> str:
    """Time-sortable and unguessable: 20261127T204700Z-<64 random bits>."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a stage is tried before the message is held, and how long between tries."""

    stage_max_attempts: int = 5  # a stage that raises (or is interrupted) this often: held
    delivery_max_attempts: int = 8  # deferred deliveries: failed, with a DSN, after this many
    base_seconds: float = 30.0
    cap_seconds: float = 3600.0

    def delay(self, attempts: int) -> float:
        """Exponential backoff from the base, capped."""
        return float(min(self.base_seconds * 2.0 ** max(0, attempts - 1), self.cap_seconds))

    def limit(self, stage: str) -> int:
        return self.delivery_max_attempts if stage == "deliver" else self.stage_max_attempts


def message_state(ctx: MessageContext) -> tuple[MessageState, str | None]:
    """Where a processed message ends in the message log, and why: held, quarantined, dropped,
    or from the recipients' outcomes — deferred when any waits, failed when all were refused,
    quarantined when every copy is in the spam quarantine."""
    if ctx.disposition == Disposition.HELD:
        return MessageState.HELD, "; ".join(f.detail for f in ctx.findings if f.symbol == "HELD") or None
    if ctx.disposition == Disposition.QUARANTINE:
        return MessageState.QUARANTINED, None
    if ctx.disposition == Disposition.DROP:
        return MessageState.DROPPED, None
    outcomes = [ctx.deliveries.get(r, "") for r in ctx.envelope.rcpt_to]
    kinds = [Outcome.of(o) for o in outcomes]
    deferred = [o for o, k in zip(outcomes, kinds, strict=True) if k is Outcome.DEFERRED]
    if deferred:
        return MessageState.DEFERRED, "; ".join(deferred)[:500]
    if kinds and all(k is Outcome.FAILED for k in kinds):
        return MessageState.FAILED, "; ".join(outcomes)[:500]
    if kinds and all(k is Outcome.QUARANTINED for k in kinds):
        return MessageState.QUARANTINED, None  # every copy held in the spam quarantine
    return MessageState.DELIVERED, None


def stored_report(ctx: MessageContext) -> dict[str, Any]:
    """The report for the message log: portal tokens live only in the recipients' copies."""
    from mailmoat.isolation import redact_portal_url

    report = ctx.to_report()
    report["portal_url"] = redact_portal_url(report["portal_url"])
    return report


@dataclass(slots=True)
class Runner:
    services: Services
    queue: StageQueue
    states: StateStore
    ledger: StageLedger
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    stages: tuple[str, ...] = STAGE_NAMES
    metrics: Metrics | None = None

    # --- ingress ------------------------------------------------------------------------------
    def accept(self, raw: bytes, envelope: Envelope, message_id: str | None = None) -> str:
        """Store the raw message and its log row durably, then queue the first stage. Only after
        this returns may the ingress say 250: from here on the message cannot be lost."""
        message_id = message_id or new_message_id()
        self.services.blobs.put(raw_key(message_id), raw)
        try:
            self._record_accepted(message_id, envelope, len(raw))
        except Exception:
            # The client hears a 4xx and sends again: no row means no one would process this copy.
            self.services.blobs.delete(raw_key(message_id))
            raise
        self.queue.send(StageRef(message_id, self.stages[0]))
        return message_id

    def _record_accepted(self, message_id: str, envelope: Envelope, size: int,
                         raw_at: str | None = None) -> None:
        shares = split_by_tenant(self.services.directory, envelope.rcpt_to)
        self.services.log.accept(MessageRecord(
            id=message_id, received_at=self.services.clock.now(), state=MessageState.ACCEPTED,
            mail_from=envelope.mail_from, rcpt_to=list(envelope.rcpt_to),
            client_ip=envelope.client_ip, helo=envelope.helo, tls=envelope.tls,
            tenant=shares[0].tenant if len(shares) == 1 else None, size=size, raw_key=raw_at))

    def _accept_stored(self, ref: StageRef, raw: bytes) -> MessageRecord | None:
        """A message someone else stored (SES) has no row yet: read its envelope, record it."""
        found = stored_envelope(raw, ref.recipients, self.services.directory)
        self._record_accepted(ref.message_id, found.envelope, len(raw), raw_at=ref.raw_key)
        if found.refused is not None:
            # Never silent: dropped (SES named a recipient we do not know) or held (none found),
            # visible to the admin, re-drivable.
            state = MessageState.DROPPED if found.dropped else MessageState.HELD
            self.services.log.update(ref.message_id, state=state, error=found.refused)
            return None
        return self.services.log.get(ref.message_id)

    def _split(self, record: MessageRecord) -> bool:
        """An envelope whose recipients belong to several tenants becomes one message per tenant
        (ids <id>.1, <id>.2 … sharing the stored raw message); the parent row ends `split`.
        Idempotent: a re-run finds the children it already recorded."""
        if record.tenant is not None:
            return False  # accept recorded a tenant only for an envelope of one tenant
        shares = split_by_tenant(self.services.directory, record.rcpt_to)
        if len(shares) <= 1:
            return False
        logbook = self.services.log
        children: list[str] = []
        for number, share in enumerate(shares, start=1):
            child = f"{record.id}.{number}"
            children.append(child)
            if logbook.get(child) is None:
                logbook.accept(MessageRecord(
                    id=child, received_at=record.received_at, state=MessageState.ACCEPTED,
                    mail_from=record.mail_from, rcpt_to=list(share.recipients),
                    client_ip=record.client_ip, helo=record.helo, tls=record.tls, tenant=share.tenant,
                    size=record.size, raw_key=record.raw_key or raw_key(record.id)))
            self.queue.send(StageRef(child, self.stages[0]))
        logbook.update(record.id, state=MessageState.SPLIT,
                       error=f"one message per tenant: {', '.join(children)}"[:500])
        log.info("split per tenant", extra={"message_id": record.id, "action": "split"})
        return True

    # --- one stage ------------------------------------------------------------------------------
    def step(self, ref: StageRef) -> MessageContext | None:
        """Run `ref.stage` of one stored message. Returns the context when the stage ran."""
        stage = ref.stage
        if stage not in self.stages:
            raise ValueError(f"unknown stage {stage!r:.40}")
        message_id = ref.message_id
        extra = {"message_id": message_id, "stage": stage}
        if self.ledger.is_complete(message_id, stage):
            log.info("stage already done; duplicate event ignored", extra=extra)
            return None
        logbook = self.services.log
        record = logbook.get(message_id)
        first = stage == self.stages[0]
        raw: bytes | None = None
        if record is None:
            if not first:
                raise LookupError(f"message {message_id} has no log row; {stage} cannot run")
            raw = self._raw(ref, None)  # someone else (SES) stored it: its envelope is inside
            record = self._accept_stored(ref, raw) if raw is not None else None
            if record is None:
                self.ledger.complete(message_id, stage)
                return None
        if MessageState(record.state).final:
            log.info("message already finished; event ignored", extra=extra)
            return None
        if first and self._split(record):
            self.ledger.complete(message_id, stage)
            return None
        raw = raw if raw is not None else self._raw(ref, record)
        if raw is None:
            return None
        attempts = logbook.begin_attempt(message_id, stage)
        if attempts > self.policy.limit(stage):
            # Begun this often without finishing (a crash, a timeout, an error each time): a
            # poison message. Hold it instead of crash-looping.
            self._hold_unstarted(record, stage, f"stage {stage} did not complete in "
                                                f"{attempts - 1} attempts; held")
            return None
        ctx = self._context(record, raw, stage)
        run_pipeline(ctx, self.services, [stage])
        ctx.findings = list(dict.fromkeys(ctx.findings))  # a re-parse re-adds parse findings
        if self.metrics is not None:
            for timing in ctx.trace:
                if timing.stage == stage:
                    self.metrics.observe(STAGE_DURATION, timing.duration_ms / 1000, stage=stage)
        failure = next((t.detail for t in ctx.trace if t.stage == stage and t.outcome == "error"), None)
        if failure is not None:
            self._count(STAGE_FAILURES, stage=stage)
            if attempts < self.policy.stage_max_attempts:
                self._retry(ref, attempts, f"stage {stage} failed: {failure}")
                return ctx
            self._count(HELD_AFTER_RETRIES, stage=stage)
        self._hand_on(ctx, stage, attempts)
        return ctx

    def _raw(self, ref: StageRef, record: MessageRecord | None) -> bytes | None:
        key = (record.raw_key if record is not None else None) or ref.raw_key or raw_key(ref.message_id)
        try:
            return self.services.blobs.get(key)
        except FileNotFoundError:
            if record is None:
                raise  # S3 notifications can arrive before the object reads back: retry
            self.services.log.update(ref.message_id, state=MessageState.HELD,
                                     error="raw message missing from the store")
            return None
        except OSError as exc:
            # A store hiccup (EIO, a timeout) is not the message's fault: retry with backoff, and
            # hold only when the retries are used up.
            if record is None:
                raise
            attempts = self.services.log.begin_attempt(ref.message_id, ref.stage)
            reason = f"raw message unreadable: {exc}"[:300]
            if attempts >= self.policy.limit(ref.stage):
                self.services.log.update(ref.message_id, state=MessageState.HELD, error=reason)
            else:
                self._retry(ref, attempts, reason)
            return None

    def _context(self, record: MessageRecord, raw: bytes, stage: str) -> MessageContext:
        """The context the previous stage left; rebuilt by running the earlier stages again when
        it is gone (a restart emptied the in-process store; stages are idempotent)."""
        index = self.stages.index(stage)
        if index > 0:
            ctx = self.states.load(record.id, raw, self.stages[index - 1])
            if ctx is not None:
                return ctx
        envelope = Envelope(client_ip=record.client_ip, helo=record.helo,
                            mail_from=record.mail_from, rcpt_to=list(record.rcpt_to), tls=record.tls)
        ctx = MessageContext(id=record.id, raw=raw, envelope=envelope, tenant=record.tenant)
        if index > 0:
            log.info("stage state missing; earlier stages run again",
                     extra={"message_id": record.id, "stage": stage})
            run_pipeline(ctx, self.services, self.stages[:index])
        return ctx

    def _retry(self, ref: StageRef, attempts: int, reason: str) -> None:
        delay = self.policy.delay(attempts)
        when = self.services.clock.now() + timedelta(seconds=delay)
        self.services.log.update(ref.message_id, state=MessageState.DEFERRED,
                                 error=f"{reason} (attempt {attempts})"[:500],
                                 next_attempt_at=when.isoformat(timespec="microseconds"))
        self.queue.send(StageRef(ref.message_id, ref.stage), delay_seconds=delay)
        log.warning("stage retried later", extra={"message_id": ref.message_id, "stage": ref.stage,
                                                  "action": "retry"})

    def _hand_on(self, ctx: MessageContext, stage: str, attempts: int) -> None:
        index = self.stages.index(stage)
        following = self.stages[index + 1] if index + 1 < len(self.stages) else None
        if following is not None and ctx.disposition not in _ENDS:
            self.states.save(ctx, stage)
            # The row now names the stage to run next with no attempt of it begun: a restart
            # resumes there, and counts an attempt only when one starts. Left at `stage`, every
            # message waiting in the queue at a crash was charged an attempt of a stage it had
            # finished, and three restarts held the whole queue as poison (make soak: 239 of 300).
            self.services.log.update(ctx.id, state=MessageState.PROCESSING, timings=_timings(ctx),
                                     error=None, next_attempt_at=None, stage=following, attempts=0)
            self.queue.send(StageRef(ctx.id, following))
            self.ledger.complete(ctx.id, stage)
            self._count(STAGE_MESSAGES, stage=stage)
            return
        state, reason = message_state(ctx)
        if state == MessageState.DEFERRED:
            if attempts < self.policy.delivery_max_attempts:
                # The previous stage's state stays saved: the retry starts from it again.
                self._record(ctx, state, reason)
                self._retry(StageRef(ctx.id, stage), attempts, reason or "delivery deferred")
                return
            state, reason = MessageState.FAILED, RETRIES_EXHAUSTED
            self._notify_exhausted(ctx)
        self._record(ctx, state, reason)
        self.states.discard(ctx.id)
        self.ledger.complete(ctx.id, stage)
        self._count(STAGE_MESSAGES, stage=stage)
        self._count(DISPOSITIONS, disposition="held" if state == MessageState.HELD else str(ctx.disposition))
        for outcome in ctx.deliveries.values():
            self._count(DELIVERIES, outcome=str(Outcome.of(outcome) or "unknown"))
        for attachment in ctx.attachments:
            self._count(VERDICTS, verdict=str(attachment.verdict))
        for symbol in dict.fromkeys(f.symbol for f in ctx.findings):
            self._count(SYMBOLS, symbol=symbol)
        log.info("message finished", extra={"message_id": ctx.id, "tenant": ctx.tenant,
                                            "stage": stage, "action": str(state)})

    def _count(self, name: str, **dimensions: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, 1, **dimensions)

    def _notify_exhausted(self, ctx: MessageContext) -> None:
        from mailmoat.bounce import Failure, notify_sender

        notify_sender(ctx, self.services, [
            Failure(rcpt, "4.4.7", f"retries exhausted; last: {ctx.deliveries[rcpt]}")
            for rcpt in ctx.envelope.rcpt_to
            if Outcome.of(ctx.deliveries.get(rcpt)) is Outcome.DEFERRED])

    def _record(self, ctx: MessageContext, state: MessageState, reason: str | None) -> None:
        self.services.log.update(
            ctx.id, state=state, disposition=str(ctx.disposition), message_id=ctx.message_id,
            subject=ctx.subject, timings=_timings(ctx), report=stored_report(ctx), error=reason,
            next_attempt_at=None)

    def _hold_unstarted(self, record: MessageRecord, stage: str, reason: str) -> None:
        self.services.log.update(record.id, state=MessageState.HELD, error=reason)
        self.states.discard(record.id)
        log.error("poison message held", extra={"message_id": record.id, "stage": stage})

    # --- what is due again ------------------------------------------------------------------------
    def resume(self, record: MessageRecord, now: datetime) -> None:
        """Queue an unfinished message again at the stage it had begun (recovery after a restart,
        the reconciler), when its retry is due or at once."""
        stage = record.stage if record.stage in self.stages else self.stages[0]
        index = self.stages.index(stage)
        while index + 1 < len(self.stages) and self.ledger.is_complete(record.id, self.stages[index]):
            index += 1  # it completed and handed on, and the hand-off was lost
        stage = self.stages[index]
        delay = 0.0
        if record.next_attempt_at:
            due = datetime.fromisoformat(record.next_attempt_at)
            delay = max(0.0, (due - now).total_seconds())
        self.queue.send(StageRef(record.id, stage), delay_seconds=delay)

    def redrive(self, message_id: str) -> bool:
        """Send a held or failed message through every stage again (its deliveries stay claimed:
        nobody gets it twice)."""
        record = self.services.log.get(message_id)
        if record is None:
            return False
        self.ledger.forget(message_id, self.stages)
        self.states.discard(message_id)
        self.services.log.update(message_id, state=MessageState.ACCEPTED, error=None,
                                 next_attempt_at=None)
        self.queue.send(StageRef(message_id, self.stages[0]))
        return True


def _timings(ctx: MessageContext) -> dict[str, float]:
    return {t.stage: round(t.duration_ms, 3) for t in ctx.trace}


def due_unfinished(records: Sequence[MessageRecord], cutoff: datetime) -> list[MessageRecord]:
    """Unfinished rows that have not moved since `cutoff` (the reconciler's candidates)."""
    return [r for r in records if not MessageState(r.state).final
            and (r.updated_at is None or r.updated_at <= cutoff)]
