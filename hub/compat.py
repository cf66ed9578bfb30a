"""What hubforge needs of JupyterHub that the Zero to JupyterHub chart's hub (5.5) lacks.

The chart release hubforge targets (4.4.0) runs JupyterHub 5.5; hubforge also runs on
6.x. JupyterHub 6.0 added two things the platform relies on:

- **A managed service's start timeout** (``timeout`` in a ``c.JupyterHub.services``
  entry). JupyterHub 5.x gives a managed service ten one-second tries to answer and
  then exits the hub, while MLflow's server takes 13 to 18 s to answer on two cores,
  warm or not. :func:`give_services_time` gives 5.x hubs the same wait 6.x hubs get
  from the field: the service's start, then tries to reach it until ``timeout``,
  ending early (and as 5.x would, exiting the hub) if the service's process ends.
- **PKCE in HubOAuth** (``generate_pkce_code_challenge``). The MLflow gate's browser
  login uses it where the hub offers it; a 5.x hub knows no PKCE, so the gate logs in
  with ``state`` alone there (:func:`pkce_challenge`).

Both look for the feature, not at the version number, so a hub that has it uses its own.
"""

from __future__ import annotations

import functools
import time
from typing import Any

__all__ = ["give_services_time", "pkce_challenge", "service_timeouts"]

#: Marks the hub's ``start_service`` once :func:`give_services_time` has wrapped it.
_WRAPPED = "_hubforge_waits"


def service_timeouts() -> bool:
    """Whether this JupyterHub lets a service say how long it takes to start (6.0 and later)."""
    from jupyterhub.services.service import Service

    return "timeout" in Service.class_trait_names()


def pkce_challenge(hub_auth: Any) -> tuple[str | None, dict[str, str]]:
    """A PKCE verifier and the authorize URL's parameters for it, from ``hub_auth``
    (a ``HubOAuth``); ``(None, {})`` where this JupyterHub has no PKCE."""
    generate = getattr(hub_auth, "generate_pkce_code_challenge", None)
    if generate is None:
        return None, {}
    verifier, challenge, method = generate()
    return verifier, {"code_challenge": challenge, "code_challenge_method": method}


def give_services_time(timeout: float) -> bool:
    """Let a JupyterHub without the services' ``timeout`` field wait ``timeout`` seconds
    for each managed service to answer; whether it had to (False on 6.0 and later)."""
    if service_timeouts():
        return False
    from jupyterhub.app import JupyterHub

    if not getattr(JupyterHub.start_service, _WRAPPED, False):
        JupyterHub.start_service = _waiting(JupyterHub.start_service, timeout)
    return True


def _waiting(start_service: Any, timeout: float) -> Any:
    """``JupyterHub.start_service``, waiting ``timeout`` for a managed service with a URL;
    any other service (external, or without a URL) as the hub's own method does it."""

    @functools.wraps(start_service)
    async def waiting(app: Any, name: str, service: Any, ssl_context: Any = None) -> bool:
        if not (service.managed and service.url):
            return bool(await start_service(app, name, service, ssl_context))
        app.log.info("Starting managed service %s at %s (waiting up to %ss)", name, service.url, timeout)
        try:
            await service.start()
        except Exception:  # what JupyterHub does: log it, say the service did not start
            app.log.critical("Failed to start service %s", name, exc_info=True)
            return False
        return await _answers(app, name, service, _ssl(app, ssl_context), timeout)

    setattr(waiting, _WRAPPED, True)
    return waiting


def _ssl(app: Any, ssl_context: Any) -> Any:
    """The context JupyterHub's ``start_service`` reaches services with."""
    if ssl_context is not None:
        return ssl_context
    import ssl

    from jupyterhub.utils import make_ssl_context

    return make_ssl_context(
        app.internal_ssl_key, app.internal_ssl_cert, cafile=app.internal_ssl_ca, purpose=ssl.Purpose.CLIENT_AUTH
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
            return True
    app.log.critical("Service %s did not answer within %ss", name, timeout)
    return False
