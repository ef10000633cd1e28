"""Integer money arithmetic (rules §0): fen and basis points, round half up, no floats."""

from __future__ import annotations

BP_SCALE = 10_000


def rhu(numerator: int, denominator: int) -> int:
    """Round half up of the non-negative rational numerator/denominator."""
    return (2 * numerator + denominator) // (2 * denominator)


def apply_ratio(amount_fen: int, ratio_bp: int) -> int:
    """amount × ratio, rounded half up to the fen (used only where a rule rounds)."""
    return rhu(amount_fen * ratio_bp, BP_SCALE)
