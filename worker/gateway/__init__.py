"""The point-of-sale HTTP gateway (../shared/spec/gateway.md): settle, pre-settle, reverse and query
claims over HTTP in front of the Kafka worker. `python -m worker gateway`."""
