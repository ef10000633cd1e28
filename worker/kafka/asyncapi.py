"""The worker's AsyncAPI 3.0 document (issue #11): every topic of contracts.md with its messages and
their JSON Schemas, from the contract models.

The worker's own subscriber takes raw record batches (it decodes them itself, for speed and for
dead-lettering), and the reference topics and outbound topics are read and written by plain aiokafka
clients; so the document is built on a describing broker with one typed channel per topic. It is the
app's specification (`create_app(...).schema`), exported beside the JSON Schemas by
`python -m contracts.export` and never served (no "try it out" route).
"""

from __future__ import annotations

from typing import Any, Union, get_args

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from contracts.inbound import AccountMessage, ClaimMessage, FacilityRegistered, MemberProfile
from contracts.outbound import MonitoringAlert, OutboundEvent
from worker.kafka import clients
from worker.kafka.publisher import route
from worker.settings import Settings

VERSION = "1.0.0"


def _inbound(settings: Settings) -> list[tuple[str, Any, str]]:
    return [
        (
            settings.topic_claims,
            ClaimMessage,
            "Claims and reversal requests from facilities; key = member id.",
        ),
        (settings.topic_accounts, AccountMessage, "Personal-account requests; key = member id."),
        (settings.topic_profiles, MemberProfile, "The member registry (compacted); key = member id."),
        (
            settings.topic_facilities,
            FacilityRegistered,
            "The facility registry (compacted); key = facility id.",
        ),
    ]


def _outbound(settings: Settings) -> dict[str, list[Any]]:
    """Output topic → the event models published there (contracts.md §Topics)."""
    topics = route(settings)
    out: dict[str, list[Any]] = {}
    for model in get_args(get_args(OutboundEvent)[0]):
        out.setdefault(topics[model.model_fields["type"].default], []).append(model)
    return out


def specification(settings: Settings) -> AsyncAPI:
    broker = KafkaBroker(settings.kafka_bootstrap_servers, security=clients.security(settings))
    for topic, payload, description in _inbound(settings):

        async def consume(message: Any) -> None:  # documents the payload; never started
            raise NotImplementedError

        consume.__annotations__["message"] = payload
        broker.subscriber(topic, title=f"{topic}:consume", description=description)(consume)
    for topic, models in _outbound(settings).items():
        schema = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007 (a runtime union)
        names = ", ".join(m.model_fields["type"].default for m in models)
        broker.publisher(topic, schema=schema, title=f"{topic}:publish", description=f"Events: {names}.")
    broker.publisher(
        settings.topic_alerts,
        schema=MonitoringAlert,
        title=f"{settings.topic_alerts}:publish",
        description="Early-warning alerts on facilities' outpatient costs (python -m worker alerts); key ="
        " facility id.",
    )
    return AsyncAPI(
        broker,
        title="claims-worker",
        version=VERSION,
        description="Outpatient claim settlement (职工医保门诊共济): the topics of the worker and the books.",
        schema_version="3.0.0",
    )


def document(settings: Settings | None = None) -> dict[str, Any]:
    """The document for the default topic names and a local broker (the checked-in copy)."""
    chosen = settings or Settings.model_construct()
    return specification(chosen).to_specification().to_jsonable()  # type: ignore[no-any-return]
