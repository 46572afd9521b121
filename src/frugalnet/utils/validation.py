"""Argument checks that raise ValueError naming the parameter, the value and the allowed range."""
from __future__ import annotations


def check_fraction(name: str, value: float, *, low_inclusive: bool = True, high_inclusive: bool = False,
                   low: float = 0.0, high: float = 1.0) -> float:
    """Check low <= value < high (bounds' inclusivity configurable)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (ok_low and ok_high):
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in {lb}{low}, {high}{hb}, got {value}")
    return value


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
