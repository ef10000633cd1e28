"""Local infrastructure for tests, the demo and the benchmark: a Kafka-protocol broker and Redis.

Not used by the worker itself (production gets its addresses from the environment).
"""
