"""State stores behind the engine's interface: in-memory (replay, tests) and Redis (the Kafka worker)."""
