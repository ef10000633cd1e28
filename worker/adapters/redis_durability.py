"""How durable a batch's Redis writes are before its answers go out (`WORKER_REDIS_DURABILITY`).

Redis acknowledges a write once it is in memory. An answer published on such an acknowledgement can
outlive the state behind it: after a crash (`appendfsync everysec` loses up to a second) or a failover
to an asynchronous replica, the worker would carry on from older state while the answer is already
out and the offset committed. So the store can wait, on the connection that wrote, until the server
says the writes are safe:

    none          no wait (development; a warning at start)
    local         the writes are fsynced to the node's append-only file: `WAITAOF 1 0` (Redis >= 7.2);
                  on older servers only `appendfsync always` gives this, and is then required
    replicas:N    N replicas acknowledged the writes (`WAIT N`), so a failover to one of them keeps them

`check` asks every primary what it is configured to do before the worker consumes anything, and
refuses (with what to change) when the level cannot be met: nothing is assumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

DURABILITY_PATTERN = r"^(none|local|replicas:[1-9][0-9]{0,2})$"


class DurabilityError(RuntimeError):
    """The configured durability cannot be met by this Redis: the worker must not start."""


class NotDurable(RuntimeError):
    """The server did not confirm a batch's writes in time: its answers must not be published yet."""


@dataclass(frozen=True, slots=True)
class Durability:
    level: str  # none | local | replicas
    replicas: int = 0
    timeout_ms: int = 2000
    wait_command: tuple[Any, ...] | None = None  # decided by `check`: sent after every write batch

    @classmethod
    def parse(cls, text: str, timeout_ms: int = 2000) -> Durability:
        if not re.fullmatch(DURABILITY_PATTERN, text):
            raise ValueError(f"WORKER_REDIS_DURABILITY must be none, local or replicas:N, not {text!r}")
        if text.startswith("replicas:"):
            return cls("replicas", int(text.split(":")[1]), timeout_ms)
        return cls(text, 0, timeout_ms)

    def confirm(self, reply: Any) -> None:
        """Check what the wait command answered; raise `NotDurable` when it falls short."""
        if self.wait_command is None:
            return
        if self.wait_command[0] == "WAITAOF":
            local, replicas = int(reply[0]), int(reply[1])
            if local < self.wait_command[1] or replicas < self.wait_command[2]:
                raise NotDurable(
                    f"WAITAOF confirmed {local} local and {replicas} replica fsyncs within "
                    f"{self.timeout_ms} ms; {self.wait_command[1]} and {self.wait_command[2]} needed"
                )
        elif int(reply) < self.replicas:
            raise NotDurable(
                f"WAIT: {int(reply)} of {self.replicas} replicas acknowledged in {self.timeout_ms} ms"
            )


def _version(info: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in str(info.get("redis_version", "0")).split(".")[:2])


async def _config(node: Any, name: str) -> str | None:
    """A configuration value, or None where CONFIG is disabled (managed services often rename it)."""
    try:
        reply = await node.execute_command("CONFIG", "GET", name)
    except ResponseError:
        return None
    if isinstance(reply, dict):
        value = reply.get(name.encode(), reply.get(name))
    else:
        value = reply[1] if len(reply) > 1 else None
    return value.decode() if isinstance(value, bytes) else value


async def check(durability: Durability, nodes: list[tuple[str, Any]]) -> Durability:
    """The durability with its wait command chosen, after asking each primary (name, client) how it
    is configured; raises `DurabilityError` saying what to change when the level cannot be met."""
    if durability.level == "none":
        return durability
    commands: set[tuple[Any, ...]] = set()
    for name, node in nodes:
        info = await node.execute_command("INFO", "server")
        info.update(await node.execute_command("INFO", "persistence"))
        info.update(await node.execute_command("INFO", "replication"))
        has_waitaof = _version(info) >= (7, 2)
        version = info.get("redis_version")
        if durability.level == "local":
            if int(info.get("aof_enabled", 0)) != 1:
                raise DurabilityError(
                    f"WORKER_REDIS_DURABILITY=local needs the append-only file, but Redis at {name} runs "
                    "with appendonly no: set `appendonly yes` (see deploy/), or choose "
                    "WORKER_REDIS_DURABILITY=none knowing that a Redis crash then loses settled claims"
                )
            if has_waitaof:
                commands.add(("WAITAOF", 1, 0, durability.timeout_ms))
                continue
            fsync = await _config(node, "appendfsync")
            if fsync != "always":
                raise DurabilityError(
                    f"WORKER_REDIS_DURABILITY=local: Redis {version} at {name} has no WAITAOF "
                    "(Redis >= 7.2), so only `appendfsync always` makes an acknowledged write durable; "
                    f"it runs with appendfsync {fsync or 'unknown (CONFIG is disabled)'}. "
                    "Set appendfsync always or upgrade Redis"
                )
            commands.add(("NONE",))  # every acknowledged write is already fsynced
        else:
            connected = int(info.get("connected_slaves", 0))
            if connected < durability.replicas:
                raise DurabilityError(
                    f"WORKER_REDIS_DURABILITY=replicas:{durability.replicas}: Redis at {name} has "
                    f"{connected} connected replica(s)"
                )
            commands.add(("WAIT", durability.replicas, durability.timeout_ms))
    if len(commands) > 1:
        raise DurabilityError(f"the Redis nodes differ in version or configuration: {sorted(commands)}")
    command = commands.pop() if commands else None
    if command == ("NONE",):
        command = None
    return Durability(durability.level, durability.replicas, durability.timeout_ms, command)
