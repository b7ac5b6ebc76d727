"""Retry-After as the two forms RFC 9110 allows; token and query never in error messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests
import responses

from mailmoat.directory.model import DirectorySyncError
from mailmoat.directory.transport import get_json, retry_after_seconds
from tests.unit.directory.helpers import SleepRecorder, no_sleep

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [
    ("7", 7.0), (" 0 ", 0.0), ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0), ("Fri, 27 Nov 2026 11:00:00 GMT", 0.0),
    ("soon", None), ("", None), (None, None), ("-5", None),
])
def test_retry_after_forms(value, seconds) -> None:
    assert retry_after_seconds(value, NOW) == seconds


def test_errors_name_the_path_not_the_query_or_token() -> None:
    url = "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=SECRET-CURSOR"
    with responses.RequestsMock() as rsps:
        rsps.add("GET", url, status=400, json={"error": {"code": "BadRequest", "message": "Invalid request"}})
        with pytest.raises(DirectorySyncError) as failed:
            get_json(requests.Session(), url, headers={"Authorization": "Bearer SECRET-TOKEN"}, sleep=no_sleep)
    assert str(failed.value) == "GET /v1.0/users/delta: HTTP 400 BadRequest: Invalid request"
    assert failed.value.status == 400


def test_connection_errors_are_retried_then_reported() -> None:
    sleep = SleepRecorder()
    with responses.RequestsMock() as rsps:
        rsps.add("GET", "https://admin.googleapis.com/admin/directory/v1/users",
                 body=requests.ConnectionError("reset"))
        with pytest.raises(DirectorySyncError, match="ConnectionError"):
            get_json(requests.Session(), "https://admin.googleapis.com/admin/directory/v1/users", headers={},
                     sleep=sleep, max_retries=3)
    assert sleep.waits == [1.0, 2.0, 4.0]


def test_an_answer_that_is_not_a_json_object_fails() -> None:
    with responses.RequestsMock() as rsps:
        rsps.add("GET", "https://graph.microsoft.com/v1.0/groups/delta", body="<html>proxy error</html>")
        with pytest.raises(DirectorySyncError, match="not JSON"):
            get_json(requests.Session(), "https://graph.microsoft.com/v1.0/groups/delta", headers={}, sleep=no_sleep)
