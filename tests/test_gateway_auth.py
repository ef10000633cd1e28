"""Bearer tokens at the gateway (issue #9 §2): what is refused with 401, what is accepted.

In process, without Kafka: the token is checked before anything else, so an accepted token reaches
the not-yet-started gateway (503) and a refused one never does (401).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from worker.gateway.app import create_gateway, wait_seconds
from worker.gateway.auth import issue_token
from worker.settings import Settings

SECRET = "hs-secret-for-tests-0123456789abcdef"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _client(public_key: str | None) -> httpx.AsyncClient:
    settings = Settings(gateway_jwt_secret=SECRET, gateway_jwt_public_key=public_key)  # type: ignore[arg-type]
    app = create_gateway(settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest_asyncio.fixture
async def rsa_gateway() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(_pem(RSA_KEY)) as client:
        yield client


@pytest_asyncio.fixture
async def ec_gateway() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(_pem(EC_KEY)) as client:
        yield client


def _claims(sub: str = "NC-H3", exp_in: int = 600) -> dict[str, object]:
    return {"sub": sub, "exp": int(time.time()) + exp_in}


def _unsigned(claims: dict[str, object]) -> str:
    return jwt.encode(claims, None, algorithm="none")


ENDPOINTS = [
    ("POST", "/v1/claims/presettle"),
    ("POST", "/v1/claims"),
    ("POST", "/v1/claims/C1/reversal"),
    ("GET", "/v1/claims/C1"),
]


@pytest.mark.parametrize(
    ("why", "header"),
    [
        ("no token", None),
        ("not bearer", "Basic dXNlcjpwYXNz"),
        ("empty bearer", "Bearer "),
        ("malformed", "Bearer not.a.jwt"),
        ("wrong signature", "Bearer " + jwt.encode(_claims(), "another-secret-0123456789abcdef-0", "HS256")),
        ("alg none", "Bearer " + _unsigned(_claims())),
        ("expired beyond the leeway", "Bearer " + jwt.encode(_claims(exp_in=-31), SECRET, "HS256")),
        ("no exp", "Bearer " + jwt.encode({"sub": "NC-H3"}, SECRET, "HS256")),
        ("sub not an id", "Bearer " + jwt.encode(_claims(sub="NC H3"), SECRET, "HS256")),
        ("HS384 not accepted", "Bearer " + jwt.encode(_claims(), SECRET, "HS384")),
        ("RS256 without a public key configured", "Bearer " + jwt.encode(_claims(), RSA_KEY, "RS256")),
    ],
)
async def test_refused_tokens_answer_401_on_every_endpoint(why: str, header: str | None) -> None:
    async with _client(None) as client:
        for method, path in ENDPOINTS:
            headers = {"Authorization": header} if header else {}
            response = await client.request(method, path, headers=headers, content=b"{}")
            assert response.status_code == 401, (why, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.headers["content-type"] == "application/problem+json"
            assert set(response.json()) == {"type", "title", "status", "detail"}


async def test_accepted_tokens_reach_the_gateway(rsa_gateway: httpx.AsyncClient) -> None:
    for token in (
        issue_token(SECRET, "NC-H3"),
        jwt.encode(_claims(exp_in=-20), SECRET, "HS256"),  # expired, inside the 30 s leeway
        jwt.encode(_claims(), RSA_KEY, "RS256"),
    ):
        response = await rsa_gateway.get("/v1/claims/C1", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 503, response.text  # accepted; the gateway is not started here


async def test_es256_and_no_algorithm_confusion(
    ec_gateway: httpx.AsyncClient, rsa_gateway: httpx.AsyncClient
) -> None:
    good = jwt.encode(_claims(), EC_KEY, "ES256")
    assert (
        await ec_gateway.get("/v1/claims/C1", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 503

    # HS/RS confusion: an HS256 token whose "secret" is the RSA public key PEM must not verify
    # (signed by hand: PyJWT itself refuses to use a PEM key as an HMAC secret)
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(_claims()).encode())
    signature = hmac.new(_pem(RSA_KEY).encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    confused = f"{head}.{body}.{b64(signature)}"
    answer = await rsa_gateway.get("/v1/claims/C1", headers={"Authorization": f"Bearer {confused}"})
    assert answer.status_code == 401
    # an RS256 token presented to a gateway whose public key is EC
    rs = jwt.encode(_claims(), RSA_KEY, "RS256")
    assert (
        await ec_gateway.get("/v1/claims/C1", headers={"Authorization": f"Bearer {rs}"})
    ).status_code == 401


async def test_health_and_openapi_need_no_token(rsa_gateway: httpx.AsyncClient) -> None:
    assert (await rsa_gateway.get("/livez")).status_code == 204
    ready = await rsa_gateway.get("/readyz")
    assert ready.status_code == 503 and "not" in ready.json()["detail"]
    document = await rsa_gateway.get("/openapi.json")
    assert document.status_code == 200 and document.json()["openapi"] == "3.1.0"
    assert (await rsa_gateway.get("/docs")).status_code == 404  # no "try it out" page


@pytest.mark.parametrize(
    ("prefer", "seconds"),
    [
        (None, 3.0),
        ("wait=5", 5.0),
        ("respond-async, wait=100", 30.0),
        ("wait=-4", 0.0),
        ("wait=abc", 3.0),
        ("wait=1.5", 3.0),
        ("handling=lenient; wait=0", 0.0),
    ],
)
def test_prefer_wait_is_clamped_and_non_integers_ignored(prefer: str | None, seconds: float) -> None:
    assert wait_seconds(prefer, 3.0) == seconds


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified tokens are remembered, but their expiry (with the leeway) is checked every time."""
    from worker.gateway.auth import TokenVerifier, Unauthorized

    verifier = TokenVerifier(SECRET, None)
    header = "Bearer " + jwt.encode(_claims(exp_in=-25), SECRET, "HS256")  # inside the leeway
    assert verifier.facility(header) == "NC-H3"
    assert verifier.facility(header) == "NC-H3"  # remembered
    later = time.time() + 10
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Unauthorized, match="expired"):
        verifier.facility(header)
