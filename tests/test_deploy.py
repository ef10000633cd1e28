"""deploy/ holds valid files: a compose file for Kafka (KRaft) + Redis + three workers, and a Dockerfile."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import ROOT


def gateway_database(services: dict[str, Any]) -> str:
    url: str = services["gateway"]["environment"]["DATABASE_URL"]
    return url


def test_compose_file_describes_kafka_redis_and_three_workers() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "postgres", "worker", "gateway", "records"}
    records = services["records"]
    assert records["entrypoint"] == ["claims-worker", "records"]
    assert records["environment"]["DATABASE_URL"].startswith("postgresql://claims:")
    assert "@postgres:5432/" in gateway_database(services)
    assert (
        f"127.0.0.1:{records['environment']['WORKER_HEALTH_PORT']}/readyz"
        in records["healthcheck"]["test"][-1]
    )
    gateway = services["gateway"]
    assert gateway["entrypoint"] == ["claims-worker", "gateway"]
    assert gateway["environment"]["WORKER_GATEWAY_HOST"] == "0.0.0.0"
    assert "WORKER_GATEWAY_JWT_SECRET" in gateway["environment"]
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 3
    assert worker["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert worker["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert int(worker["environment"]["WORKER_PARTITIONS"]) >= worker["deploy"]["replicas"]
    assert (ROOT / "deploy" / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve().is_file()
    port = worker["environment"]["WORKER_HEALTH_PORT"]
    assert f"127.0.0.1:{port}/readyz" in worker["healthcheck"]["test"][-1]  # urlopen fails on a 503
    assert (
        f"127.0.0.1:{gateway['environment']['WORKER_GATEWAY_PORT']}/readyz"
        in gateway["healthcheck"]["test"][-1]
    )


def test_dockerfile_copies_existing_paths_and_runs_the_worker() -> None:
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert 'ENTRYPOINT ["claims-worker", "run"]' in lines
