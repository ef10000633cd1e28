"""Operations (issue #11), without processes: settings errors, log format and redaction, and that
every Kafka client gets the security settings."""

from __future__ import annotations

import ast
import io
import logging
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from worker.kafka import clients
from worker.ops.logs import JsonFormatter, Redactor, TextFormatter
from worker.settings import Settings, explain, unknown_variables

ROOT = Path(__file__).resolve().parent.parent


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WORKER_PARTITIONS": "abc"}, "WORKER_PARTITIONS='abc'"),
        ({"WORKER_LOG_LEVEL": "verbose"}, "WORKER_LOG_LEVEL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL:"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI'"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(env: dict[str, str], named: str) -> None:
    for command in (["run"], ["gateway"], ["rebuild"], ["compact"]):
        done = _run(env, *command)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("configuration error: ") and named in lines[0], lines


def test_a_secret_is_never_echoed_in_a_settings_error() -> None:
    done = _run({"REDIS_URL": "localhost://:hunter2-secret@x"}, "run")
    assert done.returncode == 2 and "hunter2-secret" not in done.stderr
    with pytest.raises(ValidationError) as caught:
        Settings(REDIS_URL="nope://:hunter2-secret@x")
    assert not any("hunter2-secret" in line for line in explain(caught.value))


def test_unknown_worker_variables_are_named() -> None:
    env = {"WORKER_PARTITONS": "3", "WORKER_PARTITIONS": "3", "REDIS_URL": "redis://x", "OTHER": "1"}
    assert unknown_variables(env) == ["WORKER_PARTITONS"]


def test_help_lists_options_with_defaults() -> None:
    done = _run({}, "run", "--help")
    assert done.returncode == 0 and "README" in done.stdout
    done = _run({}, "rebuild", "--help")
    assert done.returncode == 0 and "--jobs" in done.stdout and "(default: " in done.stdout
    done = _run({}, "gateway", "--help")
    assert done.returncode == 0 and "default: 3600" in done.stdout and "README" in done.stdout


def _record(message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {
            "name": "worker.test",
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": message,
            "args": (),
            **extra,
        }
    )
    return record


def test_json_lines_carry_time_level_logger_event_and_facts() -> None:
    line = orjson.loads(
        JsonFormatter(Redactor()).format(_record("committed", topic="claims.inbound", partition=3))
    )
    assert {"time", "level", "logger", "event"} <= line.keys()
    assert (line["level"], line["logger"], line["event"]) == ("INFO", "worker.test", "committed")
    assert (line["topic"], line["partition"]) == ("claims.inbound", 3)


def test_secrets_are_masked_at_every_level() -> None:
    redact = Redactor(["s3cret-token"])
    for formatter in (JsonFormatter(redact), TextFormatter(redact)):
        for level in (logging.DEBUG, logging.INFO, logging.ERROR):
            text = formatter.format(_record("url redis://app:pa55word@redis:6379/0 key s3cret-token", level))
            assert "pa55word" not in text and "s3cret-token" not in text and "redis:6379" in text


def test_exception_messages_stay_out_of_info_and_above() -> None:
    try:
        raise KeyError("NC-M0000042")
    except KeyError:
        info = _record("failed", logging.ERROR, exc_info=sys.exc_info())
        debug = _record("failed", logging.DEBUG, exc_info=sys.exc_info())
    for formatter in (JsonFormatter(Redactor()), TextFormatter(Redactor())):
        shown = formatter.format(info)
        assert "KeyError" in shown and "NC-M0000042" not in shown
        assert "NC-M0000042" in formatter.format(debug)


def test_setup_logging_writes_json_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from worker.ops.logs import setup_logging

    setup_logging("INFO", "json", ["topsecret"])
    logging.getLogger("worker.x").info("hello topsecret", extra={"records": 5})
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert orjson.loads(err)["event"] == "hello ***" and orjson.loads(err)["records"] == 5
    logging.getLogger().handlers.clear()
    _ = io  # (the handler wrote to the captured stderr)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"security_protocol": None}),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, {"security_protocol": "SSL"}),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            },
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "u",
                "sasl_plain_password": "p",
            },
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            },
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256"},
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
        ),
    ],
)
async def test_kafka_options_follow_the_settings(env: dict[str, str], expected: dict[str, object]) -> None:
    options = clients.options(Settings(KAFKA_BOOTSTRAP_SERVERS="k:9093", **env))  # type: ignore[arg-type]
    assert options["bootstrap_servers"] == "k:9093"
    for key, value in expected.items():
        assert options.get(key) == value, key
    if str(expected.get("security_protocol", "")).endswith("SSL"):
        assert options["ssl_context"] is not None
    producer = clients.producer(Settings(KAFKA_BOOTSTRAP_SERVERS="k:9093", **env))  # type: ignore[arg-type]
    assert producer.client._security_protocol == (expected["security_protocol"] or "PLAINTEXT")


def test_no_kafka_client_is_built_outside_the_factory() -> None:
    """Every aiokafka client of the product goes through worker.kafka.clients (else it would miss
    the security settings); FastStream's brokers get `clients.security`."""
    clients_built, brokers = [], []
    for path in (ROOT / "worker").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                where = str(path.relative_to(ROOT))
                if name in {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}:
                    clients_built.append(where)
                elif name == "KafkaBroker":
                    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    brokers.append((where, keywords.get("security")))
    assert set(clients_built) == {"worker/kafka/clients.py"}
    assert sorted(brokers) == [
        ("worker/kafka/app.py", "clients.security(settings)"),
        ("worker/kafka/asyncapi.py", "clients.security(settings)"),
    ]


def test_the_asyncapi_document_is_the_apps_and_covers_every_topic_and_event() -> None:
    from contracts.export import ASYNCAPI
    from worker.kafka.app import create_app
    from worker.kafka.asyncapi import document

    checked_in = orjson.loads(ASYNCAPI.read_bytes())
    assert checked_in == document()
    app = create_app(Settings.model_construct())
    assert app.schema.to_specification().to_jsonable() == checked_in
    assert checked_in["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in checked_in["channels"].values()}
    assert addresses == {
        "claims.inbound",
        "accounts.inbound",
        "members.profiles",
        "facilities.registry",
        "claims.settled",
        "claims.rejected",
        "accounts.ledger",
        "claims.dlq",
        "monitoring.alerts",
    }
    text = ASYNCAPI.read_text()
    for name in (
        "ClaimSubmitted",
        "ClaimReversalRequested",
        "PaymentRequested",
        "MemberProfile",
        "FacilityRegistered",
        "ClaimSettled",
        "ClaimReversed",
        "ClaimRejected",
        "MonitoringAlert",
        "AccountCredited",
        "AccountDebited",
        "AccountRequestRejected",
        "DeadLetter",
        "MemberState",
    ):
        assert f'"{name}"' in text, name


def test_the_readme_settings_table_names_every_setting() -> None:
    from worker.settings import env_name

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Settings") : readme.index("### Delivery semantics")]
    for field in Settings.model_fields:
        name = env_name(field)
        short = "_" + name.removeprefix("WORKER_TOPIC_") if name.startswith("WORKER_TOPIC_") else None
        assert f"`{name}`" in table or (short and f"`{short}`" in table), name


def test_the_batch_histogram_counts_like_prometheus_clients() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from worker.ops.metrics import LATENCY_BUCKETS, BatchHistogram

    values = [0.0, 0.001, 0.0011, 0.02, 0.025, 0.5, 1.0, 7.0, 30.0, 31.0]
    mine, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("h_seconds", "h", LATENCY_BUCKETS)
    mine.register(batch)
    batch.observe_many(values[:4])
    batch.observe_many(values[4:])
    reference = Histogram("h_seconds", "h", buckets=LATENCY_BUCKETS, registry=theirs)
    for value in values:
        reference.observe(value)

    def lines(registry: CollectorRegistry) -> list[str]:
        return [x for x in generate_latest(registry).decode().splitlines() if "h_seconds_created" not in x]

    assert lines(mine) == lines(theirs)


def test_endpoints_hide_only_what_is_secret() -> None:
    plain = Settings(REDIS_URL="redis://127.0.0.1:6380/0")  # type: ignore[call-arg]
    assert plain.secret_values() == [] and "redis://127.0.0.1:6380/0" in plain.endpoints()
    with_password = Settings(REDIS_URL="rediss://claims:pa55-word@redis.example:6380/0")  # type: ignore[call-arg]
    assert with_password.secret_values() == ["pa55-word"]
    assert "pa55-word" not in with_password.endpoints() and "claims" not in with_password.endpoints()
    assert "rediss://redis.example:6380/0" in with_password.endpoints()
