"""What hubforge needs of JupyterHub that the Zero to JupyterHub chart's hub (5.5) lacks.

The chart release hubforge targets (4.4.0) runs JupyterHub 5.5; hubforge also runs on
6.x. JupyterHub 6.0 added two things the platform relies on:

- **A managed service's start timeout** (``timeout`` in a ``c.JupyterHub.services``
  entry): 5.x gives a managed service ten one-second tries to answer and then exits the
  hub, while MLflow's server takes 9 to 18 s to answer on two cores, warm or not.
  :mod:`hubforge.hub.service_start` waits for every service as 6.x does, on both;
  :func:`service_timeouts` says whether the field may be given.
- **PKCE in HubOAuth** (``generate_pkce_code_challenge``): the MLflow gate's browser login
  uses it where the hub offers it; a 5.x hub knows no PKCE, so the gate logs in with
  ``state`` alone there (:func:`pkce_challenge`).

Both look for the feature, not at the version number, so a hub that has it uses its own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pkce_challenge", "service_timeouts"]


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
