"""The state marker: which Kafka offsets the money state in Redis reflects, and of which lineage.

Redis state is derived from the Kafka log; the marker ties the two together so that the worker can
tell a Redis that lost its state from one that never had any:

- `epoch`: an id made when the state is first created (or rebuilt). Every offset commit of the worker
  carries it as its metadata, so a consumer group's committed offsets name the state they belong to.
- `consumed`: per inbound partition, the next offset whose effects the state holds. Advanced (never
  moved back) after each batch's state is durable, before its answers are published; a batch whose
  first offset lies beyond it means Redis lost writes since (a crash restored from an older file).
- `profiles`: per `members.profiles` partition, the next offset already written to Redis, so that a
  starting worker catches up from there instead of re-reading the registry.
- `owner_buckets`: the layout of the claim and request owner indexes (their bucket count), fixed for
  the life of the state: every process reads it from here (format 2; format 1 had a key per id).

`verdict` decides, before anything is consumed, whether the state may be used. It is pure: the Redis
and Kafka reads are the callers'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MARKER_FORMAT = 2
OWNER_BUCKETS_FIELD = "owner-buckets"
Partition = tuple[str, int]


def consumed_field(topic: str, partition: int) -> str:
    return f"c:{topic}:{partition}"


def profile_field(topic: str, partition: int) -> str:
    return f"p:{topic}:{partition}"


def parse_marker(fields: Mapping[str, str]) -> StateMarker:
    """The marker from its stored fields; an unknown format is an error, never a guess."""
    if fields.get("format") != str(MARKER_FORMAT) or not fields.get("epoch"):
        raise ValueError(
            f"the state marker has format {fields.get('format')!r}, epoch {fields.get('epoch')!r}; "
            f"this version reads format {MARKER_FORMAT}: upgrade the worker, or rebuild the state "
            f"(format 1 was written before the owner index was bucketed: {REBUILD_HINT})"
        )
    buckets = fields.get(OWNER_BUCKETS_FIELD, "")
    if not buckets.isdigit() or int(buckets) < 1:
        raise ValueError(f"the state marker's {OWNER_BUCKETS_FIELD} is {buckets!r}; {REBUILD_HINT}")
    marker = StateMarker(fields["epoch"], owner_buckets=int(buckets))
    for name, value in fields.items():
        kind, _, rest = name.partition(":")
        if kind in ("c", "p"):
            topic, _, partition = rest.rpartition(":")
            (marker.consumed if kind == "c" else marker.profiles)[(topic, int(partition))] = int(value)
    return marker


class StateLost(RuntimeError):
    """Redis no longer holds the state the committed offsets promise: stop, rebuild, restart."""


@dataclass(slots=True)
class StateMarker:
    epoch: str
    consumed: dict[Partition, int] = field(default_factory=dict)
    profiles: dict[Partition, int] = field(default_factory=dict)
    owner_buckets: int = 0


REBUILD_HINT = (
    "stop every worker and run `python -m worker rebuild` (it restores the state from claims.settled "
    "and accounts.ledger into an empty Redis and writes the marker), then start the workers"
)


def verdict(marker: StateMarker | None, committed: Mapping[Partition, tuple[int, str]]) -> str | None:
    """Why the worker must not consume with this marker and these committed offsets (offset, metadata
    per inbound partition of the consumer group), or None when the state can be trusted."""
    if marker is None:
        if not committed:
            return None  # a new deployment: nothing was ever consumed
        return (
            f"Redis holds no state marker, but the consumer group has committed offsets on "
            f"{len(committed)} partition(s): the settled claims, accumulators and balances are gone "
            f"(a new or flushed Redis, or one that crashed without its append-only file); {REBUILD_HINT}"
        )
    behind = []
    for (topic, partition), (offset, epoch) in sorted(committed.items()):
        if epoch and epoch != marker.epoch:
            return (
                f"the state in Redis (epoch {marker.epoch}) is not the one the consumer group committed "
                f"against (epoch {epoch} on {topic}[{partition}]): Redis was replaced or restored from "
                f"another deployment; {REBUILD_HINT}"
            )
        if marker.consumed.get((topic, partition), 0) < offset:
            behind.append(f"{topic}[{partition}] at {marker.consumed.get((topic, partition), 0)} < {offset}")
    if behind:
        return (
            f"the state in Redis is older than the committed offsets ({', '.join(behind[:5])}"
            f"{' …' if len(behind) > 5 else ''}): Redis lost acknowledged writes (restored from an older "
            f"file, or an asynchronous replica took over); {REBUILD_HINT}"
        )
    return None
