"""Kafka helpers for tests, the demo and the benchmark: publish inbound JSONL to the right topics,
collect outbound events, and run worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from worker.kafka import clients
from worker.settings import Settings


def settings_for(bootstrap: str) -> Settings:
    """The tooling's Kafka settings: this bootstrap, and the security settings of the environment
    (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*), like every other client."""
    return Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap)


def topic_and_key(line: bytes, settings: Settings) -> tuple[str, bytes | None]:
    """Where a producer would publish an inbound line, and its key (contracts.md §Topics)."""
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return settings.topic_claims, None
    if not isinstance(message, dict):
        return settings.topic_claims, None
    kind = str(message.get("type", ""))
    member = message.get("member_id")
    key = member.encode() if isinstance(member, str) else None
    if kind == "member.profile":
        return settings.topic_profiles, key
    if kind == "facility.registered":
        facility = message.get("facility_id")
        return settings.topic_facilities, facility.encode() if isinstance(facility, str) else None
    if kind.startswith("account."):
        return settings.topic_accounts, key
    return settings.topic_claims, key


async def produce(
    bootstrap: str, messages: Iterable[tuple[str, bytes | None, bytes]], linger_ms: int = 5
) -> int:
    producer = clients.producer(
        settings_for(bootstrap),
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
        max_request_size=4 << 20,  # room for an oversize (> 1 MiB) message in the poison tests
        acks="all",
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def produce_lines(bootstrap: str, settings: Settings, lines: Iterable[bytes]) -> int:
    return await produce(bootstrap, ((*topic_and_key(line, settings), line) for line in lines))


@dataclass
class Received:
    topic: str
    partition: int
    key: bytes | None
    event: dict[str, Any]
    timestamp_ms: int
    offset: int = -1


async def collect(
    bootstrap: str, topics: list[str], count: int, wait_seconds: float = 60.0
) -> list[Received]:
    """Read outbound topics from the beginning until `count` events arrived (or the timeout)."""
    consumer = clients.consumer(
        settings_for(bootstrap),
        *topics,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Received] = []
    try:
        deadline = time.monotonic() + wait_seconds
        while len(out) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                for r in records:
                    out.append(
                        Received(r.topic, r.partition, r.key, orjson.loads(r.value), r.timestamp, r.offset)
                    )
        return out
    finally:
        await consumer.stop()


def output_topics(settings: Settings) -> list[str]:
    return [settings.topic_settled, settings.topic_rejected, settings.topic_ledger, settings.topic_dlq]


class WorkerProcess:
    """`python -m worker run` (or another command, e.g. `gateway`) in a subprocess with the given
    environment; logs to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, command: str = "run") -> None:
        self.log_path = log_path
        self.env = {"WORKER_HEALTH_PORT": "0", **os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: float = 120.0) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            self.wait_for_log("ready:", wait_ready)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float, occurrences: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count(text) >= occurrences:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.1)
        raise TimeoutError(f"worker log has no '{text}' after {timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.terminate(30)
            if self.process.poll() is None:
                self.kill()
