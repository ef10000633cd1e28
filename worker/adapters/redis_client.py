"""Build the Redis client from settings: a single Redis or a Redis Cluster, bytes in and out."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from worker.adapters.redis_store import RedisClient


def connect(url: str, cluster: bool) -> RedisClient:
    if cluster:
        return RedisCluster.from_url(url, decode_responses=False)
    return Redis.from_url(url, decode_responses=False, health_check_interval=10)
