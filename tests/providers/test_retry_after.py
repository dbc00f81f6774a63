"""Reading an upstream's Retry-After: seconds, milliseconds, an HTTP date."""

from __future__ import annotations

import email.utils
import time

import pytest

from gearshift.providers.http import retry_after


def test_seconds_milliseconds_and_dates() -> None:
    assert retry_after({"retry-after": "1"}) == 1.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5  # the precise one wins
    date = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert retry_after({"retry-after": date}) == pytest.approx(60, abs=2)
    assert retry_after({"retry-after": email.utils.formatdate(time.time() - 60, usegmt=True)}) == 0.0


def test_absent_or_unreadable_is_none() -> None:
    assert retry_after(None) is None and retry_after({}) is None
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after": "-3"}) == 0.0
