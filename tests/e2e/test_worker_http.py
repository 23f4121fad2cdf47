"""The worker's HTTP surface, secure by default: one real `omnipipe worker`, its sockets and routes.

* it listens exactly where configured: the API and the metrics listener on
  127.0.0.1, nothing else (read from /proc, by the worker's pid);
* /metrics, /healthz and /readyz are on the metrics port, not on the API;
  /readyz turns 200 and one line on stderr says the worker is ready;
* with tokens configured, every API route answers 401 without one (or with a
  wrong one), and either token of a rotation is accepted;
* Faust's own pages are not served;
* the owner-side routes answer only signed worker-to-worker requests: the old
  ``X-Omnipipe-Routed: 1`` header gets 403;
* lookups beyond the per-client rate get 429 with Retry-After.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.broker.kafka_process import KafkaCluster
from pipeline.metrics.scrape import parse
from pipeline.settings import Settings
from pipeline.simulate.truth import load_truth
from pipeline.web.signing import LEGACY_ROUTED, RouteSigner
from tests.e2e.test_cli_pipeline import HASH_KEY, _env, _port
from tests.e2e.test_identity_pipeline import _simulate, _topology

pytestmark = pytest.mark.e2e

TOKENS = ("first-token-0123456789abcdef", "second-token-0123456789abcdef")
BURST = 100  # the lookups of the other tests stay below it; the rate-limit test goes beyond it
READY = " ready: ingest "


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    api: str
    metrics: str
    stderr: Path
    readyz_seen: list[tuple[int, dict[str, Any]]]
    customer: str  # a cust: ref whose profile the worker serves

    def call(self, path: str, token: str | None = TOKENS[0], method: str = "GET", body: Any = None,
             headers: dict[str, str] | None = None, base: str | None = None) -> tuple[int, Any, Any]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request((base or self.api) + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw, status, rheaders = resp.read(), resp.status, resp.headers
        except urllib.error.HTTPError as exc:
            raw, status, rheaders = exc.read(), exc.code, exc.headers
        try:
            return status, json.loads(raw), rheaders
        except ValueError:
            return status, raw.decode(errors="replace"), rheaders


def _signer() -> RouteSigner:
    """What every worker of this cluster signs with (derived from the shared hash key)."""
    return RouteSigner(Settings(OMNIPIPE_PII_HASH_KEY=HASH_KEY).routing_secret())  # type: ignore[call-arg]


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def worker(broker: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("http")
    topology = _topology(tmp, "http")
    truth = load_truth(_simulate(broker, tmp, customers=30, seed=7))
    customers = [p.identifiers["customer_id"][0] for p in truth.persons.values()
                 if p.identifiers.get("customer_id") and p.erased_at_ms is None and not p.shared]
    assert customers
    api_port, metrics_port = _port(), _port()
    env = _env(broker, tmp, OMNIPIPE_TOPOLOGY=str(topology), OMNIPIPE_GROUP_ID="http",
               OMNIPIPE_WEB_PORT=str(api_port), OMNIPIPE_METRICS_PORT=str(metrics_port),
               OMNIPIPE_API_TOKENS=",".join(TOKENS), OMNIPIPE_LOOKUP_RATE_PER_S="0.5",
               OMNIPIPE_LOOKUP_BURST=str(BURST))
    assert "OMNIPIPE_WEB_HOST" not in env and "OMNIPIPE_METRICS_HOST" not in env  # the defaults
    stderr = tmp / "worker.stderr"
    with open(stderr, "wb") as err, open(tmp / "worker.stdout", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=env, stdout=out, stderr=err)
    w = Worker(proc, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}", stderr, [],
               f"cust:{customers[0]}")
    signer = _signer()
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            assert proc.poll() is None, stderr.read_text()[-3000:]
            with contextlib.suppress(OSError):
                w.readyz_seen.append(_get_json(w.metrics + "/readyz"))
                if w.readyz_seen[-1][0] == 200:
                    break
            time.sleep(0.2)
        # the profile is served once the stages have folded the simulation (signed: not rate limited)
        path = f"/profiles/_local/{w.customer}"
        while time.monotonic() < deadline:
            assert proc.poll() is None, stderr.read_text()[-3000:]
            if w.call(path, token=None, headers=signer.headers("GET", path))[0] == 200:
                break
            time.sleep(0.5)
        yield w
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            assert len(addr_hex) == width
            if table == "tcp":
                addr = ".".join(str(b) for b in reversed(bytes.fromhex(addr_hex)))
            else:  # four little-endian 32-bit words
                raw = b"".join(bytes.fromhex(addr_hex[i:i + 8])[::-1] for i in range(0, 32, 8))
                addr = ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2))
            found.add((addr, int(port_hex, 16)))
    return found


def test_the_worker_listens_only_where_configured(worker: Worker) -> None:
    api_port = int(worker.api.rsplit(":", 1)[1])
    metrics_port = int(worker.metrics.rsplit(":", 1)[1])
    assert _listening(worker.proc.pid) == {("127.0.0.1", api_port), ("127.0.0.1", metrics_port)}


def test_readyz_turns_200_and_one_line_says_the_worker_is_ready(worker: Worker) -> None:
    status, body = worker.readyz_seen[-1]
    assert status == 200 and body["ready"] is True and body["not_ready"] == {}
    assert set(body["stages"]) == {"ingest", "identity", "profile"}
    assert all(s["partitions"] == 2 for s in body["stages"].values())  # OMNIPIPE_TOPIC_PARTITIONS=2
    waiting = [b for s, b in worker.readyz_seen if s == 503]
    assert waiting and all(b["not_ready"] for b in waiting)  # it said what it waited for, before
    lines = [line.rstrip() for line in worker.stderr.read_text().splitlines() if READY in line]
    assert len(lines) == 1, lines
    assert "worker http ready: ingest 2 partitions, identity 2, profile 2 (" in lines[0]
    assert lines[0].endswith(f"API {worker.api} (token required), metrics {worker.metrics}/metrics")
    assert _get_json(worker.metrics + "/healthz")[0] == 200


def test_metrics_are_on_their_own_port_and_not_on_the_api(worker: Worker) -> None:
    with urllib.request.urlopen(worker.metrics + "/metrics", timeout=5) as resp:
        metrics = parse(resp.read().decode())
    assert metrics.value("omnipipe_ingest_events_in_total") > 0
    assert any(name.startswith("faust_") for name in metrics.types)  # Faust's own sensors too
    assert "omnipipe_web_requests_refused" in metrics.types
    assert worker.call("/metrics", token=None)[0] == 401
    assert worker.call("/metrics")[0] == 404
    assert worker.call("/readyz")[0] == 404 and worker.call("/healthz")[0] == 404


def test_every_api_route_needs_a_token(worker: Worker) -> None:
    routes: list[tuple[str, str, Any]] = [
        ("GET", f"/profiles/{worker.customer}", None), ("GET", f"/identity/{worker.customer}", None),
        ("POST", "/profiles/lookup", {"customer_id": worker.customer[5:]}),
        ("POST", "/identity/lookup", {"customer_id": worker.customer[5:]}),
        ("GET", "/dlq", None), ("GET", f"/profiles/_local/{worker.customer}", None),
        ("GET", f"/identity/_profile/{worker.customer}", None), ("GET", "/", None),
        ("GET", "/router/", None), ("GET", "/no-such-page", None),
    ]
    for method, path, body in routes:
        status, answer, headers = worker.call(path, token=None, method=method, body=body)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), (path, status, answer)
        status, _, headers = worker.call(path, token="not-our-token-0123456789", method=method, body=body)
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"], path
    for token in TOKENS:  # both tokens of a rotation are accepted
        for method, path, body in routes[:5]:
            status, answer, _ = worker.call(path, token=token, method=method, body=body)
            assert status == 200, (path, status, answer)
    status, profile, _ = worker.call(f"/profiles/{worker.customer}")
    assert profile["profile_id"] == worker.customer


def test_faust_pages_are_not_served(worker: Worker) -> None:
    for path in ("/", "/router/", "/table/", "/graph/", "/stats/", "/assignment/", "/performance/"):
        status, _, _ = worker.call(path)
        assert status == 404, path


def test_internal_routes_answer_only_signed_requests(worker: Worker) -> None:
    path = f"/profiles/_local/{worker.customer}"
    status, body, _ = worker.call(path, headers={LEGACY_ROUTED: "1"})  # the forgery that used to work
    assert status == 403 and "profile_id" not in body
    assert worker.call(path)[0] == 403  # a client token does not open an internal route
    assert worker.call(f"/identity/{worker.customer}?part=ident", headers={LEGACY_ROUTED: "1"})[0] == 403
    assert worker.call(f"/identity/{worker.customer}?part=ident")[0] == 403
    status, body, _ = worker.call(path, token=None, headers=_signer().headers("GET", path))
    assert status == 200 and body["profile_id"] == worker.customer
    stale = RouteSigner(_signer().secret, clock=lambda: time.time() - 120).headers("GET", path)
    assert worker.call(path, token=None, headers=stale)[0] == 403


def test_lookups_beyond_the_rate_get_429(worker: Worker) -> None:
    statuses = []
    for _ in range(BURST + 20):
        status, body, headers = worker.call(f"/profiles/{worker.customer}")
        statuses.append(status)
        if status == 429:
            assert int(headers["Retry-After"]) >= 1 and "retry after" in body["error"]
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    assert worker.call("/dlq")[0] == 200  # only lookups are limited
