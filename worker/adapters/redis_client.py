"""Build the Redis client from settings: a single Redis or a Redis Cluster, bytes in and out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection

from worker.adapters.redis_store import RedisClient

_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


class PackedConnection(Connection):
    """A connection that packs commands with hiredis (C).

    redis-py's asyncio connection packs in Python, re-joining a growing buffer for every argument;
    the worker's script calls carry thousands of arguments per batch, where that showed in profiles.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # e.g. "SCRIPT LOAD": the server wants the words separately
            args = (*args[0].encode().split(), *args[1:])
        try:  # str, bytes and int pack natively, exactly as redis-py would encode them
            return [_pack(args)]
        except TypeError:
            encode = self.encoder.encode
            return [_pack(tuple(encode(arg) for arg in args))]  # type: ignore[no-untyped-call]


def connect(url: str, cluster: bool, timeout: float = 5.0) -> RedisClient:
    """Timeouts make an unreachable Redis an error the worker retries, rather than a hang."""
    if cluster:
        return RedisCluster.from_url(
            url,
            decode_responses=False,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            connection_class=PackedConnection,
        )
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        connection_class=PackedConnection,
    )
