"""Authenticators: the demo authenticator and the claim -> persona mapping for OAuth.

The demo authenticator exists so that ``make up`` gives a working platform
with five personas on a laptop. It is refused (by the config validation and
again here) unless the config says ``demo: true`` and the hub binds to
loopback. Real deployments configure GenericOAuthenticator (or LDAP) in
platform.yaml; :func:`groups_from_claims` turns the identity provider's
claims into hub groups, and groups grant personas.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.login import LogoutHandler
from traitlets import HasTraits, Set, Unicode

from hubforge.events.spool import open_spool

__all__ = [
    "LOGIN_SCHEMA",
    "AuditedLogins",
    "AuditedLogout",
    "DemoAuthenticator",
    "audited",
    "audited_logout",
    "claim_values",
    "groups_from_claims",
    "oauth_groups_key",
]

LOGIN_SCHEMA = "https://events.hubforge.dev/hub/authentication/v1"


class AuditedLogins(HasTraits):
    """Records every login and failed login, whatever the authenticator, in the hub's spool.

    Mixed in before an authenticator class (:func:`audited`): JupyterHub's login and
    OAuth callback handlers both go through ``get_authenticated_user``, so one
    override sees the form, OAuth and LDAP alike. Who is the name the authenticator
    accepted, or for a failure the name that was tried; where from is the request's
    client address (behind the proxy: ``X-Forwarded-For``, which JupyterHub trusts).
    """

    audit_spool_dir = Unicode(
        "",
        config=True,
        help="Folder of the hub's audit event spool (the governance service collects it); "
        "empty: logins are not recorded.",
    )

    def get_handlers(self, app: Any) -> list[tuple[Any, ...]]:
        """The authenticator's handlers, with a logout handler that notes who logs out, and
        the hub's access-changing API handlers failing closed (when the audit spool is on)."""
        from .requests_audit import access_handlers

        handlers = audited_logout(list(super().get_handlers(app)))  # type: ignore[misc]
        return [*handlers, *access_handlers()] if self.audit_spool_dir else handlers

    async def get_authenticated_user(self, handler: Any, data: Any) -> Any:
        """The authenticator's answer, recorded as a login or a failed login."""
        user = await super().get_authenticated_user(handler, data)  # type: ignore[misc]
        spool = open_spool(self.audit_spool_dir, "hub") if self.audit_spool_dir else None
        if spool is not None:
            tried = (data or {}).get("username", "") if isinstance(data, dict) else ""
            name = str(user["name"]) if user else str(tried or "")
            request = getattr(handler, "request", None)
            spool.emit(
                LOGIN_SCHEMA,
                {
                    "user": name,
                    "action": "login" if user else "login_failed",
                    "resource": {"type": "user", "id": name},
                    "outcome": "success" if user else "failure",
                    "origin": {"observer": "hub", "client_address": str(getattr(request, "remote_ip", "") or "")},
                    "authenticator": next(
                        c.__name__
                        for c in type(self).__mro__
                        if c is not AuditedLogins and not c.__name__.startswith("Audited")
                    ),
                },
            )
        return user


class AuditedLogout:
    """Mixed into the logout handler: keeps who logs out for the request's audit event
    (JupyterHub forgets the user before the page is rendered and the request logged)."""

    logged_out: str = ""

    async def handle_logout(self) -> None:
        """Note who is logging out, then the handler's own custom action."""
        user = getattr(self, "current_user", None)
        self.logged_out = str(getattr(user, "name", "") or "")
        await super().handle_logout()  # type: ignore[misc]


def audited_logout(handlers: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """An authenticator's ``handlers`` with its logout handler (or JupyterHub's) noting who
    logs out (:class:`AuditedLogout`)."""
    out: list[tuple[Any, ...]] = []
    found = False
    for path, handler, *rest in handlers:
        if path.rstrip("/").endswith("/logout") and isinstance(handler, type):
            found = True
            if not issubclass(handler, AuditedLogout):
                handler = type(f"Audited{handler.__name__}", (AuditedLogout, handler), {})
        out.append((path, handler, *rest))
    if not found:
        out.append(("/logout", type("AuditedLogoutHandler", (AuditedLogout, LogoutHandler), {})))
    return out


def audited(authenticator: type[Authenticator]) -> type[Authenticator]:
    """``authenticator`` with its logins recorded (:class:`AuditedLogins` mixed in first)."""
    if issubclass(authenticator, AuditedLogins):
        return authenticator
    return type(f"Audited{authenticator.__name__}", (AuditedLogins, authenticator), {})


class DemoAuthenticator(AuditedLogins, Authenticator):
    """Every configured user logs in with one shared demo password.

    Only for demonstrations on loopback: the password is shared, so anyone who
    knows it can be anyone. ``allowed_users`` limits who may log in.
    """

    admin_groups = Set(
        config=True,
        help="auth.admin_groups (OAuthenticator's and LDAPAuthenticator's setting): here the platform "
        "makes the configured users of those groups admins by name (admin_users).",
    )

    password = Unicode(
        "",
        config=True,
        help="The shared demo password; set by `hubforge up` from HUBFORGE_DEMO_PASSWORD "
        "or a generated one. An empty password refuses every login.",
    )

    async def authenticate(self, handler: Any, data: dict[str, str]) -> str | None:
        """Accept a configured user whose password matches, in constant time."""
        username = (data or {}).get("username", "")
        given = (data or {}).get("password", "")
        if not self.password or not username:
            return None
        if not hmac.compare_digest(given.encode(), self.password.encode()):
            self.log.warning("Demo login refused for %s: wrong password", username)
            return None
        return username


def claim_values(userdata: dict[str, Any], claim: str) -> list[str]:
    """The string values at ``claim`` (a dotted path) in the identity provider's user data.

    A missing claim is no values; a single string is one value.
    """
    node: Any = userdata
    for part in claim.split("."):
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [v for v in node if isinstance(v, str)]
    return []


def groups_from_claims(
    values: Iterable[str],
    persona_map: dict[str, list[str]],
    persona_groups: dict[str, list[str]],
) -> list[str]:
    """Hub groups for a user whose identity-provider claim holds ``values``.

    With a ``persona_map`` (claim value -> personas), each persona contributes
    the first hub group that grants it; without one, claim values are taken
    as hub group names. The result is sorted and has no duplicates.
    """
    if not persona_map:
        return sorted(set(values))
    groups = set()
    for value in values:
        for persona in persona_map.get(value, []):
            granted = persona_groups.get(persona) or [persona]
            groups.add(granted[0])
    return sorted(groups)


def oauth_groups_key(
    claim: str, persona_map: dict[str, list[str]], persona_groups: dict[str, list[str]]
) -> Callable[[dict[str, Any]], list[str]]:
    """A callable for ``GenericOAuthenticator.auth_state_groups_key``.

    oauthenticator calls it with the auth state; the user data is under
    ``oauth_user``.
    """

    def groups(auth_state: dict[str, Any]) -> list[str]:
        userdata = (auth_state or {}).get("oauth_user") or {}
        return groups_from_claims(claim_values(userdata, claim), persona_map, persona_groups)

    return groups
