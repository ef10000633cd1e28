"""Offline replay (contracts.md §Offline replay): inbound JSONL in, outbound JSONL out, in order.

The same decode and engine code as the Kafka worker, with the in-memory store. Analysts use it to
re-run a day of claims, so the loop is kept tight: no per-message allocation beyond the models.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Iterable
from typing import BinaryIO

from contracts.inbound import FacilityRegistered, MemberProfile
from contracts.types import CHINA_TZ
from worker.adapters.memory import MemoryStore
from worker.domain.engine import Context, decide
from worker.domain.policy import PolicyBook, load_policies
from worker.intake import Source, decode


def now_text() -> str:
    """The current time in UTC+08:00, second precision, as written into `*_at` fields."""
    return dt.datetime.now(CHINA_TZ).isoformat(timespec="seconds")


class Replayer:
    """Feeds messages one by one through decode → engine → memory store."""

    def __init__(self, policies: PolicyBook | None = None) -> None:
        self.policies = policies or load_policies()
        self.store = MemoryStore()
        self.facilities: dict[str, FacilityRegistered] = {}

    def run(self, lines: Iterable[bytes], out: BinaryIO) -> int:
        """Replay every line; returns the number of lines read."""
        policies, store, facilities = self.policies, self.store, self.facilities
        write = out.write
        count = 0
        now = now_text()
        ctx = Context(policies, facilities, now)
        for offset, line in enumerate(lines):
            count += 1
            if offset & 16383 == 0:
                now = now_text()
                ctx = Context(policies, facilities, now)
                # What is alive now is store state, kept to the end: stop the cyclic GC rescanning it
                # (it holds no reference cycles, so freezing it leaks nothing).
                gc.freeze()
            raw = line.rstrip(b"\r\n")
            decoded = decode(raw, Source("replay", 0, offset), now)
            message = decoded.message
            if message is None:
                for event in decoded.events:
                    write(event.data + b"\n")
                continue
            if isinstance(message, MemberProfile):
                store.put_profile(message)
                continue
            if isinstance(message, FacilityRegistered):
                facilities[message.facility_id] = message
                continue
            view = store.view(message.member_id)
            decision = decide(message, view, ctx)
            if decision.effect is not None:
                store.apply(view, decision.effect)
            for event in decision.events:
                write(event.data + b"\n")
        return count
