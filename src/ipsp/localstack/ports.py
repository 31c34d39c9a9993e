"""Is a loopback TCP port free? Used before starting a service, for a clear error."""

from __future__ import annotations

import errno
import socket

from ipsp.errors import UserError


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (or holds) ``host:port``.

    Binds with SO_REUSEADDR, as the servers themselves do, so a socket lingering
    in TIME_WAIT from a stopped server does not count as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def require_free(port: int, service: str, setting: str) -> None:
    """Raise a one-line UserError when ``port`` is taken by something else."""
    if port_in_use(port):
        raise UserError(
            f"port {port} needed by {service} is already in use by another process: "
            f"stop that process or pick another port with {setting}=<port>"
        )
