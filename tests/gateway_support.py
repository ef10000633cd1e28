"""Gateway processes for the integration tests: `python -m worker gateway` beside the worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.kafka_support import Cluster
from worker.gateway.auth import issue_token
from worker.local.kafka_io import WorkerProcess
from worker.local.services import free_port

SECRET = "test-secret-of-the-gateway-0123456789"


class GatewayProcess(WorkerProcess):
    def __init__(self, world: Cluster, **env: str) -> None:
        self.port = free_port()
        settings_env = {
            **world.env,
            "WORKER_GATEWAY_PORT": str(self.port),
            "WORKER_GATEWAY_JWT_SECRET": SECRET,
            **env,
        }
        super().__init__(settings_env, world.tmp / f"gateway-{self.port}.log", command="gateway")
        world.workers.append(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 204:
                    return
            except httpx.HTTPError:
                pass
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready:\n{self.log_text()[-3000:]}")


def token(facility_id: str, ttl: int = 600) -> str:
    return issue_token(SECRET, facility_id, ttl)


def auth(facility_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(facility_id)}"}


async def until_status(
    client: httpx.AsyncClient, url: str, facility: str, want: str, seconds: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(url, headers=auth(facility))
        if response.status_code == 200:
            body = response.json()
            if body["status"] == want:
                return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"status never became {want}: {body}")
