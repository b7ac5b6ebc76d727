"""AttemptStore on DynamoDB: the sign-in counters (mailmoat.attempts) of the portal, one item per
counter in the stack's SignInAttemptsTable (`key`; TTL `expires`).

A transition is a consistent read and a write conditioned on the version read (optimistic
concurrency; DynamoDB has no read-modify-write of a computed value): of several portal instances
changing one counter at once, one write wins and the others read again. After MAX_TRIES lost
races it gives up and raises, and the caller refuses the sign-in (fails closed).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from mailmoat.adapters.aws_dynamodb import _conditional_failed, _epoch, _table, _ts
from mailmoat.ports import AttemptState

T = TypeVar("T")
MAX_TRIES = 12


class AttemptContention(RuntimeError):
    """Too many concurrent writers on one counter: the sign-in is refused."""


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text)) if text else None


class DynamoAttemptStore:
    def __init__(self, table_name: str = "", *, table: Any = None) -> None:
        self.table = _table(table, table_name)

    def transition(self, key: str, step: Callable[[AttemptState | None], tuple[T, AttemptState | None]],
                   expires_at: datetime) -> T:
        for attempt in range(MAX_TRIES):
            item = self.table.get_item(Key={"key": key}, ConsistentRead=True).get("Item")
            state = AttemptState(int(item["count"]), _time(item.get("last_at")),
                                 _time(item.get("next_at"))) if item else None
            answer, new = step(state)
            try:
                self._write(key, item, new, expires_at)
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
                time.sleep(random.uniform(0, 0.005 * (2 ** min(attempt, 6))))
                continue
            return answer
        raise AttemptContention(f"counter {key!r}: {MAX_TRIES} concurrent writes lost")

    def _write(self, key: str, seen: dict[str, Any] | None, new: AttemptState | None,
               expires_at: datetime) -> None:
        version = int(seen["version"]) if seen else 0
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(#k)",
                                     "ExpressionAttributeNames": {"#k": "key"}} if seen is None else {
            "ConditionExpression": "#v = :v", "ExpressionAttributeNames": {"#v": "version"},
            "ExpressionAttributeValues": {":v": version}}
        if new is None:
            if seen is not None:
                self.table.delete_item(Key={"key": key}, **condition)
            return
        item: dict[str, Any] = {"key": key, "count": new.count, "version": version + 1,
                                "expires": _epoch(expires_at)}
        if new.last_at is not None:
            item["last_at"] = _ts(new.last_at)
        if new.next_at is not None:
            item["next_at"] = _ts(new.next_at)
        self.table.put_item(Item=item, **condition)
