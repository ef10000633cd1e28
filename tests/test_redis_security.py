"""Redis security (issue #11): the worker, the gateway, rebuild and compact run against a
`redis-server` that speaks only TLS, asks for client certificates, and knows the product only as
the least-privilege ACL user of deploy/redis/claims.acl — on a single Redis and on Redis Cluster.
Redis's ACL LOG must then hold no refusal: the ACL grants all the product uses."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from tests.gateway_support import GatewayProcess, auth
from tests.kafka_support import Cluster, actual_streams, expected_streams, split_reference
from tests.tls_support import Pki, make_pki
from worker.local.kafka_io import WorkerProcess
from worker.local.services import Broker, create_cluster, free_port, wait_for_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "golden" / "pooling-nanchang.jsonl"
PASSWORD = "claims-test-password-0123"
ADMIN = "admin-test-password-0123"
_counter = itertools.count()


def _redis_version() -> tuple[int, int]:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = out.split("v=")[1].split(".")[:2]
    return int(major), int(minor)


class TlsRedis:
    def __init__(self, folder: Path, pki: Pki, cluster: bool) -> None:
        self.pki = pki
        self.folder = folder
        acl = (ROOT / "deploy" / "redis" / "claims.acl").read_text().replace("CHANGE-ME", PASSWORD)
        if _redis_version() < (7, 2):  # no WAITAOF before 7.2: `local` must read appendfsync (README)
            acl = acl.replace(" +waitaof", " +config|get")
        (folder / "users.acl").write_text(acl + f"user admin on >{ADMIN} ~* &* +@all\n")
        self.ports = [free_port(below=45000) for _ in range(3 if cluster else 1)]
        self.processes: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            node = folder / str(port)
            node.mkdir()
            extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--tls-cluster",
                "yes",
            ]
            self.processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        "0",
                        "--tls-port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--tls-cert-file",
                        str(pki.server_cert),
                        "--tls-key-file",
                        str(pki.server_key),
                        "--tls-ca-cert-file",
                        str(pki.ca),
                        "--tls-auth-clients",
                        "yes",
                        "--aclfile",
                        str(folder / "users.acl"),
                        "--dir",
                        str(node),
                        "--save",
                        "",
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                        "--logfile",
                        str(node / "redis.log"),
                        *(extra if cluster else []),
                    ],
                    start_new_session=True,
                )
            )
        for port, process in zip(self.ports, self.processes, strict=True):
            wait_for_port(port, process=process)
        if cluster:
            create_cluster(self.ports, self._cli())

    def _cli(self) -> list[str]:
        return [
            "redis-cli",
            "--tls",
            "--cacert",
            str(self.pki.ca),
            "--cert",
            str(self.pki.client_cert),
            "--key",
            str(self.pki.client_key),
            "--user",
            "admin",
            "--pass",
            ADMIN,
            "--no-auth-warning",
        ]

    @property
    def url(self) -> str:
        return f"rediss://claims:{PASSWORD}@127.0.0.1:{self.ports[0]}/0"

    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.url,
            "REDIS_SSL_CA_CERTS": str(self.pki.ca),
            "REDIS_SSL_CERTFILE": str(self.pki.client_cert),
            "REDIS_SSL_KEYFILE": str(self.pki.client_key),
            "WORKER_REDIS_CLUSTER": "true" if len(self.ports) > 1 else "false",
            "WORKER_REDIS_DURABILITY": "local",
        }

    def refusals(self) -> list[str]:
        out = []
        for port in self.ports:
            log = subprocess.run(
                [*self._cli(), "-p", str(port), "acl", "log"], capture_output=True, text=True, check=True
            ).stdout
            out += [f"{port}: {log}"] if log.strip() else []
        return out

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(10)


@pytest.fixture(params=["single", "cluster"])
def tls_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TlsRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is required (apt-get install redis-server)")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = TlsRedis(folder, make_pki(tmp_path), request.param == "cluster")
    yield server
    server.close()


async def test_tls_is_required_and_the_acl_user_is_limited(tls_redis: TlsRedis) -> None:
    pki = tls_redis.pki
    port = tls_redis.ports[0]
    no_cert = Redis(
        host="127.0.0.1",
        port=port,
        ssl=True,
        ssl_ca_certs=str(pki.ca),
        username="claims",
        password=PASSWORD,
        socket_timeout=5,
    )
    with pytest.raises(Exception):  # noqa: B017 (the TLS layer or the server refuses: either is right)
        await no_cert.ping()
    await no_cert.aclose()
    client: Redis | RedisCluster
    kwargs = {
        "ssl_ca_certs": str(pki.ca),
        "ssl_certfile": str(pki.client_cert),
        "ssl_keyfile": str(pki.client_key),
    }
    if len(tls_redis.ports) > 1:
        client = RedisCluster.from_url(tls_redis.url, **kwargs)
    else:
        client = Redis.from_url(tls_redis.url, **kwargs)
    assert await client.set("m:{X}:probe", b"1")
    for denied in (
        client.set("other-key", b"1"),
        client.flushall(),
        client.execute_command("CONFIG", "SET", "maxmemory", "1"),
    ):
        with pytest.raises(Exception, match=r"(?i)noperm|permission"):
            await denied
    await client.aclose()


async def test_worker_gateway_rebuild_and_compact_over_tls_with_the_acl_user(
    tls_redis: TlsRedis, broker: Broker, tmp_path: Path
) -> None:
    world = Cluster(broker.bootstrap_servers, tls_redis.url, f"tls{next(_counter)}", tmp_path)
    world.env.update(tls_redis.env())
    await world.create_topics()
    lines = EXAMPLE.read_bytes().splitlines()
    reference, rest = split_reference(lines)
    await world.publish(reference)
    worker = world.worker().start()
    await world.publish_in_order(rest)
    expected = expected_streams(EXAMPLE.with_name("pooling-nanchang.expected.jsonl"), world.settings)
    received = await world.wait_outputs(sum(len(v) for v in expected.values()))
    assert actual_streams(received) == expected

    gateway = GatewayProcess(world)
    gateway.start(wait_ready=0)
    gateway.wait_ready()
    claim = next(x for x in rest if b'"claim.submitted"' in x)
    body = {k: v for k, v in orjson.loads(claim).items() if k != "type"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        quote = await http.post("/v1/claims/presettle", json=body, headers=auth(body["facility_id"]))
        assert quote.status_code in (200, 422), quote.text
        status = await http.get(f"/v1/claims/{body['claim_id']}", headers=auth(body["facility_id"]))
        assert status.status_code == 200, status.text
    gateway.close()
    assert worker.terminate() == 0

    for command in ("rebuild", "compact"):
        tool = WorkerProcess(world.env, tmp_path / f"{command}.log", command=command).start(wait_ready=0)
        assert tool.process is not None and tool.process.wait(300) == 0, tool.log_text()[-2000:]
    assert PASSWORD not in worker.log_text() + gateway.log_text()
    assert tls_redis.refusals() == []
