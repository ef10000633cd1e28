"""The pure domain core: rules.md as code and data. Imports nothing from Kafka or Redis, reads no
clock (the caller passes `now`) and does no I/O except loading the policy files at start-up."""
