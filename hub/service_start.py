"""The hub's managed services started together, each given the time it needs to answer.

JupyterHub starts its managed services one after the other: it starts one, waits for it
to answer, then starts the next. hubforge's six take 20 to 25 s that way on two cores
(MLflow alone 9 to 18 s), and people cannot log in until the last has answered. Started
together, the hub is up when the slowest has answered.

JupyterHub 5.5 (the Zero to JupyterHub chart's hub) also gives a managed service ten
one-second tries to answer and then exits, where 6.x waits for the service's ``timeout``.

:func:`start_services_together` wraps the hub's ``start_service`` (in the hub's own
process: the hub's config calls it) so that its first call for a managed service with a
URL starts every such service of the hub's configuration, and each call then waits for its
own service as JupyterHub 6 does: until it answers HTTP, its process ends (the hub then
exits, as it would), or its ``timeout`` (the field where the hub knows it, ``timeout``
given here otherwise) is out. External services, and services added later through the
hub's API, go through the hub's own method.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Awaitable
from typing import Any

__all__ = ["start_services_together"]

#: Marks the hub's ``start_service`` once it is wrapped.
_WRAPPED = "_hubforge_together"
#: Where the wrapped method keeps, on the hub, the starts of the services it began together.
_STARTS = "_hubforge_service_starts"


def start_services_together(timeout: float) -> None:
    """Wrap ``JupyterHub.start_service`` (once): services start together, and a service
    that says no ``timeout`` (or a hub that knows no such field) gets ``timeout`` seconds."""
    from jupyterhub.app import JupyterHub

    if not getattr(JupyterHub.start_service, _WRAPPED, False):
        JupyterHub.start_service = _together(JupyterHub.start_service, timeout)


def _waited_for(service: Any) -> bool:
    """Whether the hub starts ``service`` and waits for it: a managed service with a URL."""
    return bool(service.managed and service.url)


def _together(start_service: Any, timeout: float) -> Any:
    @functools.wraps(start_service)
    async def together(app: Any, name: str, service: Any, ssl_context: Any = None) -> bool:
        if not _waited_for(service):
            return bool(await start_service(app, name, service, ssl_context))
        starts = _starts(app)
        started = starts.pop(name, None) or asyncio.ensure_future(_start(app, name, service))
        if not await started:
            return False
        wait = getattr(service, "timeout", None) or timeout
        return await _answers(app, name, service, _client_ssl(app, ssl_context), wait)

    setattr(together, _WRAPPED, True)
    return together


def _starts(app: Any) -> dict[str, Awaitable[bool]]:
    """The starts of every service the hub will wait for, begun on the first call."""
    starts: dict[str, Awaitable[bool]] | None = getattr(app, _STARTS, None)
    if starts is None:
        services = getattr(app, "_service_map", {})
        starts = {
            name: asyncio.ensure_future(_start(app, name, service))
            for name, service in services.items()
            if _waited_for(service)
        }
        setattr(app, _STARTS, starts)
    return starts


async def _start(app: Any, name: str, service: Any) -> bool:
    """Start the service's process, as JupyterHub's ``start_service`` does; whether it started."""
    app.log.info("Starting managed service %s at %s", name, service.url)
    try:
        await service.start()
    except Exception:  # what JupyterHub does: log it, say the service did not start
        app.log.critical("Failed to start service %s", name, exc_info=True)
        return False
    return True


def _client_ssl(app: Any, ssl_context: Any) -> Any:
    """The context the hub reaches its services with (None without internal SSL)."""
    if ssl_context is not None:
        return ssl_context
    from jupyterhub.utils import make_ssl_context

    return make_ssl_context(
        app.internal_ssl_key, app.internal_ssl_cert, cafile=app.internal_ssl_ca, purpose=ssl.Purpose.SERVER_AUTH
    )


async def _answers(app: Any, name: str, service: Any, ssl_context: Any, timeout: float) -> bool:
    """Whether the started service answers HTTP within ``timeout`` while its process lives."""
    from jupyterhub.objects import Server
    from jupyterhub.utils import AnyTimeoutError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await Server.from_orm(service.orm.server).wait_up(http=True, timeout=1, ssl_context=ssl_context)
        except AnyTimeoutError:
            status = await service.spawner.poll()
            if status is not None:
                app.log.critical("Service %s exited with status %s", name, status)
                return False
        else:
            app.log.info("Service %s answers at %s", name, service.url)
            return True
    app.log.critical("Service %s did not answer within %ss", name, timeout)
    return False
