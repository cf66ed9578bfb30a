"""Personas as JupyterHub roles: valid custom scopes, the right permissions."""

from __future__ import annotations

import pytest
from jupyterhub import roles, scopes

from hubforge.hub.services import features_role, governance_role, persona_services, service_names
from hubforge.personas import CUSTOM_SCOPES, PERSONAS, hub_roles, persona_names


@pytest.fixture(autouse=True)
def _custom_scopes():
    scopes.define_custom_scopes({name: {"description": d} for name, d in CUSTOM_SCOPES.items()})
    yield
    for name in CUSTOM_SCOPES:
        scopes.scope_definitions.pop(name, None)


def test_custom_scopes_are_valid_jupyterhub_custom_scopes() -> None:
    for name in CUSTOM_SCOPES:
        assert scopes._custom_scope_pattern.match(name), name


def test_every_role_is_accepted_by_jupyterhub() -> None:
    for role in hub_roles({p: [p] for p in persona_names()}, persona_services()):
        roles._validate_role_name(role["name"])
        scopes._check_scopes_exist(role["scopes"], who_for=f"role {role['name']}")
        assert role["groups"] == [role["name"]]


def test_the_services_own_roles_are_accepted_by_jupyterhub() -> None:
    for role in (governance_role(service_names()), features_role(service_names())):
        roles._validate_role_name(role["name"])
        scopes._check_scopes_exist(role["scopes"], who_for=f"role {role['name']}")
    assert "custom:grants:read" in features_role(service_names())["scopes"]


@pytest.mark.parametrize(
    ("persona", "allowed", "denied"),
    [
        (
            "data-scientist",
            {"custom:experiments:write", "custom:requests:submit"},
            {"custom:deploy:staging", "custom:approve:production", "admin:users"},
        ),
        (
            "ml-engineer",
            {"custom:deploy:staging", "custom:registry:manage"},
            {"custom:approve:production", "custom:approve:data-access"},
        ),
        (
            "ml-lead",
            {"custom:approve:production", "custom:resources:manage", "list:users"},
            {"custom:approve:data-access", "custom:catalog:manage", "admin:users"},
        ),
        (
            "data-steward",
            {"custom:approve:data-access", "custom:catalog:manage"},
            {"custom:approve:production", "custom:deploy:staging"},
        ),
        ("platform-admin", set(CUSTOM_SCOPES) | {"admin:users", "admin:servers"}, set()),
    ],
)
def test_persona_permissions_follow_the_platform(persona: str, allowed: set[str], denied: set[str]) -> None:
    role = next(r for r in hub_roles({}, persona_services()) if r["name"] == persona)
    granted = set(role["scopes"])
    assert allowed <= granted
    assert not denied & granted
    assert {"self", "access:services!service=governance", "access:services!service=mlflow"} <= granted


def test_five_core_personas_are_known() -> None:
    assert {"data-scientist", "ml-engineer", "ml-lead", "data-steward", "platform-admin"} <= set(PERSONAS)
