"""Every Kafka client of every process is built here, so each gets the same security settings
(issue #11): `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`.

The settings become FastStream's security object (which also documents the server's security in
the AsyncAPI document) and, through FastStream's own translation, aiokafka's keyword arguments, so
the worker's broker and the plain aiokafka clients (gateway, rebuild, admin, tooling) cannot differ.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from worker.settings import Settings

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def security(settings: Settings) -> BaseSecurity | None:
    """FastStream's security object for the settings (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    tls = protocol.endswith("SSL")
    context = (
        create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
        if tls
        else None
    )
    if not protocol.startswith("SASL"):
        return BaseSecurity(ssl_context=context, use_ssl=True)
    if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
        raise ValueError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    return _SASL[settings.kafka_sasl_mechanism](
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=tls,
    )


def options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments: bootstrap servers and security."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **parse_security(security(settings))}


def producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**options(settings), **kwargs)


def consumer(settings: Settings, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **options(settings), **kwargs)


def admin(settings: Settings, **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**options(settings), **kwargs)
