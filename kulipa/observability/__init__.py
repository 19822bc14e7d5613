"""Health, readiness and Prometheus metrics for the shop, its workers and its callback listener."""
