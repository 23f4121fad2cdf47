"""Checks a worker runs before it starts anything: its ports are free, its registry answers.

Each failure is one error naming the environment variable to fix, raised
before a broker is started or a Faust worker is built (``cli.py`` calls
:func:`check_worker` ahead of ``run_worker``). Kafka itself is checked by the
first contact in ``pipeline/broker/admin.py``.
"""

from __future__ import annotations

import errno
import socket
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import ConfigError, DependencyError
from pipeline.settings import Settings

REGISTRY_CONNECT_S = 3.0


@dataclass(frozen=True)
class Listener:
    """One address the worker will listen on, and the variables that set it."""

    host: str
    port: int
    host_variable: str
    port_variable: str


def listeners(settings: Settings) -> list[Listener]:
    return [
        Listener(settings.web_host, settings.web_port, "OMNIPIPE_WEB_HOST", "OMNIPIPE_WEB_PORT"),
        Listener(settings.metrics_host, settings.metrics_port, "OMNIPIPE_METRICS_HOST",
                 "OMNIPIPE_METRICS_PORT"),
    ]


def check_ports(items: list[Listener]) -> None:
    """Bind each listener's address once, as the server will (``pipeline/web/listen.py``), and let it go.

    The server binds again later and reports a failure its own way; this check runs first, in
    the CLI, so a port in use stops the worker before an embedded broker or Faust starts.

    Port 0 means "any free port" and is not checked. Two listeners on one port are refused.
    """
    seen: dict[int, Listener] = {}
    for item in items:
        if item.port == 0:
            continue
        other = seen.get(item.port)
        if other is not None:
            raise ConfigError(f"{item.port_variable}={item.port} is also {other.port_variable}: "
                              f"give the two listeners different ports")
        seen[item.port] = item
        _try_bind(item)


def _try_bind(item: Listener) -> None:
    try:
        infos = socket.getaddrinfo(item.host, item.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{item.host_variable}={item.host}: cannot resolve it ({exc.strerror})") from None
    for family, kind, proto, _name, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as sock:  # as pipeline/web/listen.py will bind it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ConfigError(_bind_problem(item, exc.errno)) from None


def _bind_problem(item: Listener, code: int | None) -> str:
    where = f"{item.host}:{item.port}"
    if code == errno.EADDRINUSE:
        return (f"{item.port_variable}={item.port}: {where} is already in use (another worker or "
                f"program listens there); set {item.port_variable} to a free port")
    if code == errno.EADDRNOTAVAIL:
        return f"{item.host_variable}={item.host}: not an address of this machine"
    if code == errno.EACCES:
        return (f"{item.port_variable}={item.port}: not allowed to listen on {where} (ports below 1024 "
                "need privileges)")
    name = errno.errorcode.get(code or 0, str(code))
    return f"{item.port_variable}={item.port}: cannot listen on {where} ({name})"


def check_registry(settings: Settings, timeout_s: float = REGISTRY_CONNECT_S) -> None:
    """A TCP connection to SCHEMA_REGISTRY_URL (any of its comma-separated URLs) opens.

    Skipped for a URL reached through an HTTP(S) proxy (the proxy decides). The
    printed address never includes credentials embedded in the URL.
    """
    if not settings.schema_registry_url:
        return
    problems: list[str] = []
    for raw in settings.schema_registry_url.split(","):
        url = urlsplit(raw.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"SCHEMA_REGISTRY_URL: {raw.strip()!r} is not an http(s) URL")
        host = url.hostname
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            raise ConfigError("SCHEMA_REGISTRY_URL: the port is not a number") from None
        shown = f"{url.scheme}://{host}:{port}"
        if url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
            return
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            return
        except socket.gaierror as exc:
            problems.append(f"{shown}: cannot resolve {host} ({str(exc.strerror).lower()})")
        except TimeoutError:
            problems.append(f"{shown}: no answer within {timeout_s:.0f} s")
        except OSError as exc:
            problems.append(f"{shown}: {str(exc.strerror or exc).lower()}")
    raise DependencyError("cannot reach the schema registry (SCHEMA_REGISTRY_URL) at " + "; ".join(problems))


def check_worker(settings: Settings) -> None:
    """Everything a worker can check before it starts (raises ConfigError or DependencyError)."""
    check_ports(listeners(settings))
    check_registry(settings)
