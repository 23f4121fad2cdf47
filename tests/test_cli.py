"""The ``omnipipe`` command line as a user meets it: real processes, real exit codes, real stderr."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ExitCode
from pipeline.settings import Settings

OMNIPIPE = Path(sys.executable).parent / "omnipipe"  # the installed console script
HASH_KEY = "cli-test-hash-key-0123456789"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "SCHEMA_REGISTRY_", "OMNIPIPE_"))}
    # ports 0: never collide with a worker someone else runs on this machine
    env.update({"OMNIPIPE_DATA_DIR": str(tmp_path / "data"), "OMNIPIPE_WEB_PORT": "0",
                "OMNIPIPE_METRICS_PORT": "0"})
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_version_prints_the_installed_package_version(tmp_path: Path) -> None:
    result = subprocess.run([str(OMNIPIPE), "--version"], env=_env(tmp_path), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout.strip() == f"omnipipe {importlib.metadata.version('omnipipe')}"


def test_worker_help_lists_every_variable_with_its_default_and_no_secret(tmp_path: Path) -> None:
    secret = "a-token-that-must-never-be-printed"
    result = _run(["worker", "--help"], _env(tmp_path, OMNIPIPE_API_TOKENS=secret,
                                             OMNIPIPE_PII_HASH_KEY=secret))
    assert result.returncode == ExitCode.OK, result.stderr
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()
             if line.startswith("  ") and line.split() and line.split()[0].isupper()}
    aliases = [f.alias for f in Settings.model_fields.values()]
    assert set(aliases) <= set(lines), sorted(set(aliases) - set(lines))
    assert lines["OMNIPIPE_WEB_HOST"][0] == "127.0.0.1"
    assert lines["OMNIPIPE_WEB_PORT"][0] == "6066"
    assert lines["OMNIPIPE_NBA_CLOCK"][:4] == ["wall", "one", "of", "wall,"]
    assert lines["OMNIPIPE_API_TOKENS"][0] == "(secret)"
    assert lines["KAFKA_SASL_PASSWORD"][0] == "(secret)"
    assert secret not in result.stdout and secret not in result.stderr
    for code in ExitCode:
        assert f"{int(code)} {code.name.lower()}" in result.stdout


def test_a_usage_error_exits_with_the_usage_code(tmp_path: Path) -> None:
    result = _run(["worker", "--no-such-option"], _env(tmp_path))
    assert result.returncode == ExitCode.USAGE


@pytest.mark.parametrize(("servers", "reason"), [
    ("127.0.0.1:1", "connection refused"),
    ("no-such-broker.invalid:9092", "cannot resolve no-such-broker.invalid:9092"),
])
def test_an_unreachable_broker_ends_within_seconds_in_one_line(tmp_path: Path, servers: str,
                                                                reason: str) -> None:
    start = time.monotonic()
    result = _run(["worker"], _env(tmp_path, KAFKA_BOOTSTRAP_SERVERS=servers,
                                   OMNIPIPE_PII_HASH_KEY=HASH_KEY), timeout=60)
    elapsed = time.monotonic() - start
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr[-3000:]
    assert elapsed < 15, f"took {elapsed:.1f} s"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    prefix = f"omnipipe: cannot reach Kafka at {servers} (KAFKA_BOOTSTRAP_SERVERS): "
    assert lines[0].startswith(prefix) and reason in lines[0], lines[0]


def test_topics_against_an_unreachable_broker_exits_the_same_way(tmp_path: Path) -> None:
    result = _run(["topics"], _env(tmp_path, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
                                   OMNIPIPE_PII_HASH_KEY=HASH_KEY), timeout=60)
    assert result.returncode == ExitCode.UNAVAILABLE
    assert result.stderr.strip() == ("omnipipe: cannot reach Kafka at 127.0.0.1:1 "
                                     "(KAFKA_BOOTSTRAP_SERVERS): connection refused")


def test_a_missing_ca_file_is_a_configuration_error_before_anything_starts(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    result = _run(["worker"], _env(tmp_path, KAFKA_SSL_CA_LOCATION=str(missing)))
    assert result.returncode == ExitCode.CONFIG, result.stderr[-3000:]
    assert "KAFKA_SSL_CA_LOCATION" in result.stderr
    assert "Traceback" not in result.stderr and "Tansu" not in result.stderr


@pytest.mark.parametrize("variable", ["OMNIPIPE_WEB_PORT", "OMNIPIPE_METRICS_PORT"])
def test_a_port_in_use_is_a_configuration_error_naming_the_variable(tmp_path: Path, listening: int,
                                                                     variable: str) -> None:
    result = _run(["worker"], _env(tmp_path, **{variable: str(listening)}))
    assert result.returncode == ExitCode.CONFIG, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert f"{variable}={listening}" in lines[0] and "already in use" in lines[0]
    assert not (tmp_path / "data" / "embedded").exists()  # stopped before starting a broker


def test_an_unreachable_registry_exits_with_the_dependency_code_without_credentials(tmp_path: Path) -> None:
    result = _run(["worker"], _env(tmp_path, SCHEMA_REGISTRY_URL="http://reg-user:reg-pass@127.0.0.1:1"))
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines == ["omnipipe: cannot reach the schema registry (SCHEMA_REGISTRY_URL) at "
                     "http://127.0.0.1:1: connection refused"]
    assert "reg-pass" not in result.stderr
