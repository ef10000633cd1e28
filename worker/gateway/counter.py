"""What the gateway does for a facility's request, without HTTP: validate, scope, quote, publish and
wait, and answer a status query. The routes (`worker.gateway.app`) only translate to and from HTTP.

Quotes run the worker's engine on the member's current state through the same store port, read only.
Settlements and reversals are published on `claims.inbound` (key: member id) with a fresh
`correlation_id` header and answered by the worker's record carrying that header (`replies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from contracts.gateway import Pending, Problem
from contracts.inbound import ClaimReversalRequested, ClaimSubmitted, FacilityRegistered
from contracts.types import ID_RE
from contracts.wire import Emitted, dumps, emit, without_member_state
from worker.adapters.redis_store import message_digest
from worker.adapters.request_log import Logged, RequestLog
from worker.clock import now_text
from worker.domain.claims import rejection_event, request_digest
from worker.domain.engine import Context
from worker.domain.errors import Code, Rejection
from worker.domain.policy import PolicyBook
from worker.gateway.replies import Reply, ReplyRouter, new_correlation_id
from worker.intake import MAX_MESSAGE_BYTES, Source, decode, parse_json
from worker.kafka.publisher import CORRELATION_HEADER
from worker.ports import StateStore, Wants
from worker.quoting import quote
from worker.settings import Settings

log = logging.getLogger("worker.gateway")
_VALIDATING = Source("gateway", 0, 0)


@dataclass(slots=True)
class Answer:
    """An HTTP answer: status, JSON body bytes, media type and extra headers."""

    status: int
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def problem(status: int, title: str, detail: str, **headers: str) -> Answer:
    body = dumps(Problem.build(type="about:blank", title=title, status=status, detail=detail))
    return Answer(status, body, "application/problem+json", headers)


def _event(status: int, event: Emitted) -> Answer:
    return Answer(status, event.data)


class Counter:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        policies: PolicyBook,
        facilities: Mapping[str, FacilityRegistered],
        producer: AIOKafkaProducer,
        replies: ReplyRouter,
        requests: RequestLog,
    ) -> None:
        self.settings = settings
        self.store = store
        self.policies = policies
        self.facilities = facilities
        self.producer = producer
        self.replies = replies
        self.requests = requests

    # ---------------------------------------------------------------- claims in

    def read_claim(self, body: bytes, facility_id: str, now: str) -> tuple[ClaimSubmitted, bytes] | Answer:
        """The claim of a request body and the bytes to publish, or the answer refusing it:
        400 (not a JSON object, no valid claim id), 422 `INVALID_PAYLOAD`, 403 (another facility's)."""
        if len(body) > MAX_MESSAGE_BYTES:
            return problem(413, "Payload Too Large", "a claim is at most 1 MiB")
        data = _json_object(body)
        if isinstance(data, Answer):
            return data
        claim_id = data.get("claim_id")
        if not isinstance(claim_id, str) or not ID_RE.fullmatch(claim_id):
            return problem(400, "Bad Request", "the body has no valid claim_id")
        raw = body.strip()
        if "type" not in data:  # `type` may be omitted: publish the claim with it
            raw = b'{"type":"claim.submitted",' + raw[1:]
        elif data["type"] != "claim.submitted":
            member = data.get("member_id")
            error = Rejection(Code.INVALID_PAYLOAD, "type: must be claim.submitted", "type")
            event = rejection_event(
                "claim.submitted",
                claim_id,
                member if isinstance(member, str) else None,
                error,
                message_digest(raw).decode(),
                now,
            )
            return _event(422, emit(event))
        decoded = decode(raw, _VALIDATING, now)
        message = decoded.message
        if message is None:
            answer = decoded.events[0]
            if answer.type == "dead_letter":
                return problem(400, "Bad Request", "the body is not a JSON object the contract can read")
            return _event(422, answer)
        assert isinstance(message, ClaimSubmitted)
        if message.facility_id != facility_id:
            return problem(403, "Forbidden", "a facility settles only claims of its own facility_id")
        return message, raw

    # ---------------------------------------------------------------- presettle (2206)

    async def quote(self, claim: ClaimSubmitted, now: str) -> Answer:
        """The settlement the worker would make now, on the member's current state; writes nothing."""
        decision = await quote(self.store, claim, Context(self.policies, self.facilities, now))
        event = decision.events[0]
        if event.type != "claim.settled":
            return _event(422, event)
        if decision.repeated:  # settled before with the same content: the stored settlement
            return Answer(200, without_member_state(event.data))
        presettled: dict[str, Any] = orjson.loads(event.data)
        del presettled["event_id"], presettled["settled_at"]
        presettled["type"] = "claim.presettled"
        presettled["quoted_at"] = now
        return Answer(200, orjson.dumps(presettled))

    # ---------------------------------------------------------------- settle (2207) and reverse (2208)

    async def submit(self, claim: ClaimSubmitted, raw: bytes, facility_id: str, wait: float) -> Answer:
        return await self._publish_and_wait(claim.claim_id, claim.member_id, raw, facility_id, wait, None)

    def read_reversal(
        self, claim_id: str, body: bytes, facility_id: str, now: str
    ) -> tuple[ClaimReversalRequested, bytes] | Answer:
        """The reversal request for a path id and body: 400 (not a JSON object), 422 `INVALID_PAYLOAD`."""
        data = _json_object(body)
        if isinstance(data, Answer):
            return data
        message = {
            "type": "claim.reversal_requested",
            "claim_id": claim_id,
            "member_id": data.get("member_id"),
            "reason": data.get("reason"),
            "requested_at": data.get("requested_at", now),
            "facility_id": facility_id,
        }
        raw = orjson.dumps(message)
        decoded = decode(raw, _VALIDATING, now)
        if decoded.message is None:
            return _event(422, decoded.events[0])
        assert isinstance(decoded.message, ClaimReversalRequested)
        return decoded.message, raw

    async def reverse(
        self, request: ClaimReversalRequested, raw: bytes, facility_id: str, wait: float
    ) -> Answer:
        return await self._publish_and_wait(
            request.claim_id, request.member_id, raw, facility_id, wait, request
        )

    async def _publish_and_wait(
        self,
        claim_id: str,
        member_id: str,
        raw: bytes,
        facility_id: str,
        wait: float,
        reversal: ClaimReversalRequested | None,
    ) -> Answer:
        correlation = new_correlation_id()
        reply = self.replies.expect(correlation)
        topic = self.settings.topic_claims
        try:
            sent = await asyncio.wait_for(
                self.producer.send_and_wait(
                    topic, raw, key=member_id.encode(), headers=[(CORRELATION_HEADER, correlation)]
                ),
                self.settings.gateway_publish_timeout_seconds,
            )
        except Exception as exc:  # not acknowledged: the client may send the same request again
            self.replies.forget(correlation)
            log.warning("publish not acknowledged (%s); answering 503", type(exc).__name__)
            return problem(
                503,
                "Service Unavailable",
                "Kafka did not acknowledge the request; send it again",
                **{"Retry-After": "1"},
            )
        kind = "claim.reversal_requested" if reversal is not None else "claim.submitted"
        source = Source(topic, sent.partition, sent.offset)
        logged = self.requests.add(
            claim_id, facility_id, Logged(time.time(), kind, member_id, source, message_digest(raw))
        )
        try:
            answer = await asyncio.wait_for(asyncio.shield(reply), wait) if wait > 0 else None
        except TimeoutError:
            answer = None
        if answer is None:
            self.replies.forget(correlation)
            with contextlib.suppress(TimeoutError):  # a status query after the 202 must find it
                await asyncio.wait_for(asyncio.shield(logged), 2)
            return Answer(
                202,
                dumps(Pending.build(claim_id=claim_id, status="pending")),
                headers={"Location": f"/v1/claims/{claim_id}"},
            )
        return self._answer(answer, reversal)

    def _answer(self, reply: Reply, reversal: ClaimReversalRequested | None) -> Answer:
        if reply.topic == self.settings.topic_settled:
            return Answer(200, without_member_state(reply.value))
        if reply.topic == self.settings.topic_rejected:
            if reversal is not None and b'"FACILITY_MISMATCH"' in reply.value:
                return _event(422, emit(_unknown_claim(reversal)))
            return Answer(422, reply.value)
        return problem(500, "Internal Server Error", "the worker could not decide this request")

    # ---------------------------------------------------------------- status (5203)

    async def status(self, claim_id: str, facility_id: str) -> Answer:
        """gateway.md: `reversed` / `settled` from the state, else `pending`, else `rejected`; another
        facility's claim is a claim that does not exist."""
        record = await self.store.find_claim(claim_id)
        if record is not None and record.facility_id == facility_id:
            settlement = orjson.Fragment(without_member_state(record.settled.data))
            reversal = (
                orjson.Fragment(without_member_state(record.reversed.data))
                if record.reversed is not None
                else None
            )
            body = {
                "claim_id": claim_id,
                "status": "reversed" if reversal is not None else "settled",
                "settlement": settlement,
                "reversal": reversal,
                "rejection": None,
            }
            return Answer(200, orjson.dumps(body))
        logged = await self.requests.recent(claim_id, facility_id)
        answers = await self._worker_answers(logged)
        pending = False
        rejection: bytes | None = None
        for entry in logged:
            answer = entry.answer if entry.source is None else answers.get(entry.source)
            if answer is None:
                pending = True
            elif entry.request_type == "claim.submitted" and orjson.loads(answer)["type"] == "claim.rejected":
                rejection = answer
        if not pending and rejection is None:
            return problem(404, "Not Found", f"no claim {claim_id} of this facility")
        body = {
            "claim_id": claim_id,
            "status": "pending" if pending else "rejected",
            "settlement": None,
            "reversal": None,
            "rejection": orjson.Fragment(rejection) if rejection is not None and not pending else None,
        }
        return Answer(200, orjson.dumps(body))

    async def _worker_answers(self, logged: list[Logged]) -> dict[Source, bytes]:
        """The worker's stored answer to each published request (a rejection or a dead letter; a
        settlement or reversal is in the claim's record), keyed by where the request was published."""
        wants: dict[str, Wants] = {}
        for entry in logged:
            if entry.source is not None and entry.member_id is not None:
                wants.setdefault(entry.member_id, Wants()).sources.append(entry.source)
        if not wants:
            return {}
        found: dict[Source, bytes] = {}
        loaded = await self.store.load(wants)
        digests = {e.source: e.digest for e in logged if e.source is not None}
        for snapshot in loaded.values():
            for source, (digest, events) in snapshot.answered.items():
                if digests.get(source) == digest and events:
                    found[source] = events[0].data
        return found


def _json_object(body: bytes) -> dict[str, Any] | Answer:
    """A body's JSON object, or the 400 for a body that is not one."""
    try:
        data = parse_json(body)
    except (ValueError, RecursionError):
        return problem(400, "Bad Request", "the body is not JSON")
    if not isinstance(data, dict):
        return problem(400, "Bad Request", "the body is not a JSON object")
    return data


def _unknown_claim(request: ClaimReversalRequested) -> Any:
    """Another facility's claim answers exactly like a claim that does not exist (gateway.md)."""
    error = Rejection(Code.UNKNOWN_CLAIM, f"claim {request.claim_id} was never settled", "claim_id")
    return rejection_event(
        request.type, request.claim_id, request.member_id, error, request_digest(request), now_text()
    )
