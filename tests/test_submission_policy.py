"""Submission helpers: the hourly limiter and header fixes."""

from __future__ import annotations

from pochta.services.submission import HourlyLimiter, add_missing_headers, from_addresses


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hourly_limiter_slides() -> None:
    clock = Clock()
    limiter = HourlyLimiter(clock)
    limiter.add("a", 3)
    clock.now += 1800
    limiter.add("a", 2)
    assert limiter.used("a") == 5 and limiter.would_exceed("a", 1, 5)
    assert not limiter.would_exceed("b", 5, 5)
    clock.now += 1801  # the first three are older than an hour
    assert limiter.used("a") == 2
    clock.now += 3600
    assert limiter.used("a") == 0


def test_missing_date_and_message_id_are_added_once() -> None:
    msg = b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n"
    fixed = add_missing_headers(msg, "mail.example.test", 0.0)
    assert fixed.startswith(b"From: a@example.test\r\nSubject: x\r\nDate: ")
    assert b"@mail.example.test>\r\n\r\nbody\r\n" in fixed
    assert add_missing_headers(fixed, "mail.example.test", 0.0) == fixed


def test_from_addresses_handles_folding_and_groups() -> None:
    headers = b"From: \"Doe, J\" <j@example.test>,\r\n b@example.test\r\nTo: x@y.test\r\n"
    assert from_addresses(headers) == ["j@example.test", "b@example.test"]
