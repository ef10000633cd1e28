"""The product's one settings class, read from the environment (pydantic-settings), and
`load_settings()`, which turns a bad value into one line an operator can act on (exit 2)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.adapters.redis_durability import DURABILITY_PATTERN
from worker.domain.policy import PolicyBook, load_policies
from worker.ops.logs import setup_logging

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
REDIS_SCHEMES = ("redis", "rediss", "unix")
DATABASE_SCHEMES = ("postgresql", "postgres")


class Settings(BaseSettings):
    """`KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` keep their conventional names; everything else is
    prefixed `WORKER_` (e.g. `WORKER_PARTITIONS=24`)."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", use_attribute_docstrings=True)

    kafka_bootstrap_servers: str = Field("localhost:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    """Applied to every Kafka client of every process (worker.kafka.clients)."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_cafile: str | None = Field(None, validation_alias="KAFKA_SSL_CAFILE")
    kafka_ssl_certfile: str | None = Field(None, validation_alias="KAFKA_SSL_CERTFILE")
    kafka_ssl_keyfile: str | None = Field(None, validation_alias="KAFKA_SSL_KEYFILE")

    redis_url: SecretStr = Field(SecretStr("redis://localhost:6379/0"), validation_alias="REDIS_URL")
    """`redis://`, `rediss://` (TLS) or `unix://`; may hold a user and password, so it is a secret:
    logs show `redis_endpoint` (without them)."""
    redis_ssl_ca_certs: str | None = Field(None, validation_alias="REDIS_SSL_CA_CERTS")
    """CA bundle that signed the Redis server's certificate (`rediss://`)."""
    redis_ssl_certfile: str | None = Field(None, validation_alias="REDIS_SSL_CERTFILE")
    """Client certificate, for a Redis that asks for one (`tls-auth-clients yes`)."""
    redis_ssl_keyfile: str | None = Field(None, validation_alias="REDIS_SSL_KEYFILE")
    redis_cluster: bool = False
    """Connect with the Redis Cluster client (keys are hash-tagged by member either way)."""

    redis_durability: str = Field("none", pattern=DURABILITY_PATTERN)
    """When a batch's Redis writes count as done, before its answers are published: `none`, `local`
    (fsynced to the append-only file) or `replicas:N` (see `worker.adapters.redis_durability`).
    The deploy files use `local`; `none` is for development and benchmarks that say so."""
    redis_durability_timeout_ms: int = Field(2000, ge=1)
    """How long the server may take to confirm; past it the batch is retried, not published."""

    # the topics (contracts.md); TOPICS lists their roles
    topic_claims: str = "claims.inbound"
    topic_accounts: str = "accounts.inbound"
    topic_profiles: str = "members.profiles"
    topic_facilities: str = "facilities.registry"
    topic_settled: str = "claims.settled"
    topic_rejected: str = "claims.rejected"
    topic_ledger: str = "accounts.ledger"
    topic_dlq: str = "claims.dlq"
    topic_alerts: str = "monitoring.alerts"
    """Early-warning alerts (`monitoring.alert`), published by `python -m worker alerts`."""

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
    owner_index_buckets: int = Field(4096, ge=1, le=1 << 24)
    """Buckets of the claim and request owner indexes: about (claim and request ids kept) / 100, e.g.
    1 048 576 for a city of 50 million claims a year. Used when a state is created (first start,
    rebuild) and kept in its marker; changing it later takes `python -m worker rebuild`."""
    answer_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    """How long each message's answer is kept for redelivery (well beyond any commit delay)."""
    retry_max_seconds: float = Field(30.0, gt=0)
    """Longest back-off between attempts while Redis or Kafka is failing."""
    graceful_timeout_seconds: float = Field(30.0, gt=0)
    producer_linger_ms: int = Field(0, ge=0)
    """The publisher hands the producer whole record batches, so lingering would only add latency."""
    producer_idempotence: bool = False
    """Turn on with Apache Kafka; the local test broker does not support it."""
    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] = "json"
    """One JSON object a line (for the log pipeline), or `text` for a person at a terminal."""
    health_port: int = Field(8081, ge=0, le=65535)
    """Port of the worker's `/livez`, `/readyz` and `/metrics` (the gateway serves them on its own port)."""
    health_host: str = "0.0.0.0"
    metrics_enabled: bool = True
    startup_timeout_seconds: float = Field(300.0, gt=0)
    """A process not ready by then (Redis or Kafka never answered) exits with status 1, so the
    orchestrator restarts it and says so, instead of retrying for ever."""
    fault_crash_before_commit: bool = False
    """Fault injection for the redelivery test: die (SIGKILL) after publishing a batch's answers and
    before committing its offsets. Never set in production."""

    _policies: PolicyBook | None = PrivateAttr(None)
    policy_dir: str | None = None
    """Folder of the policy set (one TOML file per city version); unset: the packaged set. Every
    process reads it at start; check a set first with `python -m worker policy check DIR`."""

    # ---------------------------------------------------------------- the agency's books (records)
    database_url: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    """PostgreSQL of the settlement records (`postgresql://user:password@host:5432/db`): written by
    `python -m worker records`, read by the statements, statistics, alerts and reports. Unset: the
    gateway's `/v1/statements` answer 503 and the records commands refuse to start."""
    records_group: str = "claims-records"
    """Consumer group of the records service; its offsets live in PostgreSQL with the rows (Kafka's
    copy is advisory, for lag dashboards)."""
    records_batch_size: int = Field(5000, ge=1)
    """Most events written to PostgreSQL in one transaction (one COPY per table)."""
    warning_thresholds: str | None = None
    """Early-warning thresholds file (TOML); unset: the packaged `worker/domain/warning/thresholds.toml`."""

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

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in REDIS_SCHEMES:
            raise ValueError(
                "must be a URL such as redis://host:6379/0, rediss://host:6380/0 or unix:///path"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in DATABASE_SCHEMES:
            raise ValueError("must be a URL such as postgresql://user:password@host:5432/records")
        return value

    @model_validator(mode="after")
    def _sasl_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with SASL")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def redis_endpoint(self) -> str:
        """The Redis URL without user or password, for logs."""
        return _without_credentials(self.redis_url.get_secret_value())

    def policies(self) -> PolicyBook:
        """The policy set of `WORKER_POLICY_DIR` (or the packaged one), read once; PolicyError when
        invalid."""
        if self._policies is None:
            self._policies = load_policies(Path(self.policy_dir) if self.policy_dir else None)
        return self._policies

    @property
    def database_endpoint(self) -> str:
        """The database URL without user or password, for logs ("none" when unset)."""
        if self.database_url is None:
            return "none"
        return _without_credentials(self.database_url.get_secret_value())

    def secret_values(self) -> list[str]:
        """Every secret of the settings, for the log redactor (worker.ops.logs)."""
        urls = [self.redis_url] + ([self.database_url] if self.database_url else [])
        out = [p for p in (urlsplit(u.get_secret_value()).password for u in urls) if p]
        for secret in (self.kafka_sasl_password, self.gateway_jwt_secret):
            if secret is not None:
                out.append(secret.get_secret_value())
        return out

    def endpoints(self) -> str:
        """What a process connects to, without secrets: logged at start."""
        return (
            f"kafka={self.kafka_bootstrap_servers} ({self.kafka_security_protocol}"
            + (f", {self.kafka_sasl_mechanism}" if self.kafka_security_protocol.startswith("SASL") else "")
            + f") redis={self.redis_endpoint}"
            + (" (cluster)" if self.redis_cluster else "")
            + f" database={self.database_endpoint}"
        )


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


TOPICS = ("claims", "accounts", "profiles", "facilities", "settled", "rejected", "ledger", "dlq", "alerts")
"""Every topic role: `Settings.topic_<role>`, `WORKER_TOPIC_<ROLE>`."""


def env_name(field: str) -> str:
    """The environment variable that sets a settings field."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"WORKER_{field.upper()}"


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """`WORKER_*` variables that set nothing (a misspelling would otherwise be silently ignored)."""
    known = {env_name(name) for name in Settings.model_fields}
    return sorted(k for k in (environ or os.environ) if k.startswith("WORKER_") and k not in known)


def explain(error: ValidationError) -> list[str]:
    """One line per bad setting: the variable, the value given (never a secret's) and what is wrong."""
    by_name = {env_name(field): field for field in Settings.model_fields}
    lines = []
    for item in error.errors():
        loc = str(item["loc"][0]) if item["loc"] else ""
        field = loc if loc in Settings.model_fields else by_name.get(loc, "")
        name = env_name(field) if field else "settings"
        annotation = Settings.model_fields[field].annotation if field else None
        secret = annotation is not None and "SecretStr" in str(annotation)
        given = "" if secret or not field or item["type"] == "missing" else f"={item.get('input')!r}"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"configuration error: {name}{given}: {message}")
    return lines


def load_settings(policies: bool = False) -> Settings:
    """Settings from the environment, or one line per problem on stderr and exit status 2 (with
    `policies`, for the processes that settle or quote, an invalid WORKER_POLICY_DIR set too)."""
    try:
        settings = Settings()
    except ValidationError as error:
        for line in explain(error):
            print(line, file=sys.stderr)
        raise SystemExit(2) from None
    if policies and settings.policy_dir is not None:
        from worker.domain.errors import PolicyError

        try:
            settings.policies()
        except PolicyError as error:
            print(f"configuration error: WORKER_POLICY_DIR={settings.policy_dir!r}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    setup_logging(settings.log_level, settings.log_format, settings.secret_values())
    for name in unknown_variables():
        logging.getLogger("worker.settings").warning("unknown setting %s is ignored (a misspelling?)", name)
    return settings
