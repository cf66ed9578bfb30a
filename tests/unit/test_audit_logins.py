"""The hub records every login and failed login in its audit spool, whatever the authenticator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from oauthenticator.generic import GenericOAuthenticator

from hubforge.events import schema_registry
from hubforge.events.spool import open_spool, read_spool
from hubforge.hub.auth import LOGIN_SCHEMA, AuditedLogins, DemoAuthenticator, audited


def handler(ip: str) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(remote_ip=ip))


def test_logins_and_failed_logins_are_recorded_with_who_and_where_from(tmp_path: Path) -> None:
    folder = tmp_path / "events" / "hub"
    auth = DemoAuthenticator(password="s3cret", allowed_users={"alice"}, audit_spool_dir=str(folder))

    async def attempts() -> list[object]:
        return [
            await auth.get_authenticated_user(handler("10.0.0.7"), {"username": "alice", "password": "s3cret"}),
            await auth.get_authenticated_user(handler("10.6.6.6"), {"username": "alice", "password": "guess"}),
            await auth.get_authenticated_user(
                handler("10.6.6.6"), {"username": "eve\n[I] forged line", "password": ""}
            ),
        ]

    answers = asyncio.run(attempts())
    assert answers[0] is not None and answers[0]["name"] == "alice" and answers[1:] == [None, None]
    spool = open_spool(folder, "hub")
    assert spool is not None and spool.flush(10)
    records = list(read_spool(folder))
    summary = [(r["user"], r["action"], r["outcome"], r["origin"]["client_address"]) for r in records]
    assert summary == [
        ("alice", "login", "success", "10.0.0.7"),
        ("alice", "login_failed", "failure", "10.6.6.6"),
        ("eve\\n[I] forged line", "login_failed", "failure", "10.6.6.6"),  # no line injected
    ]
    for record in records:
        assert record["__schema__"] == LOGIN_SCHEMA and record["__emitter__"] == "hub"
        assert record["authenticator"] == "DemoAuthenticator" and record["origin"]["observer"] == "hub"
        schema_registry().get(LOGIN_SCHEMA).validate({k: v for k, v in record.items() if not k.startswith("__")})


def test_any_authenticator_class_can_be_audited() -> None:
    cls = audited(GenericOAuthenticator)
    assert issubclass(cls, AuditedLogins) and issubclass(cls, GenericOAuthenticator)
    assert cls.__name__ == "AuditedGenericOAuthenticator"
    assert audited(cls) is cls and audited(DemoAuthenticator) is DemoAuthenticator


def test_without_a_spool_folder_logins_work_and_nothing_is_written(tmp_path: Path) -> None:
    auth = DemoAuthenticator(password="s3cret", allowed_users={"alice"})
    user = asyncio.run(auth.get_authenticated_user(handler("10.0.0.7"), {"username": "alice", "password": "s3cret"}))
    assert user is not None and user["name"] == "alice"
    assert list(tmp_path.iterdir()) == []
