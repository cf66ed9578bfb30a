"""The apps service's pure parts: names, shares, the drawn thumbnail, the gallery page,
where analysts land, and what an apps-only tier's servers are started with."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from hubforge.catalog import APPS_INTERFACE_ARGS, interface_args, load_catalog
from hubforge.config import load_config
from hubforge.errors import Invalid
from hubforge.hub.apps.app import drawn_card, gallery_html
from hubforge.hub.apps.store import AppRecord, check_name, parse_shares
from hubforge.hub.hubconfig import analysts_land_on


def test_shares_name_groups_or_people_and_a_bare_name_is_a_group() -> None:
    assert parse_shares(["analyst", "user:frank", "group:analyst", " sales "]) == (
        "group:analyst",
        "group:sales",
        "user:frank",
    )
    for bad, why in [
        ("robot:r2", "the kind must be group or user"),
        ("user:", "1 to 255 printable"),
        ("group:a\nb", "1 to 255 printable"),
        ("", "each share is a text"),
    ]:
        with pytest.raises(Invalid, match=why):
            parse_shares([bad])
    with pytest.raises(Invalid, match="at most 100"):
        parse_shares([f"user:u{i}" for i in range(101)])


@pytest.mark.parametrize("name", ["churn", "a", "sales-2026", "x" * 64])
def test_app_names_that_are_fine(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Churn", "-a", "a-", "a b", "../x", "x" * 65, "é", 3, None])
def test_app_names_that_are_refused(name: object) -> None:
    with pytest.raises(Invalid, match="lower-case letters, digits and dashes"):
        check_name(name)


def record(title: str, description: str = "", owner: str = "alice") -> AppRecord:
    when = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    return AppRecord(owner, "churn", title, description, when, when, None, ())


def test_the_drawn_card_and_the_gallery_escape_what_people_wrote() -> None:
    evil = '<script>alert("x")</script>'
    assert "<script>" not in drawn_card(record(evil)) and "&lt;" in drawn_card(record(evil))
    page = gallery_html("/services/apps/", "frank", [record(evil, evil, owner='a"b')], 'q"><script>')
    assert "<script>" not in page
    assert 'data-app="a&quot;b/churn"' in page and "/services/apps/open/a%22b/churn" in page
    assert "No app is shared with you yet." in gallery_html("/services/apps/", "frank", [], "")


def test_analysts_land_on_the_gallery_and_everybody_else_on_their_server() -> None:
    land = analysts_land_on(load_config(environ={}).group_personas(), "/services/apps/")

    def handler(*groups: str) -> SimpleNamespace:
        return SimpleNamespace(current_user=SimpleNamespace(groups=[SimpleNamespace(name=g) for g in groups]))

    assert land(handler("analyst")) == "/services/apps/"
    assert land(handler("analyst", "data-scientist")) == ""  # works in notebooks too
    assert land(handler("data-scientist")) == ""
    assert land(handler()) == ""
    assert land(SimpleNamespace(current_user=None)) == ""


def test_an_apps_tier_starts_voila_only_servers() -> None:
    tiers = {tier.slug: tier for tier in load_catalog(load_config(environ={})).tiers}
    assert interface_args(tiers["interactive"]) == []
    args = interface_args(tiers["apps"])
    assert args == list(APPS_INTERFACE_ARGS)
    assert "--ServerApp.jpserver_extensions=jupyterlab=False" in args
    assert "--ServerApp.terminals_enabled=False" in args
    assert any(arg.endswith("ReadOnlyContentsManager") for arg in args)
