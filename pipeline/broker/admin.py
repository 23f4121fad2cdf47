"""Create the declared topics idempotently at start; the first contact with the cluster."""

from __future__ import annotations

import collections
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from pipeline.errors import BrokerUnreachable, OmnipipeError
from pipeline.topology.catalogue import TopicCatalogue

log = logging.getLogger(__name__)

#: the first contact gives up after this long without an answer ...
FIRST_CONTACT_S = 10.0
#: ... or this long after librdkafka reported why it cannot connect (a refused connection,
#: an unresolvable name, a failed TLS handshake or login): a broker that is restarting gets
#: a few reconnects, a wrong address does not get 30 s of retries
FIRST_CONTACT_GRACE_S = 3.0

_PREFIX = re.compile(r"^\S+/(?:bootstrap|\d+): ")
_SUFFIX = re.compile(r" \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)$")


class TopicSetupError(OmnipipeError):
    """Topics could not be created or do not match the catalogue."""


def contact_failure_reason(code: int, text: str) -> str:
    """One short reason for a librdkafka connection error, naming what to check.

    ``text`` is librdkafka's message (``127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1
    failed: Connection refused (after 0ms in state CONNECT)``); the broker prefix and the
    state suffix are dropped.
    """
    core = _SUFFIX.sub("", _PREFIX.sub("", text.strip()))
    if code == KafkaError._RESOLVE:
        name = re.search(r"resolve '([^']+)'", core)
        detail = core.rpartition(": ")[2] if ": " in core else core
        return f"cannot resolve {name.group(1) if name else 'the host name'} ({detail.lower()})"
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return (f"authentication failed ({core}); check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD "
                "and KAFKA_SASL_MECHANISM")
    if code == KafkaError._SSL:
        return f"TLS failed ({core}); check KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CA_LOCATION"
    if code == KafkaError._BAD_MSG:
        return f"the answer is not Kafka's ({core}); check the port and KAFKA_SECURITY_PROTOCOL"
    if code == KafkaError._TRANSPORT and " failed: " in core:
        return core.rpartition(" failed: ")[2].lower()
    return core or "unknown error"


def first_contact(
    admin: AdminClient, servers: str, errors: collections.deque[KafkaError], *,
    timeout_s: float = FIRST_CONTACT_S, grace_s: float = FIRST_CONTACT_GRACE_S,
) -> ClusterMetadata:
    """The cluster's metadata, or BrokerUnreachable within seconds saying why.

    ``errors`` is filled by the admin client's ``error_cb``; ``poll`` serves it.
    """
    start = time.monotonic()
    while True:
        remaining = timeout_s - (time.monotonic() - start)
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, remaining)))
        except KafkaException as exc:
            admin.poll(0)
            elapsed = time.monotonic() - start
            seen = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
            if elapsed >= timeout_s or (seen and elapsed >= grace_s):
                if seen:
                    reason = contact_failure_reason(seen[-1].code(), seen[-1].str())
                else:
                    reason = f"no answer within {timeout_s:.0f} s"
                raise BrokerUnreachable(servers, reason) from exc


def ensure_topics(
    client_config: Mapping[str, Any], catalogue: TopicCatalogue, timeout_s: float = 30.0,
    *, first_contact_s: float | None = None, replication_factor: int | None = None,
) -> dict[str, str]:
    """Create missing topics; existing ones are left as they are.

    ``replication_factor`` overrides every topic's declared one (a 3-broker test or fault
    cluster: 3, with the brokers' ``min.insync.replicas=2``).

    Returns topic name -> "created" | "exists". A topic that exists with fewer
    partitions than declared is reported, not silently changed: repartitioning
    moves keys and must be a deliberate operation. An unreachable cluster raises
    BrokerUnreachable: ``FIRST_CONTACT_GRACE_S`` after librdkafka said why, at the
    latest after ``first_contact_s`` (default ``timeout_s``) without an answer.
    librdkafka's own log lines (one per reconnect) are silenced here; the error
    sums them up in one.
    """
    errors: collections.deque[KafkaError] = collections.deque(maxlen=16)
    conf: dict[str, Any] = {**client_config, "log_level": 0, "error_cb": errors.append}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    metadata = first_contact(admin, str(client_config.get("bootstrap.servers", "?")), errors,
                             timeout_s=min(first_contact_s or timeout_s, timeout_s))
    existing = metadata.topics
    result: dict[str, str] = {}
    new: list[NewTopic] = []
    for spec in catalogue:
        if spec.name in existing and existing[spec.name].error is None:
            have = len(existing[spec.name].partitions)
            if have < spec.partitions:
                log.warning(
                    "topic %s has %d partitions, catalogue declares %d; not changing it",
                    spec.name, have, spec.partitions,
                )
            result[spec.name] = "exists"
        else:
            new.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=replication_factor or spec.replication_factor,
                    config=spec.config(),
                )
            )
    if new:
        futures = admin.create_topics(new, request_timeout=max(1.0, deadline - time.monotonic()))
        for name, fut in futures.items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                else:
                    raise TopicSetupError(f"cannot create topic {name}: {err}") from exc
    return result
