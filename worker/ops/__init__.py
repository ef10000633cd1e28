"""What operators see of every long-running process: structured logs, health routes and metrics."""
