"""Create the worker's topics when missing (partition count from settings; existing topics untouched)."""

from __future__ import annotations

import logging

from aiokafka.admin import NewTopic

from worker.kafka import clients
from worker.settings import Settings

log = logging.getLogger("worker.topics")


def all_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name → topic config. Reference topics are compacted: the last message per key wins."""
    compacted = {"cleanup.policy": "compact"}
    return {
        settings.topic_profiles: compacted,
        settings.topic_facilities: compacted,
        settings.topic_claims: {},
        settings.topic_accounts: {},
        settings.topic_settled: {},
        settings.topic_rejected: {},
        settings.topic_ledger: {},
        settings.topic_dlq: {},
        settings.topic_alerts: {},
    }


async def ensure_topics(settings: Settings) -> None:
    admin = clients.admin(settings, client_id="claims-worker-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = all_topics(settings)
        missing = [
            NewTopic(name, settings.partitions, settings.replication_factor, topic_configs=config)
            for name, config in wanted.items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            log.info(
                "created topics %s with %d partitions",
                ", ".join(t.name for t in missing),
                settings.partitions,
            )
    finally:
        await admin.close()
