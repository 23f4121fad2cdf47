"""Readiness from the stages' status, the ready line, and the metrics/health listener itself."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from pipeline.errors import ConfigError
from pipeline.metrics.scrape import parse
from pipeline.runtime.status import StageStatus
from pipeline.settings import Settings
from pipeline.web.health import HealthServer, readiness, ready_line
from pipeline.web.listen import http_url, listen


def _stages() -> list[StageStatus]:
    return [StageStatus("ingest"), StageStatus("identity"), StageStatus("profile")]


def _parts(topic: str, *numbers: int) -> frozenset[tuple[str, int]]:
    return frozenset((topic, p) for p in numbers)


def test_a_stage_is_ready_once_assigned_and_restored() -> None:
    ingest = _stages()[0]
    assert not readiness([ingest]).alive and not readiness([ingest]).ready
    ingest.started("omnipipe-ingest")
    state = readiness([ingest])
    assert state.alive and not state.ready
    assert state.as_json()["not_ready"] == {"ingest": "its partition assignment from consumer group "
                                                      "omnipipe-ingest"}
    ingest.assigned_to(_parts("events.web", 0, 1) | _parts("events.pos", 0, 1))
    assert readiness([ingest]).as_json()["not_ready"] == {"ingest": "restoring its state for 2 partitions"}
    ingest.restore_done()
    state = readiness([ingest])
    assert state.ready and state.stages[0].partitions == 2 and state.as_json()["not_ready"] == {}


def test_a_stage_given_no_partition_is_ready_once_its_assignment_arrived() -> None:
    (stage,) = _stages()[:1]
    stage.started("g")
    stage.assigned_to(frozenset())  # more workers than partitions
    stage.restore_done()
    assert readiness([stage]).ready and readiness([stage]).stages[0].partitions == 0


def test_the_worker_is_ready_only_when_every_stage_is() -> None:
    stages = _stages()
    for s in stages:
        s.started(f"g-{s.stage}")
        s.assigned_to(_parts("t", 0))
    stages[0].restore_done()
    stages[2].restore_done()
    state = readiness(stages)
    assert not state.ready and list(state.as_json()["not_ready"]) == ["identity"]
    stages[1].restore_done()
    assert readiness(stages).ready
    stages[2].stopped()
    state = readiness(stages)
    assert not state.alive and state.as_json()["not_ready"] == {"profile": "the stage loop is not running"}


def test_ready_line() -> None:
    stages = _stages()
    for s, n in zip(stages, (4, 4, 2), strict=True):
        s.started("g")
        s.assigned_to(_parts("a", *range(n)) | _parts("b", *range(n)))
        s.restore_done()
    line = ready_line("omnipipe", readiness(stages), 12.34, "http://127.0.0.1:6066", True,
                      "http://127.0.0.1:6067/metrics")
    assert line == ("worker omnipipe ready: ingest 4 partitions, identity 4, profile 2 (12.3 s after start); "
                    "API http://127.0.0.1:6066 (token required), metrics http://127.0.0.1:6067/metrics")


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_listener_serves_metrics_health_and_readiness_and_logs_once_ready(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    Counter("omnipipe_test_things_total", "Things.", registry=registry).inc(3)
    stages = _stages()
    settings = Settings(OMNIPIPE_METRICS_PORT=0, OMNIPIPE_API_TOKENS="t" * 20)  # type: ignore[call-arg, arg-type]
    server = HealthServer.for_worker(settings, registry, stages, started_at=0.0)
    port = server._sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    seen: dict[str, Any] = {}

    def probe() -> None:
        seen["metrics"] = _get(base + "/metrics")
        seen["healthz-before"] = _get(base + "/healthz")
        seen["readyz-before"] = _get(base + "/readyz")
        for s in stages:
            s.started(f"omnipipe-{s.stage}")
            s.assigned_to(_parts("t", 0, 1))
        seen["healthz"] = _get(base + "/healthz")
        for s in stages[:2]:
            s.restore_done()
        seen["readyz-waiting"] = _get(base + "/readyz")
        stages[2].restore_done()
        seen["readyz"] = _get(base + "/readyz")
        seen["api"] = _get(base + "/profiles/cust:C1")

    async def go() -> None:
        await server.start()
        try:
            await asyncio.get_running_loop().run_in_executor(None, probe)
            for _ in range(50):
                if server.ready_logged:
                    break
                await asyncio.sleep(0.05)
        finally:
            await server.stop()

    with caplog.at_level(logging.INFO, logger="pipeline.web.health"):
        asyncio.run(go())
    status, ctype, body = seen["metrics"]
    assert status == 200 and ctype.startswith("text/plain")
    assert parse(body).value("omnipipe_test_things_total") == 3
    assert seen["healthz-before"][0] == 503 and seen["readyz-before"][0] == 503
    assert seen["healthz"][0] == 200 and json.loads(seen["healthz"][2])["alive"] is True
    status, _, body = seen["readyz-waiting"]
    assert status == 503
    assert json.loads(body)["not_ready"] == {"profile": "restoring its state for 2 partitions"}
    assert seen["readyz"][0] == 200 and json.loads(seen["readyz"][2])["ready"] is True
    assert seen["api"][0] == 404  # no customer data on this listener
    lines = [r.getMessage() for r in caplog.records if " ready: " in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("worker omnipipe ready: ingest 2 partitions, identity 2, profile 2 (")
    assert lines[0].endswith(f"API http://127.0.0.1:6066 (token required), metrics {base}/metrics")


def test_a_port_in_use_is_a_config_error_naming_the_variables() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"OMNIPIPE_METRICS_HOST/OMNIPIPE_METRICS_PORT: cannot listen "
                                              rf"on http://127.0.0.1:{port} "):
            listen("127.0.0.1", port, "OMNIPIPE_METRICS_HOST/OMNIPIPE_METRICS_PORT")


def test_listen_binds_exactly_the_address_asked_for() -> None:
    (sock,) = listen("127.0.0.1", 0, "X")
    with sock:
        assert sock.getsockname()[0] == "127.0.0.1"
    assert http_url("::1", 80, "/metrics") == "http://[::1]:80/metrics"
