"""Wire contracts of the claim settlement worker (../shared/spec/contracts.md).

Inbound and outbound messages are separate pydantic v2 models, each discriminated by `type`.
The worker and the tests validate and build messages with these same models; the JSON Schema
files in `contracts/schemas/` are generated from them (`python -m contracts.export`).
"""
