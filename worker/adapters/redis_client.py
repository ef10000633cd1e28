"""Build the Redis client from settings: a single Redis or a Redis Cluster, bytes in and out, over
TCP or TLS (`rediss://`, with the CA and client certificate settings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection

from worker.adapters.redis_durability import Durability
from worker.adapters.redis_store import RedisClient, RedisStore
from worker.settings import Settings

_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command


class _Packing:
    """Commands packed with hiredis (C).

    redis-py's asyncio connection packs in Python, re-joining a growing buffer for every argument;
    the worker's script calls carry thousands of arguments per batch, where that showed in profiles.
    """

    encoder: Any

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # e.g. "SCRIPT LOAD": the server wants the words separately
            args = (*args[0].encode().split(), *args[1:])
        try:  # str, bytes and int pack natively, exactly as redis-py would encode them
            return [_pack(args)]
        except TypeError:
            encode = self.encoder.encode
            return [_pack(tuple(encode(arg) for arg in args))]


class PackedConnection(_Packing, Connection):
    pass


class PackedSSLConnection(_Packing, SSLConnection):
    pass


def connect(url: str, cluster: bool, timeout: float = 5.0, tls: dict[str, Any] | None = None) -> RedisClient:
    """Timeouts make an unreachable Redis an error the worker retries, rather than a hang. `tls`:
    redis-py's `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile` for a `rediss://` URL."""
    tls = tls or {}
    if cluster:  # the cluster client picks its own connection class (TLS for rediss://)
        return RedisCluster.from_url(
            url, decode_responses=False, socket_timeout=timeout, socket_connect_timeout=timeout, **tls
        )
    tcp = not url.lower().startswith("rediss://")
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        connection_class=PackedConnection if tcp else PackedSSLConnection,
        **({} if tcp else tls),
    )


def connect_to(settings: Settings) -> RedisClient:
    """The client every process uses: the URL, cluster mode and TLS files of the settings."""
    tls: dict[str, Any] = {
        name: value
        for name, value in (
            ("ssl_ca_certs", settings.redis_ssl_ca_certs),
            ("ssl_certfile", settings.redis_ssl_certfile),
            ("ssl_keyfile", settings.redis_ssl_keyfile),
        )
        if value
    }
    return connect(settings.redis_url.get_secret_value(), settings.redis_cluster, tls=tls)


def state_store(settings: Settings, durable: bool = False) -> RedisStore:
    """The state store every process uses; `durable` (the writers of member state: the worker and
    rebuild) waits for the configured durability."""
    durability = (
        Durability.parse(settings.redis_durability, settings.redis_durability_timeout_ms) if durable else None
    )
    return RedisStore(
        connect_to(settings), settings.answer_ttl_seconds, durability, settings.owner_index_buckets
    )
