"""Kafka client configuration from settings, for librdkafka and aiokafka/Faust."""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings


def bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap_servers is None:
        raise RuntimeError("no bootstrap servers: start the embedded broker first")
    return settings.kafka_bootstrap_servers


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """Security and bootstrap keys for confluent-kafka clients."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap(settings),
        "security.protocol": settings.kafka_security_protocol,
        # idle connections closed by brokers are normal; don't print them
        "log.connection.close": False,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        assert settings.kafka_sasl_password is not None
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_ca_location is not None:
        conf["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    return conf


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for ``faust.App``."""
    import ssl

    import faust

    # the embedded Tansu's ListOffsets is short: its transport takes the high watermark from a fetch
    scheme = "tansu" if settings.tansu else "kafka"
    kwargs: dict[str, Any] = {
        "broker": ";".join(f"{scheme}://{h.strip()}" for h in bootstrap(settings).split(","))
    }
    protocol = settings.kafka_security_protocol
    if protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_ca_location) if settings.kafka_ssl_ca_location else None
        )
    else:
        ctx = None
    if protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        kwargs["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    elif ctx is not None:
        kwargs["broker_credentials"] = faust.SSLCredentials(ctx)
    return kwargs
