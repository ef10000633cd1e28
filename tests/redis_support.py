"""Feed inbound JSONL through the Redis-backed Settler (no Kafka), as the worker does per batch."""

from __future__ import annotations

import orjson

from contracts.inbound import FacilityRegistered, MemberProfile
from worker.adapters.redis_store import RedisStore
from worker.clock import now_text
from worker.domain.policy import PolicyBook
from worker.intake import Source, decode
from worker.settlement import Record, Settler


class RedisHarness:
    def __init__(self, store: RedisStore, policies: PolicyBook, topic: str = "claims.inbound") -> None:
        self.facilities: dict[str, FacilityRegistered] = {}
        self.settler = Settler(store, policies, self.facilities)
        self.store = store
        self.topic = topic
        self.offset = 0
        self.profile_offset = 0

    async def send(self, lines: list[bytes], batch: int = 1000) -> list[dict]:
        """Reference data goes to the store/registry; the rest is settled in batches of `batch`."""
        records: list[Record] = []
        for raw in lines:
            message = decode(raw, Source("x", 0, 0), "").message
            if isinstance(message, MemberProfile):
                self.profile_offset += 1
                await self.store.put_profiles([(message.member_id, self.profile_offset, raw)])
            elif isinstance(message, FacilityRegistered):
                self.facilities[message.facility_id] = message
            else:
                records.append(Record(Source(self.topic, 0, self.offset), None, raw))
                self.offset += 1
        out = []
        for start in range(0, len(records), batch):
            for item in await self.settler.settle(records[start : start + batch], now_text()):
                out.append(orjson.loads(item.event.data))
        return out

    async def resend(self, records: list[Record]) -> list[dict]:
        return [orjson.loads(o.event.data) for o in await self.settler.settle(records, now_text())]
