"""Exactly once into PostgreSQL: a batch's rows and its consumer offsets in one transaction.

Rows are copied (binary COPY) into temporary staging tables and inserted from there, event tables with
`ON CONFLICT (event_id) DO NOTHING` (a record read twice adds nothing), reference tables keeping the
last record per key. The offsets are fenced: the transaction commits only if every partition's stored
offset is still the one this writer last saw, so a consumer that lost a partition in a rebalance cannot
move its offset back or overwrite newer reference data; it gets `Fenced` and seeks again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import asyncpg

from worker.records.rows import COLUMNS, KEYED, Rows

TopicPartition = tuple[str, int]


class Fenced(Exception):
    """Another consumer moved one of this batch's partitions: nothing was written."""


class RecordsWriter:
    def __init__(self, connection: asyncpg.Connection, group: str) -> None:
        self.connection = connection
        self.group = group
        self.expected: dict[TopicPartition, int | None] = {}
        """The stored next offset of each partition as this writer last saw or wrote it."""
        self._staged = False

    async def stored(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The stored next offsets (None: nothing stored), remembered as what the next write expects."""
        wanted = list(partitions)
        found = await self._offsets(wanted, lock=False)
        out = {tp: found.get(tp) for tp in wanted}
        self.expected.update(out)
        return out

    async def _offsets(self, wanted: list[TopicPartition], lock: bool) -> dict[TopicPartition, int]:
        """The stored next offsets of these partitions (`lock`: row locks until the transaction ends)."""
        rows = await self.connection.fetch(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1"
            " AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))"
            + (" FOR UPDATE" if lock else ""),
            self.group,
            [t for t, _ in wanted],
            [p for _, p in wanted],
        )
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def _stage(self) -> None:
        if self._staged:
            return
        for table in COLUMNS:
            await self.connection.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} (LIKE {table} INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
        self._staged = True

    async def write(
        self,
        rows: Rows,
        next_offsets: dict[TopicPartition, int],
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """Write the rows and move the partitions to `next_offsets`, all or nothing (`before_commit`:
        fault injection, called with everything written and nothing committed)."""
        await self._stage()
        async with self.connection.transaction():
            await self._fence(next_offsets)
            for table, table_rows in rows.tables.items():
                if not table_rows:
                    continue
                key = KEYED.get(table)
                if key is not None:  # the last record per key (one key lives on one partition)
                    table_rows = list({row[0]: row for row in table_rows}.values())
                await self.connection.copy_records_to_table(
                    f"stage_{table}", records=table_rows, columns=COLUMNS[table]
                )
                columns = ", ".join(f'"{c}"' for c in COLUMNS[table])
                if key is None:
                    conflict = "ON CONFLICT (event_id) DO NOTHING"
                else:
                    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[table] if c != key)
                    conflict = f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
                await self.connection.execute(
                    f"INSERT INTO {table} ({columns}) SELECT {columns} FROM stage_{table} {conflict}"
                )
            if rows.unreadable:
                await self.connection.executemany(
                    'INSERT INTO unreadable_events (topic, partition, "offset", error, payload)'
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    rows.unreadable,
                )
            await self.connection.execute(
                "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)"
                " SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])"
                " ON CONFLICT (consumer_group, topic, partition)"
                " DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
                self.group,
                [t for t, _ in next_offsets],
                [p for _, p in next_offsets],
                list(next_offsets.values()),
            )
            if before_commit is not None:
                before_commit()
        self.expected.update(next_offsets)

    async def _fence(self, next_offsets: dict[TopicPartition, int]) -> None:
        """Lock the batch's offset rows; `Fenced` unless each is what this writer expects."""
        wanted = list(next_offsets)
        found = await self._offsets(wanted, lock=True)
        for tp in wanted:
            if found.get(tp) != self.expected.get(tp):
                raise Fenced(f"{tp[0]}[{tp[1]}] moved to {found.get(tp)} by another consumer")
