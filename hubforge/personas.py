"""The personas of the platform and what each may do.

A persona is a JupyterHub role. Platform permissions that JupyterHub does
not know (deploying, approving, managing the catalog) are ``custom:`` scopes
that every hubforge component checks by name; hub permissions are ordinary
JupyterHub scopes. Groups map to personas in the platform config, and a user
may hold several personas through several groups.

Pure data and pure functions: nothing here talks to a hub.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "CUSTOM_SCOPES",
    "PERSONAS",
    "Persona",
    "hub_roles",
    "persona_names",
    "service_access_scopes",
]

#: Every platform permission, as a JupyterHub custom scope with its description.
CUSTOM_SCOPES: dict[str, str] = {
    "custom:experiments:write": "Train experiments and log runs to MLflow.",
    "custom:models:read": "View one's own and one's group's models.",
    "custom:datasets:read": "Read the datasets one was granted.",
    "custom:requests:submit": "Submit deployment and data-access requests.",
    "custom:deploy:staging": "Deploy models to staging.",
    "custom:registry:manage": "Manage the model registry (versions, stages, aliases).",
    "custom:approve:production": "Approve or reject production deployments.",
    "custom:resources:manage": "Manage team resources: quotas and the team's tiers.",
    "custom:approve:data-access": "Approve or reject data-access requests.",
    "custom:catalog:manage": "Manage the data catalog.",
    "custom:audit:read": "Oversight: read everyone's runs, models and approval requests.",
    "custom:audit-trail:read": "Read the platform's audit trail (everyone's events) and its compliance reports.",
    "custom:grants:read": (
        "Check anyone's active data-access grants (the features service does, before serving restricted data)."
    ),
    "custom:policies:manage": "Manage governance policies.",
    "custom:apps:use": "Use published no-code (Voila) apps.",
    "custom:schedules:run": "Run parameterised notebooks on a schedule.",
}

#: What the platform's services may ask the hub: who a user is, their groups and roles, and which
#: servers the hub runs for them on which tier (MLflow checks the run tags that say so).
SERVICE_ROLE_SCOPES = ("read:users:name", "read:users:groups", "read:roles:users", "read:servers")

#: What a notebook server's own hub token carries (JupyterHub keeps the subset the
#: person holds): MLflow decides on the custom scopes what the server may log or read.
SERVER_TOKEN_SCOPES = (
    "users:activity!user",
    "access:servers!server",
    "access:services!service=mlflow",
    "access:services!service=governance",
    "access:services!service=features",
    "access:services!service=apps",
    "custom:requests:submit",
    "custom:experiments:write",
    "custom:models:read",
    "custom:registry:manage",
    "custom:audit:read",
)


#: Hub services every persona may reach; the service checks finer scopes itself.
def service_access_scopes(services: Iterable[str]) -> list[str]:
    """The ``access:services`` scopes of ``services`` (hubforge.hub.services lists them)."""
    return [f"access:services!service={name}" for name in services]


@dataclass(frozen=True)
class Persona:
    """One persona: a JupyterHub role with hub and custom scopes."""

    name: str
    description: str
    custom_scopes: tuple[str, ...]
    hub_scopes: tuple[str, ...] = field(default=())
    #: Whether the persona works in a notebook server of its own.
    notebooks: bool = True


_SCIENTIST = (
    "custom:experiments:write",
    "custom:models:read",
    "custom:datasets:read",
    "custom:requests:submit",
)
_ENGINEER = (*_SCIENTIST, "custom:deploy:staging", "custom:registry:manage")
_TEAM_OVERSIGHT = ("list:users", "read:users", "read:servers", "list:groups", "read:groups")

PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona(
            "data-scientist",
            "Trains experiments in JupyterLab; sees own and own group's models.",
            _SCIENTIST,
        ),
        Persona(
            "ml-engineer",
            "Everything a data scientist may, plus staging deploys and the model registry.",
            _ENGINEER,
        ),
        Persona(
            "ml-lead",
            "Approves production deployments and manages the team's resources.",
            (*_ENGINEER, "custom:approve:production", "custom:resources:manage", "custom:audit:read"),
            _TEAM_OVERSIGHT,
        ),
        Persona(
            "data-steward",
            "Approves data-access requests and manages the data catalog.",
            (
                "custom:datasets:read",
                "custom:requests:submit",
                "custom:approve:data-access",
                "custom:catalog:manage",
                "custom:audit:read",
                "custom:audit-trail:read",
            ),
        ),
        Persona(
            "platform-admin",
            "Full access: the hub, its users and servers, and every platform permission.",
            tuple(CUSTOM_SCOPES),
            (
                "admin:users",
                "admin:servers",
                "admin:groups",
                "admin-ui",
                "tokens",
                "proxy",
                "shutdown",
                "read:services",
                "read:hub",
                "access:servers",
            ),
        ),
        Persona(
            "analyst",
            "Uses published no-code (Voila) apps; no notebooks of their own.",
            ("custom:apps:use", "custom:models:read"),
            notebooks=False,
        ),
        Persona(
            "scheduler",
            "Runs parameterised notebooks on a schedule as the user who scheduled them.",
            ("custom:schedules:run", "custom:experiments:write"),
        ),
    )
}


def persona_names() -> list[str]:
    """The names of every known persona, in declaration order."""
    return list(PERSONAS)


def hub_roles(persona_groups: dict[str, list[str]], services: Iterable[str]) -> list[dict]:
    """JupyterHub ``load_roles`` entries, one role per persona.

    ``persona_groups`` maps a persona name to the hub groups whose members
    hold it. Every role carries ``self`` (a user's own server and tokens),
    access to ``services`` (those of the platform's services every persona may
    use), and the persona's scopes.
    """
    access = service_access_scopes(services)
    roles = []
    for name, persona in PERSONAS.items():
        # Notebook access for analysts is refused by the spawner, not here:
        # every hub user needs ``self`` to reach their own token and profile.
        scopes = ["self", *access, *persona.hub_scopes, *persona.custom_scopes]
        roles.append(
            {
                "name": name,
                "description": persona.description,
                "scopes": scopes,
                "groups": list(persona_groups.get(name, [])),
            }
        )
    return roles
