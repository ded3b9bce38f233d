"""What operators see of the API: Prometheus metrics, request ids, access and JSON log lines."""
