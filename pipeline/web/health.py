"""``/metrics``, ``/healthz`` and ``/readyz`` on their own listener (OMNIPIPE_METRICS_HOST/PORT).

No customer data is served here, so a network policy can let Prometheus and
the orchestrator's probes in without exposing the API. The stage loops report
through ``pipeline/runtime/status.py``:

* ``/healthz``: 200 while every stage loop runs (alive), else 503;
* ``/readyz``: 200 once every stage loop has its partitions assigned and its
  state restored (a stage given no partition, when there are more workers
  than partitions, is ready once its assignment arrived), else 503 with a
  JSON body that says which stage waits for what;
* and one log line when the worker first becomes ready.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.runtime.status import StageStatus
from pipeline.settings import Settings
from pipeline.web.listen import http_url, listen

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageReadiness:
    stage: str
    running: bool
    ready: bool
    #: partition numbers this worker owns (of each of the stage's input topics)
    partitions: int
    waiting_for: str | None

    def as_json(self) -> dict[str, Any]:
        return {"running": self.running, "ready": self.ready, "partitions": self.partitions,
                **({"waiting_for": self.waiting_for} if self.waiting_for else {})}


@dataclass(frozen=True)
class Readiness:
    stages: tuple[StageReadiness, ...]

    @property
    def alive(self) -> bool:
        return all(s.running for s in self.stages)

    @property
    def ready(self) -> bool:
        return all(s.ready for s in self.stages)

    def as_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "alive": self.alive,
                "not_ready": {s.stage: s.waiting_for for s in self.stages if not s.ready},
                "stages": {s.stage: s.as_json() for s in self.stages}}


def stage_readiness(status: StageStatus) -> StageReadiness:
    """One stage's readiness from what its loop reported (a snapshot: fields are replaced whole)."""
    running, restored, assigned = status.running, status.restored, status.assigned
    partitions = len({p for _topic, p in assigned})
    if not running:
        waiting: str | None = "the stage loop is not running"
    elif restored:
        waiting = None
    elif assigned:
        waiting = f"restoring its state for {partitions} partitions"
    else:
        waiting = f"its partition assignment from consumer group {status.group_id or '?'}"
    return StageReadiness(status.stage, running, running and restored, partitions, waiting)


def readiness(statuses: Sequence[StageStatus]) -> Readiness:
    return Readiness(tuple(stage_readiness(s) for s in statuses))


def ready_line(group_id: str, ready: Readiness, after_s: float, api_url: str, token_required: bool,
               metrics_url: str) -> str:
    """``worker omnipipe ready: ingest 4 partitions, identity 4, profile 4 (12.3 s after start); ...``"""
    counts = ", ".join(f"{s.stage} {s.partitions}{' partitions' if i == 0 else ''}"
                       for i, s in enumerate(ready.stages))
    auth = "token required" if token_required else "no token: loopback only"
    return (f"worker {group_id} ready: {counts} ({after_s:.1f} s after start); "
            f"API {api_url} ({auth}), metrics {metrics_url}")


class HealthServer(Service):
    """Serves the registry and the stages' health on pre-bound sockets; logs once when ready."""

    def __init__(self, sockets: Sequence[socket.socket], registry: CollectorRegistry,
                 statuses: Sequence[StageStatus], ready_message: Callable[[Readiness, float], str],
                 started_at: float | None = None, poll_s: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sockets = list(sockets)
        self._registry = registry
        self._statuses = list(statuses)
        self._ready_message = ready_message
        self._started_at = time.monotonic() if started_at is None else started_at
        self._poll_s = poll_s
        self._runner: web.AppRunner | None = None
        self.ready_logged = False

    @classmethod
    def for_worker(cls, settings: Settings, registry: CollectorRegistry, statuses: Sequence[StageStatus],
                   started_at: float | None = None) -> HealthServer:
        """Binds OMNIPIPE_METRICS_HOST:OMNIPIPE_METRICS_PORT now (ConfigError if it cannot); serves later."""
        sockets = listen(settings.metrics_host, settings.metrics_port,
                         "OMNIPIPE_METRICS_HOST/OMNIPIPE_METRICS_PORT")
        port = sockets[0].getsockname()[1]  # the port bound, also when 0 asked for any
        metrics_url = http_url(settings.metrics_host, port, "/metrics")
        api_url = http_url(settings.web_host, settings.web_port)
        token_required = bool(settings.api_token_values())

        def message(state: Readiness, after_s: float) -> str:
            return ready_line(settings.group_id, state, after_s, api_url, token_required, metrics_url)

        return cls(sockets, registry, statuses, message, started_at=started_at)

    def _web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        state = readiness(self._statuses)
        return web.json_response({"alive": state.alive, "stages": {s.stage: {"running": s.running}
                                                                    for s in state.stages}},
                                 status=200 if state.alive else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        state = readiness(self._statuses)
        return web.json_response(state.as_json(), status=200 if state.ready else 503)

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self._web_app(), access_log=None)
        await self._runner.setup()
        for sock in self._sockets:
            await web.SockSite(self._runner, sock).start()

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for sock in self._sockets:
            sock.close()

    @Service.task
    async def _log_when_ready(self) -> None:
        while not self.should_stop:
            state = readiness(self._statuses)
            if state.ready:
                log.info("%s", self._ready_message(state, time.monotonic() - self._started_at))
                self.ready_logged = True
                return
            await self.sleep(self._poll_s)
