"""Claim settlement worker: a pure adjudication core (`worker.domain`), state stores
(`worker.adapters`), the Kafka service (`worker.kafka`) and the offline replay tool (`worker.replay`)."""
