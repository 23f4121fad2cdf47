"""Faust transport for the embedded Tansu broker: aiokafka with fetched high watermarks.

Registered as the ``tansu://`` scheme (entry point ``faust.transports`` in
pyproject.toml) and chosen by ``faust_broker_kwargs`` only when the broker
is Tansu (``OMNIPIPE_BROKER_QUIRKS=tansu``), so this is the single place the
Faust side of the workaround lives. Apache Kafka uses the plain ``kafka://``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from pipeline.broker.watermarks import fetched_highwaters


class Consumer(aiokafka_driver.Consumer):
    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        listed = await super().highwaters(*partitions)
        servers = ",".join(f"{u.host}:{u.port or 9092}" for u in self.transport.url)
        fixed = await asyncio.get_running_loop().run_in_executor(
            None,
            fetched_highwaters,
            {"bootstrap.servers": servers},
            {(tp.topic, tp.partition): (off or 0) for tp, off in listed.items()},
        )
        return {TP(t, p): off for (t, p), off in fixed.items()}


class Transport(aiokafka_driver.Transport):
    Consumer: ClassVar[Any] = Consumer
