"""The runner's local hand-off: an in-process stage queue, the live contexts between stages
(parsed once), and a ledger of completed stages — all in memory, bounded."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from mailmoat.context import MessageContext
from mailmoat.message import ParsedMessage
from mailmoat.ports import StageRef
from mailmoat.snapshot import dump, load


class InProcessQueue:
    """Stage refs waiting to run, each at its due time. `take` hands out the earliest due one.
    What waits here is lost with the process; the message log (state, stage, next attempt)
    is what `mailmoat serve` queues again at its next start."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, StageRef]] = []
        self._pending: dict[tuple[str, str], float] = {}
        self._order = itertools.count()
        self._ready = threading.Condition()

    def send(self, ref: StageRef, delay_seconds: float = 0.0) -> None:
        due = time.monotonic() + max(0.0, delay_seconds)
        key = (ref.message_id, ref.stage)
        with self._ready:
            if key in self._pending and self._pending[key] <= due:
                return  # already waiting, and due no later
            self._pending[key] = due
            heapq.heappush(self._heap, (due, next(self._order), ref))
            self._ready.notify_all()

    def take(self, timeout: float = 0.0, *, message: str | None = None,
             due_only: bool = True) -> StageRef | None:
        """The earliest ref due now (only those of `message` and the messages split from it,
        when given; with `due_only` False, due or not), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                ref = self._pop_due(message, due_only)
                if ref is not None:
                    return ref
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._ready.wait(min(remaining, 0.5))

    def _pop_due(self, message: str | None, due_only: bool) -> StageRef | None:
        if message is None and due_only:  # the worker's take: the heap's top, O(log n)
            while self._heap and self._heap[0][0] <= time.monotonic():
                due, _n, ref = heapq.heappop(self._heap)
                if self._claim(ref, due):
                    return ref
            return None
        now = time.monotonic() if due_only else float("inf")
        for entry in sorted(e for e in self._heap if e[0] <= now
                            and (message is None or _belongs(e[2].message_id, message))):
            self._heap.remove(entry)
            heapq.heapify(self._heap)
            if self._claim(entry[2], entry[0]):
                return entry[2]
        return None

    def _claim(self, ref: StageRef, due: float) -> bool:
        """True for the live entry of a ref; False for one superseded by an earlier send."""
        key = (ref.message_id, ref.stage)
        if self._pending.get(key) != due:
            return False
        del self._pending[key]
        return True

    def due(self) -> int:
        """How many refs are due now (superseded duplicates aside)."""
        now = time.monotonic()
        with self._ready:
            return sum(1 for due, _n, r in self._heap
                       if due <= now and self._pending.get((r.message_id, r.stage)) == due)

    def waiting(self, message: str | None = None) -> int:
        with self._ready:
            return sum(1 for _d, _n, r in self._heap if message is None or _belongs(r.message_id, message))


def _belongs(message_id: str, root: str) -> bool:
    return message_id == root or message_id.startswith(root + ".")


@dataclass(slots=True)
class _Saved:
    stage: str
    snapshot: dict[str, object]
    output: bytes | None
    outputs: dict[str, bytes]
    parsed: ParsedMessage | None


class InProcessStateStore:
    """The context each stage left, kept as a snapshot (so a failed attempt's half-changed
    context is never what the retry starts from) beside the parsed message (so the next stage
    does not parse again). At most `capacity` messages; an evicted one is rebuilt by the runner."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._saved: OrderedDict[str, _Saved] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, ctx: MessageContext, stage: str) -> None:
        saved = _Saved(stage, dump(ctx), ctx.output, dict(ctx.outputs), ctx.parsed)
        with self._lock:
            self._saved[ctx.id] = saved
            self._saved.move_to_end(ctx.id)
            while len(self._saved) > self.capacity:
                self._saved.popitem(last=False)

    def load(self, message_id: str, raw: bytes, stage: str) -> MessageContext | None:
        with self._lock:
            saved = self._saved.get(message_id)
        if saved is None or saved.stage != stage:
            return None
        ctx = load(saved.snapshot, raw)  # type: ignore[arg-type]
        ctx.output, ctx.outputs, ctx.parsed = saved.output, dict(saved.outputs), saved.parsed
        return ctx

    def discard(self, message_id: str) -> None:
        with self._lock:
            self._saved.pop(message_id, None)


class InProcessLedger:
    """Stages completed in this process (a message is never run by two processes locally)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def is_complete(self, message_id: str, stage: str) -> bool:
        with self._lock:
            return (message_id, stage) in self._done

    def complete(self, message_id: str, stage: str) -> bool:
        with self._lock:
            if (message_id, stage) in self._done:
                return False
            self._done[(message_id, stage)] = None
            while len(self._done) > self.capacity:
                self._done.popitem(last=False)
            return True

    def forget(self, message_id: str, stages: Iterable[str]) -> None:
        with self._lock:
            for stage in stages:
                self._done.pop((message_id, stage), None)
