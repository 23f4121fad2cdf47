"""Answering a keyed HTTP request on the worker that owns the key's partition.

Ownership is published on a compacted owners topic by each worker when it
takes a partition. A worker that does not own the key forwards the request to
the owner's URL, once: the forwarded request is signed with the cluster
secret (``pipeline/web/signing.py``), which both proves that a worker sent it
and marks it routed, so a request never travels twice: a worker that receives
a routed request for a partition it just lost answers 503, retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from confluent_kafka import Consumer, Producer
from yarl import URL

from pipeline.web.signing import RouteSigner

log = logging.getLogger(__name__)

NOT_OWNER = {"error": "this worker does not own the key's partition (moving); retry"}
RETRY = {"Retry-After": "1"}


class Unavailable(Exception):
    """The key's owner is unknown, moving, or did not answer: 503 with Retry-After."""


class Owned(Protocol):
    def owns(self, key: str) -> bool: ...

    def owner_of(self, key: str) -> tuple[int, str | None]: ...


class OwnerRouter:
    def __init__(self, stage: Owned, advertised_url: str, signer: RouteSigner,
                 timeout_s: float = 5.0) -> None:
        self.stage = stage
        self.advertised_url = advertised_url
        self.signer = signer
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _remote(self, url: str, path: str) -> tuple[int, Any]:
        target = URL(url.rstrip("/") + path)
        # signed over the request target exactly as it goes on the wire (encoded=True: no re-quoting)
        headers = self.signer.headers("GET", target.raw_path_qs)
        async with (aiohttp.ClientSession(timeout=self._timeout) as session,
                    session.get(URL(str(target), encoded=True), headers=headers) as resp):
            return resp.status, await resp.json(content_type=None)

    async def fetch(self, key: str, routed: bool, local: Callable[[str], Any | None], path: str,
                    missing: str) -> tuple[int, Any]:
        """(status, body) from this worker if it owns ``key``, else from the owner at ``path``."""
        if self.stage.owns(key):
            found = await asyncio.get_running_loop().run_in_executor(None, local, key)
            return (200, found) if found is not None else (404, {"error": missing})
        partition, url = self.stage.owner_of(key)
        if routed or url is None or url == self.advertised_url:
            raise Unavailable(f"partition {partition} is moving between workers; retry")
        try:
            return await self._remote(url, path)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"owner of partition {partition} ({url}) did not answer: {exc}") from exc


def announce_owner(producer: Producer, topic: str, partition: int, url: str, at_ms: int) -> None:
    """This worker now owns ``partition``: one compacted record per partition."""
    entry = {"partition": partition, "url": url, "at": at_ms}
    producer.produce(topic, json.dumps(entry).encode(), str(partition).encode())


def poll_owners(consumer: Consumer, topic: str, owners: dict[int, str]) -> None:
    """Apply what the owners topic says since the last poll (non-blocking)."""
    for msg in consumer.consume(num_messages=500, timeout=0):
        if msg.error() is not None or msg.value() is None:
            continue
        try:
            entry = json.loads(msg.value())  # type: ignore[arg-type]
            owners[int(entry["partition"])] = str(entry["url"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed record on %s", topic)
