"""Every reason code the worker answers with (contracts.md), and the one domain exception.

A domain failure maps to exactly one code; the message is for people, the code is the contract.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    # claim rejections (rules §7)
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    DUPLICATE_CONFLICT = "DUPLICATE_CONFLICT"
    UNKNOWN_MEMBER = "UNKNOWN_MEMBER"
    UNKNOWN_FACILITY = "UNKNOWN_FACILITY"
    FACILITY_NOT_DESIGNATED = "FACILITY_NOT_DESIGNATED"
    SERVICE_DATE_IN_FUTURE = "SERVICE_DATE_IN_FUTURE"
    NO_POLICY_IN_FORCE = "NO_POLICY_IN_FORCE"
    UNKNOWN_CLAIM = "UNKNOWN_CLAIM"
    MEMBER_MISMATCH = "MEMBER_MISMATCH"
    FACILITY_MISMATCH = "FACILITY_MISMATCH"
    CLAIM_ARCHIVED = "CLAIM_ARCHIVED"
    """An addition to the contract's codes: a reversal of a claim past the retention window."""
    # account request rejections (rules §8)
    NOT_ELIGIBLE = "NOT_ELIGIBLE"
    DUPLICATE_PERIOD = "DUPLICATE_PERIOD"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    NOT_ALLOWED = "NOT_ALLOWED"
    NOT_FAMILY = "NOT_FAMILY"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"


class Rejection(Exception):
    """A request the rules refuse: one code, a human message and the offending field."""

    def __init__(self, code: Code, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field


class PolicyError(ValueError):
    """A policy data file that does not describe a usable policy (raised at load time)."""
