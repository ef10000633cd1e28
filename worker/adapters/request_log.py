"""The gateway's memory of each facility's requests, shared by every replica (Redis).

`GET /v1/claims/{id}` answers `pending` or `rejected` from it (gateway.md): for each settle or
reversal request a facility sent through any replica in the last 24 hours, where it was published
(topic / partition / offset, so the worker's stored answer to exactly that record can be found) or,
for a rejection the gateway made itself, the rejection. One Redis list per claim id and facility,
hash-tagged by claim id, expiring with its newest entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import orjson

from worker.adapters.redis_store import RedisClient
from worker.intake import Source

FORMAT = 1
log = logging.getLogger("worker.gateway.requests")
_KEEP = 100  # a facility retrying one claim id forever keeps its last 100 requests
_APPEND = f"""
for i, key in ipairs(KEYS) do
  redis.call('RPUSH', key, ARGV[i + 1])
  redis.call('LTRIM', key, -{_KEEP}, -1)
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""


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
    """Appends are batched: every request of a busy gateway would otherwise cost a Redis round trip
    of its own (measured: a quarter of the gateway's CPU per settlement, in redis-py). Entries
    queued meanwhile go out together in one script call (per key on a Redis Cluster)."""

    def __init__(self, redis: RedisClient, hours: int, cluster: bool = False) -> None:
        self.redis = redis
        self.seconds = hours * 3600
        self.cluster = cluster
        self._queue: list[tuple[str, bytes, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._append = redis.register_script(_APPEND)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush(), name="gateway-request-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def add(self, claim_id: str, facility_id: str, entry: Logged) -> asyncio.Future[bool]:
        """Queue an entry; the future says whether it reached Redis."""
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
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((_key(claim_id, facility_id), value, done))
        self._wake.set()
        return done

    async def _flush(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            try:
                await self._write([(key, value) for key, value, _ in batch])
                ok = True
            except Exception as exc:  # the requests are published: only their status is less known
                log.warning(
                    "could not log %d requests for status queries (%s)", len(batch), type(exc).__name__
                )
                ok = False
            for _, _, done in batch:
                if not done.done():
                    done.set_result(ok)

    async def _write(self, entries: list[tuple[str, bytes]]) -> None:
        """redis-py's script object loads the script again after a Redis restart (NOSCRIPT)."""
        if self.cluster:  # a script touches one slot: one call per key
            await asyncio.gather(*(self._append(keys=[k], args=[self.seconds, v]) for k, v in entries))
        else:
            keys = [k for k, _ in entries]
            await self._append(keys=keys, args=[self.seconds, *(v for _, v in entries)])

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
