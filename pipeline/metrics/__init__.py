"""Prometheus metrics. Every metrics object takes a registry, so tests use a fresh one."""
