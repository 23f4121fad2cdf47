"""Kafka connectivity: the embedded broker, client configuration, topic admin."""
