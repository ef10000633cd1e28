"""The gateway's memory of each facility's requests, shared by every replica (Redis).

`GET /v1/claims/{id}` answers `pending` or `rejected` from it (gateway.md): for each settle or
reversal request a facility sent through any replica in the last 24 hours, where it was published
(topic / partition / offset, so the worker's stored answer to exactly that record can be found) or,
for a rejection the gateway made itself, the rejection. One Redis list per claim id and facility,
hash-tagged by claim id, expiring with its newest entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from worker.adapters.redis_store import RedisClient
from worker.intake import Source

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Logged:
    """One request: published at `source` (answered by the worker), or answered by the gateway."""

    at: float
    request_type: str
    member_id: str | None
    source: Source | None = None
    digest: bytes | None = None
    answer: bytes | None = None


def _key(claim_id: str, facility_id: str) -> str:
    return f"gw:{{{claim_id}}}:{facility_id}"


class RequestLog:
    def __init__(self, redis: RedisClient, hours: int) -> None:
        self.redis = redis
        self.seconds = hours * 3600

    async def add(self, claim_id: str, facility_id: str, entry: Logged) -> None:
        value = orjson.dumps(
            {
                "v": FORMAT,
                "at": entry.at,
                "type": entry.request_type,
                "member": entry.member_id,
                "source": list(entry.source) if entry.source else None,
                "digest": entry.digest.decode() if entry.digest else None,
                "answer": entry.answer.decode() if entry.answer else None,
            }
        )
        key = _key(claim_id, facility_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, value)
        pipe.ltrim(key, -100, -1)  # a facility retrying one claim id forever keeps its last 100
        pipe.expire(key, self.seconds)
        await pipe.execute()

    async def recent(self, claim_id: str, facility_id: str) -> list[Logged]:
        """This facility's requests for the claim id in the window, oldest first."""
        since = time.time() - self.seconds
        out = []
        for raw in await self.redis.lrange(_key(claim_id, facility_id), 0, -1):
            data = orjson.loads(raw)
            if data.get("v") != FORMAT:
                raise ValueError(f"request log entry of unknown format {data.get('v')!r}")
            if data["at"] < since:
                continue
            source = data["source"]
            out.append(
                Logged(
                    data["at"],
                    data["type"],
                    data["member"],
                    Source(*source) if source else None,
                    data["digest"].encode() if data["digest"] else None,
                    data["answer"].encode() if data["answer"] else None,
                )
            )
        return out
