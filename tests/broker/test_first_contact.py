"""The first contact with a cluster: librdkafka's connection errors as one short reason."""

from __future__ import annotations

import collections
import socket
import time

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

from pipeline.broker.admin import contact_failure_reason, first_contact
from pipeline.errors import BrokerUnreachable, ExitCode


@pytest.mark.parametrize(("code", "text", "reason"), [
    (KafkaError._TRANSPORT,
     "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state "
     "CONNECT)", "connection refused"),
    (KafkaError._TRANSPORT,
     "b1:9092/bootstrap: Connect to ipv4#10.0.0.1:9092 failed: Connection refused (after 1ms in state "
     "CONNECT, 4 identical error(s) suppressed)", "connection refused"),
    (KafkaError._RESOLVE,
     "nohost.invalid:9092/bootstrap: Failed to resolve 'nohost.invalid:9092': Name or service not known "
     "(after 0ms in state CONNECT)", "cannot resolve nohost.invalid:9092 (name or service not known)"),
    (KafkaError._AUTHENTICATION,
     "b1:9093/1: SASL authentication error: Authentication failed during authentication due to invalid "
     "credentials with SASL mechanism SCRAM-SHA-512 (after 8ms in state AUTH_REQ)",
     "authentication failed (SASL authentication error: Authentication failed during authentication due "
     "to invalid credentials with SASL mechanism SCRAM-SHA-512); check KAFKA_SASL_USERNAME, "
     "KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"),
    (KafkaError._SSL,
     "b1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed "
     "(after 12ms in state SSL_HANDSHAKE)",
     "TLS failed (SSL handshake failed: error:0A000086:SSL routines::certificate verify failed); check "
     "KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CA_LOCATION"),
    (KafkaError._BAD_MSG,
     "h:80/bootstrap: Receive failed: Invalid response size 1213486160 (0..100000000): increase "
     "receive.message.max.bytes (after 0ms in state APIVERSION_QUERY)",
     "the answer is not Kafka's (Receive failed: Invalid response size 1213486160 (0..100000000): increase "
     "receive.message.max.bytes); check the port and KAFKA_SECURITY_PROTOCOL"),
])
def test_a_connection_error_becomes_one_reason(code: int, text: str, reason: str) -> None:
    assert contact_failure_reason(code, text) == reason


def test_the_message_names_the_address_and_the_variable() -> None:
    exc = BrokerUnreachable("127.0.0.1:1", "connection refused").naming("KAFKA_BOOTSTRAP_SERVERS")
    assert str(exc) == "cannot reach Kafka at 127.0.0.1:1 (KAFKA_BOOTSTRAP_SERVERS): connection refused"
    assert exc.exit_code == ExitCode.UNAVAILABLE


def test_a_refused_connection_gives_up_after_the_grace_period_not_the_timeout() -> None:
    errors: collections.deque[KafkaError] = collections.deque(maxlen=16)
    admin = AdminClient({"bootstrap.servers": "127.0.0.1:1", "log_level": 0, "error_cb": errors.append})
    start = time.monotonic()
    with pytest.raises(BrokerUnreachable) as info:
        first_contact(admin, "127.0.0.1:1", errors, timeout_s=30.0, grace_s=1.0)
    assert time.monotonic() - start < 10
    assert info.value.reason == "connection refused"


def test_a_server_that_never_answers_gives_up_at_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        errors: collections.deque[KafkaError] = collections.deque(maxlen=16)
        admin = AdminClient({"bootstrap.servers": address, "log_level": 0, "error_cb": errors.append})
        start = time.monotonic()
        with pytest.raises(BrokerUnreachable) as info:
            first_contact(admin, address, errors, timeout_s=2.0, grace_s=1.0)
        assert 2.0 <= time.monotonic() - start < 8
    assert str(info.value) == f"cannot reach the Kafka broker at {address}: no answer within 2 s"
