"""A worker's pre-flight checks: ports free, the registry reachable, each failure naming its variable."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pipeline.errors import ConfigError, DependencyError
from pipeline.runtime.preflight import Listener, check_ports, check_registry, listeners
from pipeline.settings import load_settings


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_worker_listens_where_the_settings_say() -> None:
    settings = load_settings(OMNIPIPE_WEB_PORT=7001, OMNIPIPE_METRICS_PORT=7002)
    assert listeners(settings) == [
        Listener("127.0.0.1", 7001, "OMNIPIPE_WEB_HOST", "OMNIPIPE_WEB_PORT"),
        Listener("127.0.0.1", 7002, "OMNIPIPE_METRICS_HOST", "OMNIPIPE_METRICS_PORT"),
    ]


def test_free_ports_pass_and_stay_free() -> None:
    web, metrics = _free_port(), _free_port()
    check_ports([Listener("127.0.0.1", web, "H", "OMNIPIPE_WEB_PORT"),
                 Listener("127.0.0.1", metrics, "H", "OMNIPIPE_METRICS_PORT")])
    with socket.socket() as sock:  # the check let go of it
        sock.bind(("127.0.0.1", web))


def test_a_port_in_use_names_its_variable(busy_port: int) -> None:
    with pytest.raises(ConfigError, match=f"^OMNIPIPE_METRICS_PORT={busy_port}: 127.0.0.1:{busy_port} is "
                                          "already in use"):
        check_ports([Listener("127.0.0.1", busy_port, "OMNIPIPE_METRICS_HOST", "OMNIPIPE_METRICS_PORT")])


def test_one_port_for_both_listeners_is_refused() -> None:
    port = _free_port()
    with pytest.raises(ConfigError, match=r"OMNIPIPE_METRICS_PORT=\d+ is also OMNIPIPE_WEB_PORT"):
        check_ports([Listener("127.0.0.1", port, "OMNIPIPE_WEB_HOST", "OMNIPIPE_WEB_PORT"),
                     Listener("0.0.0.0", port, "OMNIPIPE_METRICS_HOST", "OMNIPIPE_METRICS_PORT")])


def test_port_zero_is_any_free_port_and_not_checked() -> None:
    check_ports([Listener("127.0.0.1", 0, "H", "OMNIPIPE_WEB_PORT"),
                 Listener("127.0.0.1", 0, "H", "OMNIPIPE_METRICS_PORT")])


def test_a_host_that_is_not_this_machine_names_the_host_variable() -> None:
    with pytest.raises(ConfigError, match=r"^OMNIPIPE_WEB_HOST=192\.0\.2\.1: not an address of this machine"):
        check_ports([Listener("192.0.2.1", _free_port(), "OMNIPIPE_WEB_HOST", "OMNIPIPE_WEB_PORT")])


def test_an_unreachable_registry_is_a_dependency_error_without_credentials() -> None:
    port = _free_port()
    settings = load_settings(SCHEMA_REGISTRY_URL=f"http://u:secret-pw@127.0.0.1:{port}")
    with pytest.raises(DependencyError) as info:
        check_registry(settings)
    assert str(info.value) == (f"cannot reach the schema registry (SCHEMA_REGISTRY_URL) at "
                               f"http://127.0.0.1:{port}: connection refused")


def test_a_reachable_registry_passes(busy_port: int) -> None:
    check_registry(load_settings(SCHEMA_REGISTRY_URL=f"http://127.0.0.1:1,http://127.0.0.1:{busy_port}"))


def test_a_registry_url_that_is_not_http_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="SCHEMA_REGISTRY_URL"):
        check_registry(load_settings(SCHEMA_REGISTRY_URL="registry:8081"))
