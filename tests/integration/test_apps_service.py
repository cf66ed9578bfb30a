"""The apps service as people use it: alice publishes from her server's command line, frank
(an analyst) finds the app in his gallery, bob (not shared with) cannot tell it exists.

Real tornado service, real store (SQLite and PostgreSQL), the tests' fake hub.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nbformat
import pytest

from harness.apps import RunningApps, notebook
from hubforge.cli import main as hubforge

PNG = base64.b64encode(
    base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
).decode()


def cli(running: RunningApps, token: str, user: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """``hubforge apps ...`` as run in ``user``'s server (its token and the hub's URL in the environment)."""
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("JUPYTERHUB_USER", user)
    monkeypatch.setenv("HUBFORGE_APPS_URL", running.url + "/services/apps")
    return hubforge(["apps", *args])


def test_alice_publishes_versions_rolls_back_and_unpublishes(
    running_apps: RunningApps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "churn.ipynb"
    path.write_text(json.dumps(notebook()))
    run = lambda *args: cli(running_apps, "alice-token", "alice", *args, monkeypatch=monkeypatch)  # noqa: E731
    assert run("publish", str(path), "--name", "churn", "--description", "Churn by region", "--share", "analyst") == 0
    assert "published alice/churn version 1" in capsys.readouterr().out
    nb = notebook(title="Churn by region and month", params="region = 'us'\nmonths = 6")
    path.write_text(json.dumps(nb))
    assert run("publish", str(path), "--name", "churn") == 0
    assert "version 2" in capsys.readouterr().out
    with running_apps.client("alice-token") as alice:
        app = alice.get("api/apps/alice/churn").json()
        # A republish keeps the description and sharing it was not given; the title stays the app's.
        assert (app["version"], app["description"], app["shared_with"]) == (2, "Churn by region", ["group:analyst"])
        assert [p["name"] for p in app["parameters"]] == ["region", "months"]
        assert [p["default"] for p in app["parameters"]] == ["'us'", "6"]
        frozen = alice.get("api/apps/alice/churn/notebook")
        assert frozen.status_code == 200 and "months = 6" in frozen.text
    assert run("versions", "churn") == 0
    assert re.findall(r"^v(\d)", capsys.readouterr().out, re.M) == ["2", "1"]
    assert run("rollback", "churn", "--version", "1") == 0
    assert "now runs version 1" in capsys.readouterr().out
    with running_apps.client("frank-token") as frank:
        assert "threshold = 0.5" in frank.get("api/apps/alice/churn/notebook").text
    assert run("rollback", "churn", "--version", "7") == 2
    assert "has no version 7" in capsys.readouterr().err
    assert run("unpublish", "churn") == 0
    with running_apps.client("frank-token") as frank:
        assert frank.get("api/apps/alice/churn").status_code == 404
        assert [a["name"] for a in frank.get("api/apps").json()["apps"]] == []
    assert run("list", "--mine") == 0
    assert "alice/churn  unpublished" in capsys.readouterr().out
    assert run("rollback", "churn", "--version", "2") == 0  # back in the gallery, at version 2
    # Every change is in the audit trail, as alice's.
    changes = [
        (e["action"], e.get("version"))
        for e in running_apps.events(user="alice")
        if e["resource"]["id"] == "alice/churn"
    ]
    assert changes == [("publish", 1), ("publish", 2), ("rollback", 1), ("unpublish", None), ("rollback", 2)]


def test_only_the_people_shared_with_see_an_app(running_apps: RunningApps) -> None:
    with running_apps.client("alice-token") as alice:
        shared = alice.post("api/apps", json={"name": "sales", "notebook": notebook("Sales"), "share": ["analyst"]})
        assert shared.status_code == 201, shared.text
        assert shared.headers["Location"] == "/services/apps/api/apps/alice/sales"
        private = alice.post("api/apps", json={"name": "draft", "notebook": notebook("Draft")})
        assert private.status_code == 201
        just_bob = alice.post(
            "api/apps", json={"name": "for-bob", "notebook": notebook("Bob's"), "share": ["user:bob"]}
        )
        assert just_bob.status_code == 201
    with running_apps.client("frank-token") as frank:
        names = [a["name"] for a in frank.get("api/apps").json()["apps"]]
        assert "sales" in names and "draft" not in names and "for-bob" not in names
        seen = frank.get("api/apps/alice/sales").json()
        assert "shared_with" not in seen  # whom else it is shared with is the owner's business
        missing, hidden = frank.get("api/apps/alice/nothing-here"), frank.get("api/apps/alice/draft")
        # An app shared with nobody answers exactly as one that does not exist.
        assert (
            (missing.status_code, missing.json())
            == (hidden.status_code, hidden.json())
            == (
                404,
                {"status": 404, "message": "no such app"},
            )
        )
        for path in ("notebook", "thumbnail", "versions"):
            assert frank.get(f"api/apps/alice/draft/{path}").status_code == 404
        assert frank.get("open/alice/draft", follow_redirects=False).status_code == 404
        opened = frank.get("open/alice/sales", follow_redirects=False)
        assert (opened.status_code, opened.headers["Location"]) == (302, "/user/frank/hubforge/apps/alice/sales")
        # Seen is not owned: no changes, no versions.
        assert frank.patch("api/apps/alice/sales", json={"share": ["user:frank"]}).status_code == 403
        assert frank.post("api/apps/alice/sales/rollback", json={"version": 1}).status_code == 403
        assert frank.get("api/apps/alice/sales/versions").status_code == 403
        assert frank.delete("api/apps/alice/sales").status_code == 403
        # An analyst uses apps; publishing one needs custom:experiments:write.
        refused = frank.post("api/apps", json={"name": "mine", "notebook": notebook()})
        assert refused.status_code == 403 and "custom:experiments:write" in refused.json()["message"]
    with running_apps.client("bob-token") as bob:
        names = [a["name"] for a in bob.get("api/apps").json()["apps"]]
        assert "for-bob" in names and "sales" not in names
    with running_apps.client("mallory-token") as mallory:
        assert mallory.get("api/apps").status_code == 403  # not let into the service at all
    with running_apps.client("erin-token") as erin:  # a platform admin may take any app down
        assert erin.delete("api/apps/alice/for-bob").status_code == 204
        assert erin.delete("api/apps/alice/no-such").status_code == 404
    with running_apps.client("bob-token") as bob:
        assert bob.get("api/apps/alice/for-bob").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "notebook": {"nbformat": 3, "cells": []}}, "nbformat is 3"),
        ({"name": "x", "notebook": {**notebook(), "cells": [{"cell_type": "code"}]}}, "not valid nbformat 4"),
        ({"name": "x", "notebook": notebook(kernel=None)}, "names no kernel"),
        ({"name": "x", "notebook": notebook(kernel="julia-1.10")}, "kernel 'julia-1.10' does not exist here"),
        ({"name": "x", "notebook": notebook(params="def (")}, None),
        ({"name": "Bad Name", "notebook": notebook()}, "name"),
        ({"name": "x", "notebook": notebook(), "share": ["robot:r2"]}, "the kind must be group or user"),
        ({"name": "x", "notebook": notebook(), "title": "a\ud800"}, None),
        ({"name": "x"}, "notebook"),
    ],
)
def test_bad_notebooks_are_refused_with_one_line(running_apps: RunningApps, body: dict, message: str | None) -> None:
    with running_apps.client("alice-token") as alice:
        resp = alice.post("api/apps", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    if message is None and resp.status_code == 201:
        return  # papermill reads no parameters from broken source, and the notebook is fine otherwise
    assert resp.status_code == 400, resp.text
    line = resp.json()["message"]
    assert "\n" not in line and "Traceback" not in line
    if message:
        assert message in line


def test_the_gallery_shows_cards_for_the_viewer_escaped_and_searchable(running_apps: RunningApps) -> None:
    nb = notebook('<script>alert("x")</script> Forecast')
    nb["cells"][2]["outputs"] = [{"output_type": "display_data", "data": {"image/png": PNG}, "metadata": {}}]
    with running_apps.client("alice-token") as alice:
        body = {"name": "forecast", "notebook": nb, "description": "Demand <b>forecast</b>", "share": ["analyst"]}
        assert alice.post("api/apps", json=body).status_code == 201
        svg = notebook("Inventory")
        svg["cells"][2]["outputs"] = [
            {
                "output_type": "display_data",
                "data": {"image/svg+xml": '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'},
                "metadata": {},
            }
        ]
        assert (
            alice.post("api/apps", json={"name": "inventory", "notebook": svg, "share": ["analyst"]}).status_code == 201
        )
    with running_apps.client("frank-token") as frank:
        page = frank.get("")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "script-src" not in page.headers["Content-Security-Policy"]
        assert "<script>" not in page.text and "&lt;script&gt;" in page.text
        assert 'data-app="alice/forecast"' in page.text and 'data-app="alice/inventory"' in page.text
        assert "by alice · version 1" in page.text
        found = frank.get("", params={"q": "demand"}).text
        assert 'data-app="alice/forecast"' in found and 'data-app="alice/inventory"' not in found
        assert "No app matches" in frank.get("", params={"q": "nothing-like-it"}).text
        png = frank.get("api/apps/alice/forecast/thumbnail")
        assert (png.headers["Content-Type"], png.content) == ("image/png", base64.b64decode(PNG))
        image = frank.get("api/apps/alice/inventory/thumbnail")
        assert image.headers["Content-Type"] == "image/svg+xml"
        assert "sandbox" in image.headers["Content-Security-Policy"]  # its script never runs, even opened
    with running_apps.client("alice-token") as alice:
        assert alice.post("api/apps", json={"name": "plain", "notebook": notebook("Plain")}).status_code == 201
        drawn = alice.get("api/apps/alice/plain/thumbnail")  # no image in that notebook: a card drawn for it
        assert drawn.headers["Content-Type"] == "image/svg+xml" and ">P</text>" in drawn.text
    with running_apps.client("bob-token") as bob:
        assert 'data-app="alice/forecast"' not in bob.get("").text


def test_a_browser_without_a_session_goes_to_the_hub_login(running_apps: RunningApps) -> None:
    with running_apps.client() as anonymous:
        page = anonymous.get("", follow_redirects=False)
        assert page.status_code == 302 and "/hub/api/oauth2/authorize" in page.headers["Location"]
        assert anonymous.get("api/apps").status_code == 401


def test_the_api_is_in_its_openapi_document(running_apps: RunningApps) -> None:
    with running_apps.client() as anonymous:
        spec = anonymous.get("api/openapi.json").json()
    assert {"/api/apps", "/api/apps/{owner}/{name}", "/api/apps/{owner}/{name}/rollback"} <= set(spec["paths"])
    assert set(spec["paths"]["/api/apps"]) == {"get", "post"}


def test_a_frozen_copy_does_not_follow_the_file(running_apps: RunningApps, tmp_path: Path) -> None:
    nb = notebook("Frozen")
    with running_apps.client("alice-token") as alice:
        assert alice.post("api/apps", json={"name": "frozen", "notebook": nb}).status_code == 201
        nb["cells"][1]["source"] = "region = 'changed'"
        served = nbformat.reads(alice.get("api/apps/alice/frozen/notebook").text, as_version=4)
    assert served.cells[1].source == "region = 'eu'\nthreshold = 0.5"
