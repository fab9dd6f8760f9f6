"""Numbers as a growth team reads them: money in the store's currency, rates, counts."""

from __future__ import annotations

import math

from experiments import rollups

# Currencies without minor units in everyday use (ISO 4217 exponent 0).
_ZERO_DECIMALS = {"KRW", "JPY", "VND", "CLP", "ISK", "HUF", "TWD"}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "KRW": "₩", "JPY": "¥", "CNY": "¥", "INR": "₹"}


def decimals(currency: str) -> int:
    return 0 if currency.upper() in _ZERO_DECIMALS else 2


def money(amount: float | None, currency: str) -> str:
    """``$1,234.50``, ``₩12,345``, ``-€3.00``; an unknown currency as ``1,234.50 CHF``.

    Example:
        >>> money(1234.5, "USD"), money(12345.4, "KRW"), money(-3, "EUR"), money(2, "CHF")
        ('$1,234.50', '₩12,345', '-€3.00', '2.00 CHF')
    """
    if amount is None or (isinstance(amount, float) and math.isnan(amount)):
        return "—"
    cur = currency.upper()
    d = decimals(cur)
    body = f"{abs(amount):,.{d}f}"
    sign = "-" if round(amount, d) < 0 else ""
    symbol = _SYMBOLS.get(cur)
    return f"{sign}{symbol}{body}" if symbol else f"{sign}{body} {cur}"


def money_interval(low: float, high: float, currency: str) -> str:
    return f"{money(low, currency)} … {money(high, currency)}"


def pct(rate: float | None, digits: int = 1) -> str:
    """``0.1234`` → ``12.3%``; ``None`` → ``—``."""
    if rate is None or math.isnan(rate):
        return "—"
    return f"{rate * 100:.{digits}f}%"


def count(n: int | float | None) -> str:
    if n is None:
        return "—"
    return f"{int(n):,}"


def ratio(value: float | None) -> str:
    """ROI as a multiple: ``2.5`` → ``2.50×``."""
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,.2f}×"


def band_edges(currency: str) -> tuple[float, ...]:
    """The cart value bands' edges the rollups sort carts by (``experiments.rollups``)."""
    return rollups.band_edges(currency)


def band_labels(currency: str) -> list[str]:
    """Labels of the cart value bands, lowest first: ``<$50``, ``$50–100``, …, ``$250+``."""
    edges = band_edges(currency)
    cur = currency.upper()
    short = [money(e, cur).replace(".00", "") for e in edges]
    labels = [f"<{short[0]}"]
    labels += [f"{a}–{b}" for a, b in zip(short, short[1:], strict=False)]
    labels.append(f"{short[-1]}+")
    return labels


def mask_address(address: str | None) -> str:
    """A recipient, recognisable to its owner but not readable over a shoulder.

    Example:
        >>> mask_address("jane.doe@example.com"), mask_address("+821012345678")
        ('j***@example.com', '+82******5678')
    """
    if not address:
        return "—"
    if address.startswith("push:"):
        return address
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    if len(address) > 7:
        return address[:3] + "*" * (len(address) - 7) + address[-4:]
    return "***"
