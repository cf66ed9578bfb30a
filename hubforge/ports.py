"""Free TCP ports that no outgoing connection can take before they are bound.

A port found free with ``bind(0)`` comes from the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``), the same range every outgoing connection draws its local
port from. Between the pick and the moment a server binds it (a hub, a service, a person's
server importing for seconds), any connection on the machine, to PostgreSQL, Redis, MLflow or
a package index, may get that port as its local end, and the server then fails to start with
"address already in use". :func:`free_port` picks from outside that range instead, where only
another process choosing the same port at random could collide.
"""

from __future__ import annotations

import random
import socket
from contextlib import closing
from pathlib import Path

__all__ = ["ephemeral_range", "free_port"]

#: The lowest port handed out: the range below holds well-known and registered services
#: (PostgreSQL 5432, Redis 6379, the hub's 8000, 8080, 9090...).
FLOOR = 10_000
#: How many random ports are tried before falling back to the kernel's choice.
TRIES = 64
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_random = random.SystemRandom()


def ephemeral_range(path: Path | None = None) -> tuple[int, int]:
    """The kernel's ephemeral port range, both ends included (Linux's default where unknown)."""
    try:
        low, high = (int(part) for part in (path or _RANGE_FILE).read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _candidates(low: int, high: int) -> list[range]:
    """The stretches above :data:`FLOOR` outside ``low``-``high``."""
    stretches = [range(FLOOR, min(low, 65536)), range(max(high + 1, FLOOR), 65536)]
    return [stretch for stretch in stretches if len(stretch)]


def _bindable(host: str, port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` nobody holds right now, outside the ephemeral range. Where the
    whole range above :data:`FLOOR` is ephemeral (an unusual kernel setting), or every try is
    held, the kernel's own choice."""
    stretches = _candidates(*ephemeral_range())
    sizes = [len(stretch) for stretch in stretches]
    for _ in range(TRIES if stretches else 0):
        stretch = _random.choices(stretches, weights=sizes)[0]
        port = stretch[_random.randrange(len(stretch))]
        if _bindable(host, port):
            return port
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
