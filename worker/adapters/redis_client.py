"""Build the Redis client from settings: a single Redis or a Redis Cluster, bytes in and out."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from worker.adapters.redis_store import RedisClient


def connect(url: str, cluster: bool, timeout: float = 5.0) -> RedisClient:
    """Timeouts make an unreachable Redis an error the worker retries, rather than a hang."""
    if cluster:
        return RedisCluster.from_url(
            url, decode_responses=False, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
    )
