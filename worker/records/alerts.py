"""Early-warning alerts: judge a month's facility indicators, keep each breach once in the `alerts`
table, publish the ones not yet published on `monitoring.alerts` (key = facility id).

Once: a breach's `event_id` is `alert:<facility>:<month>:<indicator>`; it is inserted with
`ON CONFLICT DO NOTHING` and marked `published` after Kafka acknowledged it, so a re-run publishes
nothing new, and a run that died between the publish and the mark publishes the same event again
(same `event_id`: consumers de-duplicate by it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from contracts.outbound import MonitoringAlert
from worker.domain.warning import Breach, Thresholds, breaches
from worker.kafka import clients
from worker.records import queries
from worker.records.database import Connection
from worker.records.rows import ROW_FORMAT
from worker.settings import Settings


def alert_event(breach: Breach, thresholds: Thresholds, detected_at: str) -> dict[str, Any]:
    row = breach.row
    event = {
        "type": "monitoring.alert",
        "schema_version": 1,
        "event_id": f"alert:{breach.facility_id}:{breach.month}:{breach.indicator}",
        "month": breach.month,
        "city": row["city"],
        "facility_id": breach.facility_id,
        "facility_kind": row["facility_kind"],
        "band": row["band"],
        "indicator": breach.indicator,
        "value_bp": breach.value_bp,
        "threshold_bp": breach.threshold_bp,
        "visits": row["visits"],
        "total_fen": row["total_fen"],
        "avg_cost_fen": row["avg_cost_fen"],
        "peer_median_avg_cost_fen": row["peer_median_avg_cost_fen"],
        "peers": row["peers"],
        "previous_total_fen": row["previous_total_fen"],
        "thresholds": thresholds.id,
        "detected_at": detected_at,
    }
    MonitoringAlert.model_validate(event)  # the contract, checked before anything is kept
    return event


async def indicators(connection: Connection, month: str, city: str | None = None) -> list[dict[str, Any]]:
    return await queries.monthly(connection, "indicators", month, city)


async def find_only(
    connection: Connection, month: str, thresholds: Thresholds, detected_at: str, city: str | None = None
) -> list[dict[str, Any]]:
    """The month's breaches as alert events, keeping nothing (a dry run)."""
    rows = await indicators(connection, month, city)
    return [alert_event(b, thresholds, detected_at) for b in breaches(rows, thresholds)]


async def find(
    connection: Connection, month: str, thresholds: Thresholds, detected_at: str, city: str | None = None
) -> list[dict[str, Any]]:
    """The month's breaches as alert events; new ones are kept in `alerts` (unpublished)."""
    events = await find_only(connection, month, thresholds, detected_at, city)
    if events:
        await connection.executemany(
            "INSERT INTO alerts (event_id, format, month, facility_id, indicator, event)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            [
                (
                    e["event_id"],
                    ROW_FORMAT,
                    dt.date.fromisoformat(month + "-01"),
                    e["facility_id"],
                    e["indicator"],
                    orjson.dumps(e).decode(),
                )
                for e in events
            ],
        )
    return events


async def kept(connection: Connection, month: str, city: str | None = None) -> list[dict[str, Any]]:
    """The month's alerts as first found and kept (with whether each was published)."""
    rows = await connection.fetch(
        "SELECT event, published FROM alerts WHERE month = $1 ORDER BY facility_id, indicator",
        dt.date.fromisoformat(month + "-01"),
    )
    out = [{**orjson.loads(r["event"]), "published": r["published"]} for r in rows]
    return [a for a in out if city is None or a["city"] == city]


async def publish_pending(connection: Connection, settings: Settings) -> int:
    """Publish every kept alert not yet published; how many were."""
    rows = await connection.fetch("SELECT event_id, event FROM alerts WHERE NOT published ORDER BY event_id")
    if not rows:
        return 0
    producer = clients.producer(
        settings, acks="all", enable_idempotence=settings.producer_idempotence, client_id="claims-alerts"
    )
    await producer.start()
    try:
        for row in rows:
            event = orjson.loads(row["event"])
            await producer.send_and_wait(
                settings.topic_alerts, row["event"].encode(), key=event["facility_id"].encode()
            )
            await connection.execute(
                "UPDATE alerts SET published = true WHERE event_id = $1", row["event_id"]
            )
    finally:
        await producer.stop()
    return len(rows)
