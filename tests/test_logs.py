"""Personal data never reaches a log line: the filter every entry point installs."""

from __future__ import annotations

import logging

import pytest

from nudge.logs import RedactPersonalData, redact


@pytest.mark.parametrize(
    "text",
    [
        "RCPT refused for jane.doe+shop@example.co.kr",
        "To +821012345678: rate limited",
        "To +1 (415) 555-0100: queued",
        "call 010-1234-5678 back",
        "sent to 4155550100",
    ],
)
def test_addresses_and_numbers_are_masked(text: str) -> None:
    masked = redact(text)
    assert "@" not in masked
    assert not any(run in masked for run in ("1012345678", "555-0100", "1234-5678", "4155550100"))
    assert "<email>" in masked or "<phone>" in masked


@pytest.mark.parametrize(
    "text",
    [
        "Email sent for cart 103 touch 2 (message 1112bb0619cb44f2939f675432109a5d)",
        "Rollups of store eca4456bebf0 refreshed from 2026-11-23 in 0.08 s",
        "decision 6f0d4360-8aae-4fc4-8c99-6a3821fdb3f8",
    ],
)
def test_ids_and_dates_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_bare_run_of_nine_digits_counts_as_a_number() -> None:
    # Indistinguishable from a local phone number: masked, erring on the side of privacy
    assert redact("Applied 123456789 events") == "Applied <phone> events"


def test_the_filter_masks_the_rendered_message_and_its_arguments() -> None:
    record = logging.LogRecord(
        "senders", logging.WARNING, __file__, 1, "SMTP said %s for %s", ("550", "a@b.example"), None
    )
    assert RedactPersonalData().filter(record)
    assert record.getMessage() == "SMTP said 550 for <email>"
