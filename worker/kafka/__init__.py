"""The Kafka service: topics, reference-data feed, outcome publisher, batch handler, composition root."""
