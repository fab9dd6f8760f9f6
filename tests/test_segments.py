"""SMS segment counting: GSM-7 against UCS-2, at the edges where the count changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from senders.channels.segments import GSM7, GSM7_BASIC, GSM7_EXTENSION, UCS2, count, encoding


def test_the_gsm_alphabet_is_complete() -> None:
    # GSM 03.38: 128 code points, one of them the escape; plus 10 extension characters.
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "enc", "segments"),
    [
        ("", GSM7, 1),
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),  # 2 × 153
        ("a" * 307, GSM7, 3),
        ("€" * 80, GSM7, 1),  # 80 extension characters = 160 septets
        ("€" * 81, GSM7, 2),
        ("a" * 159 + "€", GSM7, 2),  # 161 septets
        ("가" * 70, UCS2, 1),
        ("가" * 71, UCS2, 2),
        ("가" * 134, UCS2, 2),  # 2 × 67
        ("가" * 135, UCS2, 3),
        ("a" * 159 + "가", UCS2, 3),  # one Korean syllable makes all 160 characters UCS-2
        ("😀" * 35, UCS2, 1),  # surrogate pairs: 70 code units
        ("😀" * 36, UCS2, 2),
    ],
)
def test_segments_at_the_edges(text: str, enc: str, segments: int) -> None:
    result = count(text)
    assert (result.encoding, result.segments) == (enc, segments)


def test_an_escape_pair_is_not_split_across_parts() -> None:
    # 152 plain septets, then "€" (2 septets) would straddle the 153-septet boundary: it moves
    # to part 2, which then holds 2 + 152 = 154 > 153, so a third part starts.
    text = "a" * 152 + "€" + "a" * 152
    assert count(text).units == 306
    assert count(text).segments == 3
    # The same length without the straddle fits in two parts.
    assert count("a" * 151 + "€" + "a" * 153).segments == 2


def test_a_surrogate_pair_is_not_split_across_parts() -> None:
    text = "가" * 66 + "😀" + "가" * 66  # 134 code units, but the emoji would straddle 67
    assert count(text).units == 134
    assert count(text).segments == 3


def test_korean_reminder_costs_more_than_english() -> None:
    english = (
        "Acme Outdoor\nYou left 2 items ($238.00) in your cart.\n"
        "https://nudge.example.com/r/abcdefgh\nReply STOP to opt out."
    )
    korean = (
        "(광고) Acme Outdoor\n장바구니에 상품 2개(₩238,000)가 남아 있어요.\n"
        "https://nudge.example.com/r/abcdefgh\n무료수신거부 080-000-0000"
    )
    assert count(english).encoding == GSM7 and count(english).segments == 1
    assert count(korean).encoding == UCS2 and count(korean).segments == 2
    assert count(korean).detail == "segments=2 encoding=UCS-2"


def test_curly_quote_is_not_gsm() -> None:
    assert encoding("Don't") == GSM7
    assert encoding("Don’t") == UCS2


@given(st.text(alphabet=sorted(GSM7_BASIC), max_size=1000))
def test_plain_gsm_parts_match_the_formula(text: str) -> None:
    n = len(text)
    expected = 1 if n <= 160 else -(-n // 153)
    assert count(text).segments == expected


@given(st.text(max_size=600))
def test_invariants(text: str) -> None:
    result = count(text)
    per_part = 153 if result.encoding == GSM7 else 67
    assert result.segments >= 1
    # Never fewer parts than the units need, and at most one extra per part for a pair
    # pushed over a boundary.
    assert result.segments >= -(-result.units // per_part) or result.segments == 1
    assert result.segments <= max(1, -(-result.units // (per_part - 1)))
