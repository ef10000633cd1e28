"""The worker's one settings class, read from the environment (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.adapters.redis_durability import DURABILITY_PATTERN


class Settings(BaseSettings):
    """`KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` keep their conventional names; everything else is
    prefixed `WORKER_` (e.g. `WORKER_PARTITIONS=24`)."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore")

    kafka_bootstrap_servers: str = Field("localhost:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    redis_url: str = Field("redis://localhost:6379/0", validation_alias="REDIS_URL")
    redis_cluster: bool = False
    """Connect with the Redis Cluster client (keys are hash-tagged by member either way)."""

    redis_durability: str = Field("none", pattern=DURABILITY_PATTERN)
    """When a batch's Redis writes count as done, before its answers are published: `none`, `local`
    (fsynced to the append-only file) or `replicas:N` (see `worker.adapters.redis_durability`).
    The deploy files use `local`; `none` is for development and benchmarks that say so."""
    redis_durability_timeout_ms: int = Field(2000, ge=1)
    """How long the server may take to confirm; past it the batch is retried, not published."""

    topic_claims: str = "claims.inbound"
    topic_accounts: str = "accounts.inbound"
    topic_profiles: str = "members.profiles"
    topic_facilities: str = "facilities.registry"
    topic_settled: str = "claims.settled"
    topic_rejected: str = "claims.rejected"
    topic_ledger: str = "accounts.ledger"
    topic_dlq: str = "claims.dlq"

    consumer_group: str = "claims-worker"
    partitions: int = Field(12, ge=1)
    """Partition count for topics the worker creates (existing topics are left as they are)."""
    replication_factor: int = Field(1, ge=1)
    create_topics: bool = True

    batch_size: int = Field(500, ge=1)
    """Most records settled and committed together (read and written in a few Redis script calls,
    one commit)."""
    poll_max_records: int = Field(10_000, ge=1)
    """Most records taken from the consumer at once, then settled `batch_size` at a time. Taking
    all that a fetch brought lets the consumer fetch the next records meanwhile."""
    batch_timeout_ms: int = Field(20, ge=0)
    """How long a poll waits to fill a batch."""
    fetch_max_wait_ms: int = Field(20, ge=0)
    """How long the broker may hold a fetch for more data (Kafka's default 500 ms adds latency)."""
    fetch_max_partition_bytes: int = Field(4 << 20, ge=1 << 20)
    """Most bytes fetched from one partition at a time: above the largest message the broker accepts
    (an oversize message must be fetched to be dead-lettered; a broker that does not return an
    oversize first batch whole would otherwise hold the partition up)."""
    claim_retention_years: int = Field(1, ge=0, le=50)
    """The retention window: a claim stays fully reversible and duplicate-safe (the same answer again,
    or `DUPLICATE_CONFLICT`) until the end of its service year + this many years; then
    `python -m worker compact` archives it to its owner index (still never settled twice)."""
    answer_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    """How long each message's answer is kept for redelivery (well beyond any commit delay)."""
    retry_max_seconds: float = Field(30.0, gt=0)
    """Longest back-off between attempts while Redis or Kafka is failing."""
    graceful_timeout_seconds: float = Field(30.0, gt=0)
    producer_linger_ms: int = Field(0, ge=0)
    """The publisher hands the producer whole record batches, so lingering would only add latency."""
    producer_idempotence: bool = False
    """Turn on with Apache Kafka; the local test broker does not support it."""
    log_level: str = "INFO"
    fault_crash_before_commit: bool = False
    """Fault injection for the redelivery test: die (SIGKILL) after publishing a batch's answers and
    before committing its offsets. Never set in production."""

    # ---------------------------------------------------------------- point-of-sale gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    gateway_wait_seconds: float = Field(3.0, ge=0, le=30)
    """How long a settle or reversal request waits for the worker's answer unless `Prefer: wait=N`."""
    gateway_jwt_secret: SecretStr | None = None
    """HS256 key of the facilities' bearer tokens."""
    gateway_jwt_public_key: str | None = None
    """PEM public key (RSA or EC) for RS256 / ES256 tokens; both kinds of key may be set at once."""
    gateway_linger_ms: int = Field(5, ge=0)
    """How long the gateway's producer gathers concurrent requests into one produce request (Kafka
    4.0's client default): fewer, larger requests cost the broker and the gateway less CPU."""
    gateway_publish_timeout_seconds: float = Field(5.0, gt=0)
    """A publish Kafka has not acknowledged by then is answered 503 with Retry-After."""
    gateway_request_log_hours: int = Field(24, ge=1)
    """How long a facility's requests are remembered for `GET /v1/claims/{id}` (pending / rejected)."""
