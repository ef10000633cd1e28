"""The gateway's OpenAPI 3.1 document (../shared/spec/gateway.md), built from the contract models.

Served by the gateway at `GET /openapi.json` and checked in as `contracts/openapi.json`
(`python -m contracts.export`; a test fails when it is stale). The paths are written here, the
schemas come from the same pydantic models the gateway and the worker validate and build with.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from contracts.gateway import (
    ClaimPresettled,
    ClaimStatus,
    Pending,
    Problem,
    ReconcileBody,
    Reconciliation,
    ReversalBody,
    Statement,
)
from contracts.inbound import ClaimSubmitted
from contracts.outbound import ClaimRejected, ClaimReversed, ClaimSettled

REF = "#/components/schemas/{model}"
VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def _problem(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, **_json(_ref("Problem"), "application/problem+json")}
    if headers:
        out["headers"] = headers
    return out


_UNAUTHORIZED = _problem(
    "missing, malformed, badly signed or expired token",
    **{"WWW-Authenticate": {"schema": {"type": "string"}}},
)
_CLAIM_ID = {
    "name": "claim_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,64}$"},
}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`wait=N` (RFC 7240): seconds to wait for the worker's answer, clamped to 0…30",
    "schema": {"type": "string"},
}
_PENDING = {
    "description": "published, not answered yet: learn the outcome at Location",
    **_json(_ref("Pending")),
    "headers": {"Location": {"schema": {"type": "string"}}},
}
_UNAVAILABLE = _problem(
    "Kafka did not acknowledge the request; sending it again is safe",
    **{"Retry-After": {"schema": {"type": "string"}}},
)


def _claim_body() -> dict[str, Any]:
    return {"required": True, **_json(_ref("ClaimBody"))}


def paths() -> dict[str, Any]:
    bad_claim = {
        "400": _problem("the body is not a JSON object, or has no valid claim_id"),
        "401": _UNAUTHORIZED,
        "403": _problem("the claim's facility_id is not the token's facility"),
        "413": _problem("the body is larger than 1 MiB"),
        "422": {"description": "the claim.rejected answer", **_json(_ref("ClaimRejected"))},
    }
    return {
        "/v1/claims/presettle": {
            "post": {
                "operationId": "presettle",
                "summary": "Quote a claim on the member's current state (2206); changes nothing",
                "requestBody": _claim_body(),
                "responses": {
                    "200": {
                        "description": "the quote, or the stored settlement of the same claim",
                        **_json({"oneOf": [_ref("ClaimPresettled"), _ref("ClaimSettled")]}),
                    },
                    **bad_claim,
                },
            }
        },
        "/v1/claims": {
            "post": {
                "operationId": "settle",
                "summary": "Settle a claim (2207)",
                "parameters": [_PREFER],
                "requestBody": _claim_body(),
                "responses": {
                    "200": {"description": "the claim.settled event", **_json(_ref("ClaimSettled"))},
                    "202": _PENDING,
                    **bad_claim,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/v1/claims/{claim_id}/reversal": {
            "post": {
                "operationId": "reverse",
                "summary": "Reverse a settled claim (2208)",
                "parameters": [_CLAIM_ID, _PREFER],
                "requestBody": {"required": True, **_json(_ref("ReversalBody"))},
                "responses": {
                    "200": {"description": "the claim.reversed event", **_json(_ref("ClaimReversed"))},
                    "202": _PENDING,
                    "400": _problem("the body is not a JSON object"),
                    "401": _UNAUTHORIZED,
                    "404": _problem("the path's claim id is not a valid id"),
                    "422": {"description": "the claim.rejected answer", **_json(_ref("ClaimRejected"))},
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/v1/claims/{claim_id}": {
            "get": {
                "operationId": "claimStatus",
                "summary": "The outcome of a claim (5203)",
                "parameters": [_CLAIM_ID],
                "responses": {
                    "200": {"description": "the claim's status", **_json(_ref("ClaimStatus"))},
                    "401": _UNAUTHORIZED,
                    "404": _problem("no such claim of this facility"),
                },
            }
        },
        "/v1/statements": {
            "get": {
                "operationId": "statement",
                "summary": "The facility's totals over settlement dates from..to (3201), from the records",
                "parameters": [
                    {
                        "name": name,
                        "in": "query",
                        "required": True,
                        "description": "a China date (UTC+08:00); at most 366 days from..to",
                        "schema": {"type": "string", "format": "date"},
                    }
                    for name in ("from", "to")
                ],
                "responses": {
                    "200": {"description": "the statement", **_json(_ref("Statement"))},
                    "400": _problem("from or to missing, not a date, reversed or more than 366 days apart"),
                    "401": _UNAUTHORIZED,
                    "503": _problem(
                        "the records database is not configured or not reachable",
                        **{"Retry-After": {"schema": {"type": "string"}}},
                    ),
                },
            }
        },
        "/v1/statements/reconcile": {
            "post": {
                "operationId": "reconcile",
                "summary": "Compare the facility's own records with ours, claim by claim (3202)",
                "requestBody": {"required": True, **_json(_ref("ReconcileBody"))},
                "responses": {
                    "200": {"description": "the mismatches, if any", **_json(_ref("Reconciliation"))},
                    "400": _problem("the body is not a JSON object"),
                    "401": _UNAUTHORIZED,
                    "413": _problem("the body is larger than 32 MiB"),
                    "422": _problem(
                        "a field is invalid, the period is not valid, or a claim is listed twice"
                    ),
                    "503": _problem(
                        "the records database is not configured or not reachable",
                        **{"Retry-After": {"schema": {"type": "string"}}},
                    ),
                },
            }
        },
        "/livez": {
            "get": {
                "operationId": "livez",
                "summary": "The process runs",
                "security": [],
                "responses": {"204": {"description": "alive"}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Kafka and Redis reachable, the facility registry read to its end",
                "security": [],
                "responses": {
                    "204": {"description": "ready"},
                    "503": _problem("what is missing"),
                },
            }
        },
    }


def _claim_body_schema(claim: dict[str, Any]) -> dict[str, Any]:
    """`ClaimSubmitted` with `type` optional: the gateway adds it."""
    body = dict(claim)
    body["required"] = [name for name in claim.get("required", []) if name != "type"]
    body["title"] = "ClaimBody"
    return body


def document() -> dict[str, Any]:
    models = [
        (ClaimSubmitted, "validation"),
        (ReversalBody, "validation"),
        (ClaimSettled, "serialization"),
        (ClaimPresettled, "serialization"),
        (ClaimReversed, "serialization"),
        (ClaimRejected, "serialization"),
        (ClaimStatus, "serialization"),
        (Pending, "serialization"),
        (Problem, "serialization"),
        (Statement, "serialization"),
        (ReconcileBody, "validation"),
        (Reconciliation, "serialization"),
    ]
    _, top = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(top["$defs"])
    schemas["ClaimBody"] = _claim_body_schema(schemas["ClaimSubmitted"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Claim settlement point-of-sale gateway",
            "version": VERSION,
            "description": "Settle, pre-settle, reverse and query outpatient claims; statements and"
            " reconciliation for facilities (gateway.md).",
        },
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
