"""Listening sockets bound exactly where configured, or a ConfigError naming the variable to fix."""

from __future__ import annotations

import socket

from pipeline.errors import ConfigError


def http_url(host: str, port: int, path: str = "") -> str:
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def listen(host: str, port: int, variables: str) -> list[socket.socket]:
    """Listening TCP sockets on every address ``host`` names (as asyncio's ``create_server`` binds).

    ``variables`` names the settings to change in the error, e.g.
    ``OMNIPIPE_METRICS_HOST/OMNIPIPE_METRICS_PORT``.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{variables}: cannot resolve {host!r} ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(
                (i[0], i[1], i[2], i[3], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"{variables}: cannot listen on {http_url(host, port)} ({exc.strerror or exc}); "
                          "is another worker using that port? Choose another one") from None
    return sockets

