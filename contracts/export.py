"""Write the JSON Schema of every contract model to contracts/schemas, the gateway's OpenAPI document
to contracts/openapi.json and the worker's AsyncAPI 3.0 document to contracts/asyncapi.json
(`python -m contracts.export`).

`--check` exits 1 when a checked-in schema differs from the models (the stale-schema test uses it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from contracts import openapi
from contracts.inbound import INBOUND
from contracts.outbound import MONITORING, OUTBOUND

SCHEMA_DIR = Path(__file__).parent / "schemas"


OPENAPI = Path(__file__).parent / "openapi.json"
ASYNCAPI = Path(__file__).parent / "asyncapi.json"


def schemas() -> dict[Path, dict[str, Any]]:
    from worker.kafka.asyncapi import document  # the worker's app builds it (FastStream)

    return {
        ASYNCAPI: document(),
        SCHEMA_DIR / "inbound.schema.json": INBOUND.json_schema(),
        SCHEMA_DIR / "outbound.schema.json": OUTBOUND.json_schema(mode="serialization"),
        SCHEMA_DIR / "monitoring.schema.json": MONITORING.json_schema(mode="serialization"),
        OPENAPI: openapi.document(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for path, schema in schemas().items():
        text = render(schema)
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale schema (run `python -m contracts.export`):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
