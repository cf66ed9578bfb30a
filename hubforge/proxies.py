"""Whose ``X-Forwarded-For`` a service believes: the platform's proxy's, and nobody else's.

The audit trail records where each request came from. Behind configurable-http-proxy a
service sees the proxy as its peer, and the proxy appends the address it saw to
``X-Forwarded-For``: the right-most entry is the client, every entry left of it is
whatever the client wrote. So a service takes the right-most entry, and only when its
peer is the proxy: anyone else who can reach the service's port (on Kubernetes, every
user pod reaches the hub pod's service ports) could write any address there.

On one machine the proxy is on loopback, which uvicorn (MLflow) and tornado already
trust; nothing is configured and :func:`from_env` gives None. On Kubernetes the proxy
is a pod whose address changes with every restart, so the render gives the services
``HUBFORGE_PROXY_PEERS``, the name of a headless Service over the proxy pods, whose DNS
answer is the proxy's current addresses. :class:`ProxyPeers` resolves it when made and
again in the background every ``refresh_s``; deciding on a request is a set lookup.
Between a proxy restart and the next refresh its requests are recorded with the
proxy's own address: less precise, never believing a stranger.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from .contract import PROXY_PEERS_ENV

__all__ = ["ProxyPeers", "client_address", "from_env", "resolve"]

log = logging.getLogger(__name__)

#: How often the proxy's addresses are looked up again.
REFRESH_S = 10.0

Resolver = Callable[[str], Iterable[str]]


def _address(text: str) -> str | None:
    """``text`` as one IP address in its normal spelling, or None when it is not one."""
    try:
        return str(ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]")))
    except ValueError:
        return None


def resolve(name: str) -> set[str]:
    """The addresses ``name`` resolves to (an address resolves to itself)."""
    if (literal := _address(name)) is not None:
        return {literal}
    found = {_address(str(info[4][0])) for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
    return {a for a in found if a is not None}


def client_address(peer: str | None, forwarded: str | None) -> str | None:
    """The client behind a trusted ``peer``: the right-most ``X-Forwarded-For`` entry when it
    is an address, else the peer itself."""
    if not forwarded:
        return peer
    last = _address(forwarded.rsplit(",", 1)[-1])
    return last if last is not None else peer


class ProxyPeers:
    """The proxy's addresses, from host ``names`` looked up now and every ``refresh_s``."""

    def __init__(self, names: Iterable[str], refresh_s: float = REFRESH_S, resolver: Resolver = resolve) -> None:
        self.names = tuple(names)
        self.refresh_s = refresh_s
        self._resolver = resolver
        self._addresses: frozenset[str] = frozenset()
        self._resolved_at = float("-inf")
        self._lock = threading.Lock()
        self._refreshing = False
        self._refresh()

    def __repr__(self) -> str:
        return f"<ProxyPeers {','.join(self.names)}: {sorted(self._addresses)}>"

    @property
    def addresses(self) -> frozenset[str]:
        """The addresses believed now."""
        return self._addresses

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` is the proxy (as of the last lookup)."""
        self._refresh_when_stale()
        return peer is not None and _address(peer) in self._addresses

    def client_address(self, peer: str | None, forwarded: str | None) -> str | None:
        """Where a request from ``peer`` with this ``X-Forwarded-For`` came from."""
        return client_address(peer, forwarded) if self.trusts(peer) else peer

    def _refresh_when_stale(self) -> None:
        if time.monotonic() - self._resolved_at < self.refresh_s:
            return
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, name="proxy-peers", daemon=True).start()

    def _refresh(self) -> None:
        found: set[str] = set()
        for name in self.names:
            try:
                found |= set(self._resolver(name))
            except OSError as exc:  # keep what was known: a DNS hiccup must not drop the proxy
                log.warning("The proxy's address %s cannot be looked up: %s", name, exc)
                found |= self._addresses
        self._addresses = frozenset(found)
        self._resolved_at = time.monotonic()
        self._refreshing = False


def from_env(environ: Mapping[str, str] = os.environ) -> ProxyPeers | None:
    """The peers ``HUBFORGE_PROXY_PEERS`` names, or None when it is unset (one machine)."""
    names = [name.strip() for name in environ.get(PROXY_PEERS_ENV, "").split(",") if name.strip()]
    return ProxyPeers(names) if names else None
