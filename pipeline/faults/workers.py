"""Real worker processes over one broker: start, kill -9, restart, scrape."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pipeline.metrics.scrape import Scrape, scrape


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: every worker process started in this run, so that a scenario failing half-way leaves no orphan
STARTED: list[subprocess.Popen[bytes]] = []


def kill_leftovers() -> int:
    """SIGKILL whatever a scenario left running; returns how many."""
    n = 0
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
            n += 1
    STARTED.clear()
    return n


#: what ``pipeline/broker/offset_gaps.py`` logs when a fetch jumps over offsets, and when it gives up
JUMP_LOG, ACCEPTED_LOG = "fetch jumped from offset", "still absent after"


def fetch_jumps(logs: Path) -> tuple[int, int]:
    """(jumps re-read, jumps accepted) in every worker log of a scenario, restarts and sub-runs included.

    One level down at most: deeper ``*.log`` files are RocksDB's write-ahead logs."""
    jumps = accepted = 0
    for path in sorted([*logs.glob("*.log"), *logs.glob("*/*.log")]):
        text = path.read_text(errors="replace")
        jumps += text.count(JUMP_LOG)
        accepted += text.count(ACCEPTED_LOG)
    return jumps, accepted


class WorkerProcess:
    """``python -m pipeline worker`` with its own state directory, port and log; restartable."""

    def __init__(self, name: str, env: Mapping[str, str], state: Path, logs: Path) -> None:
        self.name = name
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = free_port()  # /metrics, /healthz, /readyz: their own listener
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self._env = {**env, "OMNIPIPE_DATA_DIR": str(state), "OMNIPIPE_WEB_PORT": str(self.port),
                     "OMNIPIPE_METRICS_PORT": str(self.metrics_port)}
        self._logs = logs
        self.starts = 0
        self.kills = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self._logs / f"{self.name}.log"

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        log.write(f"\n=== start {self.starts} ===\n".encode())
        log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=self._env,
                                     stdout=log, stderr=subprocess.STDOUT)
        STARTED.append(self.proc)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """A worker that exits on its own is a failure of the pipeline, not of the scenario."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{tail}")

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1
        self.proc = None

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def metrics(self) -> Scrape | None:
        with contextlib.suppress(OSError):
            return scrape(self.metrics_url + "/metrics")
        return None

    def wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            m = self.metrics()
            if m is not None and m.value("omnipipe_profile_restore_seconds_count") >= 1:
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} did not take partitions within {timeout:.0f}s")


def worker_env(bootstrap: str, hash_key: str, **extra: str) -> dict[str, str]:
    """A worker's environment on the run's substrate (``substrate.use``): its broker's quirks only."""
    from pipeline.faults.substrate import quirks

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OMNIPIPE_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "OMNIPIPE_PII_HASH_KEY": hash_key,
        "OMNIPIPE_LOCAL_BROKER": "1",  # a broker on this machine: short group timeouts
        "OMNIPIPE_BROKER_QUIRKS": quirks(),
        "OMNIPIPE_LOG_LEVEL": "WARNING",
        # the scenarios read many profiles back from one client: no lookup rate limit in the way
        "OMNIPIPE_LOOKUP_RATE_PER_S": "10000", "OMNIPIPE_LOOKUP_BURST": "10000",
        **extra,
    })
    return env
