"""Offline replay (contracts.md §Offline replay): inbound JSONL in, outbound JSONL out, in order.

The same decode, routing (`Settler`) and engine code as the Kafka worker, over the in-memory store.
Member messages are settled in batches; a reference line (a profile or a facility) first settles
what came before it, so every message sees exactly the registry the lines before it built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Protocol

from contracts.inbound import FacilityRegistered, MemberProfile
from worker.adapters.memory import MemoryStore
from worker.clock import now_text
from worker.domain.policy import PolicyBook, load_policies
from worker.intake import Decoded, Source, decode
from worker.runtime import without_cyclic_gc
from worker.settlement import Record, Settler, Timing

BATCH = 1024


class Sink(Protocol):
    """Where replay writes its outbound lines: a file, or `simulate`'s collector of outcomes."""

    def write(self, data: bytes, /) -> object: ...


class Replayer:
    """Feeds messages through decode → Settler → the in-memory store."""

    def __init__(self, policies: PolicyBook | None = None, timing: Timing | None = None) -> None:
        """`timing`: told the seconds of each engine pass and store call (`Settler`), for benchmarks
        that say where replay's time goes."""
        self.policies = policies or load_policies()
        self.store = MemoryStore(keep_message_answers=False)  # a replayed line is never redelivered
        self.facilities: dict[str, FacilityRegistered] = {}
        self.settler = Settler(self.store, self.policies, self.facilities, timing=timing)

    def run(self, lines: Iterable[bytes], out: Sink) -> int:
        """Replay every line; returns the number of lines read."""
        return asyncio.run(self.replay(lines, out))

    async def replay(self, lines: Iterable[bytes], out: Sink) -> int:
        return await self.replay_decoded(decode_lines(lines, now_text()), out)

    async def replay_decoded(self, items: Iterable[tuple[Source, bytes, Decoded]], out: Sink) -> int:
        """Replay lines decoded already (`decode_lines`): `simulate` decodes a stream once and settles
        it under two policy sets."""
        with without_cyclic_gc():
            return await self._replay_decoded(items, out)

    async def _replay_decoded(self, items: Iterable[tuple[Source, bytes, Decoded]], out: Sink) -> int:
        write = out.write
        settle = self.settler.settle_decoded
        pending: list[tuple[Record, Decoded]] = []
        count = 0
        now = now_text()

        async def flush() -> None:
            for outgoing in await settle(pending, now):
                write(outgoing.event.data + b"\n")
            pending.clear()

        for source, raw, decoded in items:
            count += 1
            message = decoded.message
            if isinstance(message, MemberProfile | FacilityRegistered):
                if pending:
                    await flush()
                if isinstance(message, MemberProfile):
                    self.store.put_profile(message)
                else:
                    self.facilities[message.facility_id] = message
                continue
            pending.append((Record(source, None, raw), decoded))
            if len(pending) >= BATCH:
                await flush()
                now = now_text()
        if pending:
            await flush()
        return count


def decode_lines(lines: Iterable[bytes], now: str, start: int = 0) -> Iterator[tuple[Source, bytes, Decoded]]:
    """Each line (its newline stripped) with its replay position (from `start`, for a stream decoded
    in chunks) and what `decode` makes of it."""
    for offset, line in enumerate(lines, start):
        raw = line.rstrip(b"\r\n")
        source = Source("replay", 0, offset)
        yield source, raw, decode(raw, source, now)
