"""How many SMS segments a text costs: GSM-7 when every character fits, UCS-2 otherwise.

One SMS carries 140 bytes of user data. In GSM-7 that is 160 septets; in UCS-2, 70 UTF-16
code units. A longer text is split into parts that each give up 6 bytes to the concatenation
header (UDH): 153 septets or 67 code units per part. Carriers bill, and Twilio charges, per
part. Two details that decide the count at the edges:

- GSM-7 *extension* characters (``^ { } \\ [ ~ ] | €`` and form feed) are sent as an escape
  plus the character: two septets. The pair is never split across parts.
- In UCS-2 a character outside the Basic Multilingual Plane (most emoji) is a surrogate pair:
  two code units, never split across parts either.

One non-GSM character anywhere (a Korean syllable, an emoji, a curly quote) makes the whole
text UCS-2, so Korean reminders cost roughly 2-3x an English one of the same length.

Example:
    >>> count("Reply STOP to opt out.")
    Segments(encoding='GSM-7', segments=1, units=22)
    >>> count("장바구니에 상품이 남아 있어요").encoding
    'UCS-2'
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# GSM 03.38 default alphabet (128 code points; 0x1B, the escape, is left out: it is not text).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# GSM 03.38 extension table: each costs an escape septet plus itself.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# (single message, per part of a concatenated message), in septets / UTF-16 code units.
_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int  # parts billed (at least 1)
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2) in the whole text

    @property
    def detail(self) -> str:
        """What a message record keeps, e.g. ``segments=3 encoding=UCS-2``."""
        return f"segments={self.segments} encoding={self.encoding}"


def encoding(text: str) -> str:
    """``"GSM-7"`` if every character is in the GSM 03.38 alphabet or its extension."""
    gsm = GSM7_BASIC | GSM7_EXTENSION
    return GSM7 if all(ch in gsm for ch in text) else UCS2


def count(text: str) -> Segments:
    """The segments ``text`` takes as one SMS (an empty text still costs one)."""
    enc = encoding(text)
    if enc == GSM7:
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    else:
        widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    single, per_part = _LIMITS[enc]
    units = sum(widths)
    if units <= single:
        return Segments(enc, 1, units)
    # Greedy packing: a two-unit character that does not fit starts the next part.
    parts, used = 1, 0
    for width in widths:
        if used + width > per_part:
            parts += 1
            used = 0
        used += width
    return Segments(enc, parts, units)
