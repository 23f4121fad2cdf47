"""What every stage loop that produces with librdkafka needs: a full queue waited out, a failure named."""

from __future__ import annotations

from confluent_kafka import Producer

Headers = list[tuple[str, str | bytes | None]]


class DeliveryFailed(RuntimeError):
    """The broker refused or timed out records we produced; offsets were not committed."""


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None,
            partition: int | None = None, headers: Headers | None = None) -> None:
    """``producer.produce``, waiting for room when the local queue is full (never dropping)."""
    while True:
        try:
            if partition is None:
                producer.produce(topic, value, key, headers=headers)
            else:
                producer.produce(topic, value, key, partition, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)
