"""The demo authenticator and the identity-provider claim -> persona mapping."""

from __future__ import annotations

import asyncio

import pytest

from hubforge.hub.auth import DemoAuthenticator, claim_values, groups_from_claims, oauth_groups_key


def login(auth: DemoAuthenticator, username: str, password: str) -> str | None:
    return asyncio.run(auth.authenticate(None, {"username": username, "password": password}))


def test_demo_authenticator_checks_the_shared_password() -> None:
    auth = DemoAuthenticator(password="s3cret")
    assert login(auth, "alice", "s3cret") == "alice"
    assert login(auth, "alice", "wrong") is None
    assert login(auth, "", "s3cret") is None


def test_demo_authenticator_without_password_refuses_everyone() -> None:
    assert login(DemoAuthenticator(password=""), "alice", "") is None


@pytest.mark.parametrize(
    ("userdata", "claim", "expected"),
    [
        ({"groups": ["a", "b", 3]}, "groups", ["a", "b"]),
        ({"realm_access": {"roles": ["ds"]}}, "realm_access.roles", ["ds"]),
        ({"role": "lead"}, "role", ["lead"]),
        ({"groups": {"not": "a list"}}, "groups", []),
        ({}, "groups", []),
    ],
)
def test_claim_values(userdata: dict, claim: str, expected: list[str]) -> None:
    assert claim_values(userdata, claim) == expected


def test_claims_map_to_persona_groups() -> None:
    persona_map = {"ml-team": ["data-scientist"], "ml-leads": ["ml-lead", "data-scientist"]}
    persona_groups = {"data-scientist": ["ds-team", "other"], "ml-lead": ["ml-lead"]}
    assert groups_from_claims(["ml-leads", "unknown"], persona_map, persona_groups) == ["ds-team", "ml-lead"]
    assert groups_from_claims(["x", "y", "x"], {}, persona_groups) == ["x", "y"]


def test_oauth_groups_key_reads_auth_state() -> None:
    key = oauth_groups_key("groups", {"ml-team": ["data-scientist"]}, {"data-scientist": ["data-scientist"]})
    assert key({"oauth_user": {"groups": ["ml-team"]}}) == ["data-scientist"]
    assert key({}) == []
